"""The shared store's tables. Times are timezone-aware UTC everywhere (naive UTC on SQLite)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy import text as sql_text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite has no 64-bit identity type of its own; INTEGER PRIMARY KEY is its rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; always hands back an aware datetime, also from SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use aware UTC times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class AppSetting(Base):
    """Small key/value facts the service keeps for itself (the generated secret key)."""

    __tablename__ = "app_settings"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Agent(Base):
    __tablename__ = "agents"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))  # admin | agent
    language: Mapped[str] = mapped_column(String(8), default="en")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    # Bumped on password change, deactivation or "log out everywhere": desk session cookies
    # carry the epoch they were issued under, so older cookies stop working at once.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)


class EndedSession(Base):
    """A desk session its agent logged out of. The cookie is signed, not stored, so logging out
    on one device is remembered here until the cookie would have expired anyway."""

    __tablename__ = "ended_sessions"
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime] = mapped_column(index=True)


class LoginAttempt(Base):
    """Failed desk logins, counted per account and per address to throttle guessing."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_username", "username", "at"),
        Index("ix_login_attempts_address", "address", "at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]


class CannedReply(Base):
    """A reply the team reuses; `{customer}`, `{ticket}`, `{agent}`… are filled in when used."""

    __tablename__ = "canned_replies"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    language: Mapped[str | None] = mapped_column(String(8))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class SavedView(Base):
    """A named ticket-list filter; `agent_id` NULL means shared with the whole team."""

    __tablename__ = "saved_views"
    __table_args__ = (UniqueConstraint("agent_id", "name"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    query: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime]


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    # Only a SHA-256 of the token is kept: a leaked database does not leak working tokens.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(40), index=True)
    email: Mapped[str | None] = mapped_column(String(254), index=True)
    language: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime]


class ChannelIdentity(Base):
    """Who a customer is on one channel (a Telegram chat, a web chat visitor, an X account)."""

    __tablename__ = "channel_identities"
    __table_args__ = (UniqueConstraint("channel", "external_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(128))
    display_name: Mapped[str | None] = mapped_column(String(200))
    # False once the platform said the customer cannot be reached (blocked bot, deleted account).
    reachable: Mapped[bool] = mapped_column(Boolean, default=True)
    unreachable_reason: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]


class Conversation(Base):
    """Dialogue state, kept in the database so any bot process can continue it."""

    __tablename__ = "conversations"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("channel_identities.id"), unique=True)
    step: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    language: Mapped[str | None] = mapped_column(String(8))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime]
    __mapper_args__ = {"version_id_col": version}


class Ticket(Base):
    """The number a customer sees is `CL-{id}`: ids come from an autoincrement that never reuses."""

    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_urgency", "priority", "resolution_due", "id"),
        Index("ix_tickets_status_urgency", "status", "priority", "resolution_due", "id"),
        # "Mine" and "unassigned", most urgent first: one index range per status (0005).
        Index("ix_tickets_assignee_urgency", "assignee_id", "status", "priority",
              "resolution_due", "id"),
        Index("ix_tickets_created_at", "created_at"),
        Index("ix_tickets_merged_into", "merged_into_id"),
        {"sqlite_autoincrement": True},
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # complaint | suggestion | praise | question
    status: Mapped[str] = mapped_column(String(20))
    priority: Mapped[str] = mapped_column(String(2))
    category: Mapped[str | None] = mapped_column(String(32), index=True)
    channel: Mapped[str] = mapped_column(String(16), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("channel_identities.id"))
    subject: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    order_number: Mapped[str | None] = mapped_column(String(64))
    store: Mapped[str | None] = mapped_column(String(200))
    language: Mapped[str | None] = mapped_column(String(8))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    needs_human: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    first_response_due: Mapped[datetime]
    resolution_due: Mapped[datetime]
    first_response_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    # While waiting_customer the SLA clock stops; on leaving, the deadlines move by the pause.
    paused_at: Mapped[datetime | None]
    first_response_breached_at: Mapped[datetime | None]
    resolution_breached_at: Mapped[datetime | None]
    reminded_at: Mapped[datetime | None]
    escalated_at: Mapped[datetime | None]
    csat: Mapped[int | None] = mapped_column(Integer)
    # Set by callers that may retry a create (a chat confirmation, an API Idempotency-Key):
    # the same key always yields the same ticket.
    intake_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    # Set when an agent merged this ticket into another of the same customer (then closed).
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}


class TicketEvent(Base):
    __tablename__ = "ticket_events"
    __table_args__ = (Index("ix_ticket_events_ticket", "ticket_id", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    type: Mapped[str] = mapped_column(String(32), index=True)
    from_value: Mapped[str | None] = mapped_column(String(64))
    to_value: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Message(Base):
    """One message of a conversation or ticket, either way.
    `external_id` dedupes a platform's retried deliveries."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("channel", "external_id"),
        Index("ix_messages_ticket", "ticket_id", "id"),
        Index("ix_messages_conversation", "conversation_id", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id"))
    direction: Mapped[str] = mapped_column(String(3))  # in | out
    author_type: Mapped[str] = mapped_column(String(16))  # customer | agent | bot | system
    author_name: Mapped[str | None] = mapped_column(String(100))
    text: Mapped[str] = mapped_column(Text)
    public: Mapped[bool] = mapped_column(Boolean, default=True)
    channel: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime]


class Attachment(Base):
    __tablename__ = "attachments"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(
        ForeignKey("tickets.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id"))
    channel: Mapped[str] = mapped_column(String(16))
    external_file_id: Mapped[str | None] = mapped_column(String(256))
    file_name: Mapped[str | None] = mapped_column(String(256))
    mime_type: Mapped[str | None] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer, default=0)
    content: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]


class SocialPost(Base):
    """A mention, a keyword hit or a direct message read by a monitor (or imported)."""

    __tablename__ = "social_posts"
    __table_args__ = (
        UniqueConstraint("platform", "external_id"),
        # The review queue (storage/review.py) reads it one (state, priority) range at a time,
        # backwards; partial so group members and direct messages, never review items, are
        # not in it. The predicate is spelled as the queue spells it, literally.
        Index(
            "ix_social_posts_review", "state", "priority", "author_followers", "posted_at", "id",
            postgresql_where=sql_text("coalesce(group_id, 0) = 0 AND stream <> 'dms'"),
            sqlite_where=sql_text("coalesce(group_id, 0) = 0 AND stream <> 'dms'"),
        ),
        Index("ix_social_posts_posted_at", "posted_at"),
        # Reports count a period's posts per (platform, state) and day by index-only range
        # counts (storage/reports.py).
        Index("ix_social_posts_report_counts", "platform", "state", "posted_at"),
        Index("ix_social_posts_group", "group_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    stream: Mapped[str] = mapped_column(String(16))  # mentions | dms | search | import
    external_id: Mapped[str] = mapped_column(String(128))
    url: Mapped[str | None] = mapped_column(String(500))
    author_id: Mapped[str | None] = mapped_column(String(128))
    author_username: Mapped[str | None] = mapped_column(String(200))
    author_name: Mapped[str | None] = mapped_column(String(200))
    author_followers: Mapped[int | None] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(8))
    posted_at: Mapped[datetime]
    fetched_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16))
    intent: Mapped[str | None] = mapped_column(String(32))
    priority: Mapped[str | None] = mapped_column(String(2))
    category: Mapped[str | None] = mapped_column(String(32))
    sentiment_label: Mapped[str | None] = mapped_column(String(16))
    sentiment_score: Mapped[float | None] = mapped_column(Float)
    # Near-duplicates point at the first post of their group, which carries the count.
    group_id: Mapped[int | None] = mapped_column(ForeignKey("social_posts.id"))
    group_size: Mapped[int] = mapped_column(Integer, default=1)
    fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    in_reply_to: Mapped[str | None] = mapped_column(String(128))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Review: who handled the post and when (ticketed, replied, dismissed), and the public
    # reply a person sent (delivered by the outbox; `reply_external_id` once the platform has it).
    handled_by: Mapped[str | None] = mapped_column(String(100))
    handled_at: Mapped[datetime | None]
    reply_text: Mapped[str | None] = mapped_column(Text)
    reply_external_id: Mapped[str | None] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}


class MonitorCursor(Base):
    """Where one (platform, account, stream) has read up to, its lease and its health."""

    __tablename__ = "monitor_cursors"
    __table_args__ = (UniqueConstraint("platform", "account", "stream"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    account: Mapped[str] = mapped_column(String(128))
    stream: Mapped[str] = mapped_column(String(16))
    cursor: Mapped[str | None] = mapped_column(String(256))
    updated_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None]
    health: Mapped[str] = mapped_column(String(16), default="ok")
    health_reason: Mapped[str | None] = mapped_column(String(500))
    retry_at: Mapped[datetime | None]
    reads_month: Mapped[str | None] = mapped_column(String(7))
    reads_count: Mapped[int] = mapped_column(Integer, default=0)


class OutboxMessage(Base):
    """A message owed to a customer. Written with the change that caused it; sent by the worker."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at", "id"),
        # A customer's mailbox (the web chat's history and poll read it).
        Index("ix_outbox_identity", "identity_id", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # Deterministic per cause (e.g. the ticket event): the same cause can never enqueue twice.
    key: Mapped[str] = mapped_column(String(200), unique=True)
    channel: Mapped[str] = mapped_column(String(16))
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("channel_identities.id"))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(12))  # pending | sending | sent | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    locked_by: Mapped[str | None] = mapped_column(String(128))
    locked_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    # A message sent in several parts: how many went out before an attempt failed. A server
    # default only: the chat's precompiled inserts (storage/direct.py) name no value for it.
    parts_sent: Mapped[int] = mapped_column(Integer, server_default="0")


class Survey(Base):
    __tablename__ = "surveys"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(
        ForeignKey("tickets.id", ondelete="CASCADE"), index=True
    )
    score: Mapped[int | None] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(String(16))
    asked_at: Mapped[datetime]
    answered_at: Mapped[datetime | None]
