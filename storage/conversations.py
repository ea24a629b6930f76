"""Chat conversations in the store: the locked conversation of one customer identity, inbound
message dedupe, the tickets a customer may see, and the desk's hand-back from human mode.

Every call runs inside the caller's transaction (`async with store.transaction()`), so the
dialogue writes state, message, ticket and replies atomically.

Why the conversation row lock is the centre of it: every event of one customer (a message, a
button press, a platform's retried delivery of either) first locks that customer's
conversation row (`SELECT … FOR UPDATE` on PostgreSQL; SQLite's BEGIN IMMEDIATE serialises
everything anyway). Events of one customer are therefore handled one after the other, in any
number of bot processes, so "has this platform event been seen?" is a plain read, and a
duplicate can never slip between the check and the write. The unique (channel, external_id) of
messages stays as the backstop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
from sqlalchemy import (
    JSON,
    String,
    Table,
    any_,
    bindparam,
    cast,
    exists,
    func,
    insert,
    literal,
    literal_column,
    null,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from storage import outbox
from storage.direct import Direct
from storage.lifecycle import format_number
from storage.models import (
    Attachment,
    ChannelIdentity,
    Conversation,
    Customer,
    Message,
    OutboxMessage,
    Ticket,
    TicketEvent,
)
from storage.tickets import identity_for

# Where a turn reads: its locked transaction, or (optimistic, PostgreSQL) a raw connection.
Reader: TypeAlias = AsyncSession | asyncpg.Connection

CONVERSATIONS: Table = Conversation.__table__  # type: ignore[assignment]
MESSAGES: Table = Message.__table__  # type: ignore[assignment]
OUTBOX: Table = OutboxMessage.__table__  # type: ignore[assignment]

# Tickets a customer still cares about: everything except closed (a resolved ticket may still
# be waiting for their satisfaction score).
VISIBLE_OPEN = ("new", "acknowledged", "in_progress", "waiting_customer", "resolved")
MAX_LISTED = 10
EXTERNAL_ID_CHARS = 128
# State keys the desk's hand-back clears (the dialogue owns the rest of Conversation.state).
HUMAN_KEY = "human"


@dataclass(slots=True)
class IdentityRef:
    """What the dialogue needs of a channel identity (read with Core, not hydrated)."""

    id: int
    customer_id: int
    # False after the customer blocked us (or a send was refused for good): the outbox skips
    # them until they write again or unblock.
    reachable: bool = True


@dataclass(slots=True)
class ConversationRow:
    """A locked conversation as plain values. The dialogue changes these and writes them back
    with `save_conversation` (one Core UPDATE, checked against `version` like the ORM's
    version counter)."""

    id: int
    identity_id: int
    step: str | None
    state: dict[str, Any] | None
    language: str | None
    ticket_id: int | None
    version: int
    # The status of `ticket_id` as loaded (None: no ticket), read in the same statement.
    loaded_ticket: tuple[int | None, str | None] = (None, None)


@dataclass
class Loaded:
    """One customer's conversation, locked for this transaction."""

    identity: IdentityRef
    conversation: ConversationRow
    duplicate: bool  # this platform event was already handled


def message_key(customer_ref: str, message_ref: str | None) -> str | None:
    """The stored external id of an inbound event. Namespaced by the customer because some
    platforms number messages per chat (Telegram message_id), not globally."""
    if not message_ref:
        return None
    return f"{customer_ref}:{message_ref}"[:EXTERNAL_ID_CHARS]


# The common path's statements are built once, with bind parameters, so SQLAlchemy compiles
# each one once and serves it from its compiled cache afterwards.
_LOAD_COLUMNS = (
    ChannelIdentity.id, ChannelIdentity.customer_id,
    Conversation.id, Conversation.step, Conversation.state, Conversation.language,
    Conversation.ticket_id, Conversation.version, Ticket.status, ChannelIdentity.reachable,
)


def _load_statement(postgres: bool, with_key: bool) -> Any:
    columns: list[Any] = list(_LOAD_COLUMNS)
    if with_key:
        columns.append(
            exists().where(
                Message.channel == bindparam("channel"), Message.external_id == bindparam("key")
            )
        )
    query = (
        select(*columns)
        .join(Conversation, Conversation.identity_id == ChannelIdentity.id)
        # The current ticket's status comes along (not locked: only the conversation is).
        .outerjoin(Ticket, Ticket.id == Conversation.ticket_id)
        .where(
            ChannelIdentity.channel == bindparam("channel"),
            ChannelIdentity.external_id == bindparam("customer_ref"),
        )
    )
    if postgres:
        query = query.with_for_update(of=Conversation.__table__)
    return query


_LOAD = {(pg, key): _load_statement(pg, key) for pg in (False, True) for key in (False, True)}
# The optimistic turn's statements, compiled once for asyncpg (storage/direct.py).
_ASYNCPG = PGDialect_asyncpg()
_DIRECT_LOAD = {key: Direct.compile(_LOAD[(False, key)], _ASYNCPG) for key in (False, True)}

_SAVE = (
    update(CONVERSATIONS)
    .where(
        CONVERSATIONS.c.id == bindparam("b_id"),
        CONVERSATIONS.c.version == bindparam("b_version"),
    )
    .values(
        step=bindparam("step"), state=bindparam("state"), language=bindparam("language"),
        ticket_id=bindparam("ticket_id"), updated_at=bindparam("updated_at"),
        version=bindparam("new_version"),
    )
)

INSERT_MESSAGE = insert(MESSAGES)


class NeedsTransaction(Exception):
    """An optimistic turn (no transaction, PostgreSQL) reached something only a locked
    transaction may do: first contact, an ORM flow. The dialogue runs the event again in one."""


async def load_locked(
    reader: Reader,
    *,
    channel: str,
    customer_ref: str,
    message_ref: str | None,
    display_name: str | None,
    language: str | None,
    now: datetime,
    postgres: bool,
) -> Loaded:
    """Identity, conversation and whether the event is a duplicate, in one query on the common
    path; first contact creates the customer, identity and conversation. In a transaction (a
    session) on PostgreSQL the conversation row is locked; outside one (an optimistic turn on
    a raw connection) it is only read, and the turn's write checks its version instead."""
    key = message_key(customer_ref, message_ref)
    params = {"channel": channel, "customer_ref": customer_ref}
    if key:
        params["key"] = key
    if isinstance(reader, asyncpg.Connection):
        row = await _DIRECT_LOAD[bool(key)].fetchrow(reader, params)
    else:
        conn = await reader.connection()
        row = (await conn.execute(_LOAD[(postgres, bool(key))], params)).first()
    if row is not None:
        return Loaded(
            identity=IdentityRef(id=row[0], customer_id=row[1], reachable=bool(row[9])),
            conversation=ConversationRow(
                id=row[2], identity_id=row[0], step=row[3], state=row[4], language=row[5],
                ticket_id=row[6], version=row[7], loaded_ticket=(row[6], row[8]),
            ),
            duplicate=bool(row[10]) if key else False,
        )
    # First contact (or an identity made elsewhere, e.g. by an X DM intake): a concurrent first
    # event of the same customer fails on a unique constraint and the caller retries, finding
    # the row on the common path.
    if isinstance(reader, asyncpg.Connection):
        raise NeedsTransaction("first contact")
    session = reader
    identity = await identity_for(
        session, channel=channel, external_id=customer_ref, display_name=display_name,
        language=language, now=now,
    )
    conversation = Conversation(
        identity_id=identity.id, step=None, state={}, language=language, updated_at=now
    )
    session.add(conversation)
    await session.flush()
    return Loaded(
        identity=IdentityRef(id=identity.id, customer_id=identity.customer_id),
        conversation=ConversationRow(
            id=conversation.id, identity_id=identity.id, step=None, state={},
            language=language, ticket_id=None, version=conversation.version,
        ),
        duplicate=False,
    )


async def save_conversation(
    session: AsyncSession, conversation: ConversationRow, *, now: datetime
) -> None:
    """Writes the conversation's values back: one UPDATE, with the version check the ORM's
    version counter does (a stale version raises StaleDataError, as a flush would)."""
    conn = await session.connection()
    result = await conn.execute(_SAVE, {
        "b_id": conversation.id, "b_version": conversation.version,
        "step": conversation.step, "state": conversation.state,
        "language": conversation.language, "ticket_id": conversation.ticket_id,
        "updated_at": now, "new_version": conversation.version + 1,
    })
    if result.rowcount != 1:
        raise StaleDataError(
            f"UPDATE statement on table 'conversations' expected to update 1 row(s); "
            f"{result.rowcount} were matched."
        )
    conversation.version += 1


_MESSAGE_COLUMNS = (
    "conversation_id", "ticket_id", "direction", "author_type", "author_name", "text", "public",
    "channel", "external_id", "created_at",
)


TICKETS: Table = Ticket.__table__  # type: ignore[assignment]
EVENTS: Table = TicketEvent.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class OnTicket:
    """The customer wrote about their open ticket (`tickets.add_customer_message` in one
    statement): the message goes on the ticket, with a `customer_message` event, and the
    ticket is touched — provided its status is still `status` as loaded. A ticket waiting for
    the customer moves to in progress, which is the ORM path's job, so it never comes here."""

    ticket_id: int
    status: str
    text: str
    note: str
    external_id: str | None


class TurnRaced(Exception):
    """What the turn read changed before its write (another event of the same customer in
    another process, the desk moving the ticket): nothing was written, and the dialogue runs
    the event again on fresh values."""


class TicketChanged(TurnRaced):
    """The ticket's status changed between the conversation's read and the write."""


# Both raised by the database in the middle of the statement (careloop_expect, migration
# 0008), as serialization failures; a deadlock with the desk is retried the same way.
_RACED_STATES = ("40001", "40P01")
# The kind of a chat reply's outbox row.
CHAT_REPLY_KIND = "chat_reply"


def _writes_statement(with_message: bool, on_ticket: bool) -> Any:
    """PostgreSQL: a turn's whole write as one statement of data-modifying CTEs, which is
    atomic without a transaction around it:
    - the conversation UPDATE, checked against the version the turn read;
    - the inbound message, on the conversation, or on its open ticket with the ticket's event
      and touch, checked against the status the turn read;
    - the turn's replies as outbox rows (unnest of two arrays, so one statement shape serves
      any number of replies and stays in SQLAlchemy's compiled cache), ids in the order said.
    A failed check raises inside the statement (`careloop_expect`), which undoes all of it."""
    conv = CONVERSATIONS
    # Every bound name here is prefixed (c_, t_, m_, e_, r_): SQLAlchemy adds a SET for any
    # parameter named like a column of an UPDATE, CTEs included (tickets.language!).
    saved = (
        update(conv)
        .where(conv.c.id == bindparam("b_id"), conv.c.version == bindparam("b_version"))
        .values(
            step=bindparam("c_step"), state=bindparam("c_state"),
            language=bindparam("c_language"), ticket_id=bindparam("c_ticket_id"),
            updated_at=bindparam("c_updated_at"), version=bindparam("c_new_version"),
        )
        .returning(conv.c.id)
        .cte("saved")
    )
    ctes: list[Any] = [saved]
    checks = [func.careloop_expect(
        select(func.count()).select_from(saved).scalar_subquery() == 1,
        literal("conversation"),
    )]
    if on_ticket:
        touched = (
            update(TICKETS)
            .where(TICKETS.c.id == bindparam("t_id"), TICKETS.c.status == bindparam("t_status"))
            .values(updated_at=bindparam("t_updated_at"),
                    version=TICKETS.c.version + literal_column("1"))
            .returning(TICKETS.c.id, TICKETS.c.channel)
            .cte("touched")
        )
        on_ticket_message = insert(MESSAGES).from_select(
            list(_MESSAGE_COLUMNS),
            select(
                bindparam("m_conversation_id", type_=MESSAGES.c.conversation_id.type),
                touched.c.id, literal_column("'in'"), literal_column("'customer'"), null(),
                bindparam("m_text", type_=MESSAGES.c.text.type), true(), touched.c.channel,
                bindparam("m_external_id", type_=MESSAGES.c.external_id.type),
                bindparam("m_at", type_=MESSAGES.c.created_at.type),
            ),
        )
        event = insert(EVENTS).from_select(
            ["ticket_id", "at", "type", "actor", "note"],
            select(
                touched.c.id, bindparam("m_at", type_=EVENTS.c.at.type),
                literal_column("'customer_message'"), literal_column("'customer'"),
                bindparam("e_note", type_=EVENTS.c.note.type),
            ),
        )
        ctes += [touched, on_ticket_message.cte("inbound"), event.cte("event")]
        checks.append(func.careloop_expect(
            select(func.count()).select_from(touched).scalar_subquery() == 1, literal("ticket")
        ))
    elif with_message:
        ctes.append(
            insert(MESSAGES)
            .values({c: bindparam(f"m_{c}") for c in _MESSAGE_COLUMNS})
            .cte("inbound")
        )
    said = func.unnest(
        bindparam("r_keys", type_=ARRAY(String)), bindparam("r_payloads", type_=ARRAY(String))
    ).table_valued("key", "payload", with_ordinality="ord").render_derived(name="said")
    replies = (
        insert(OUTBOX).from_select(
            ["key", "channel", "identity_id", "ticket_id", "kind", "payload", "status",
             "attempts", "next_attempt_at", "created_at"],
            select(
                said.c.key, bindparam("r_channel", type_=OUTBOX.c.channel.type),
                bindparam("r_identity_id", type_=OUTBOX.c.identity_id.type), null(),
                literal(CHAT_REPLY_KIND), cast(said.c.payload, JSON),
                literal(outbox.PENDING), literal(0),
                bindparam("r_due", type_=OUTBOX.c.next_attempt_at.type),
                bindparam("r_at", type_=OUTBOX.c.created_at.type),
            # Ids are drawn as the rows come, so in the order the replies were said.
            ).order_by(said.c.ord),
        )
        .returning(OUTBOX.c.id)
        .cte("replies")
    )
    ctes.append(replies)
    reply_ids = select(
        func.array_agg(aggregate_order_by(replies.c.id, replies.c.id))
    ).scalar_subquery()
    return select(*checks, reply_ids).add_cte(*ctes)

_WRITES = {
    (with_message, on_ticket): _writes_statement(with_message, on_ticket)
    for with_message in (False, True) for on_ticket in (False, True)
    if not (with_message and on_ticket)
}
_DIRECT_WRITES = {
    shape: Direct.compile(statement, _ASYNCPG) for shape, statement in _WRITES.items()
}


@dataclass(frozen=True, slots=True)
class Replies:
    """A turn's chat replies not written yet: outbox keys and payloads in the order said."""

    keys: list[str]
    payloads: list[dict[str, Any]]
    channel: str
    identity_id: int
    due: datetime


async def write_turn_pg(
    conn: AsyncConnection | asyncpg.Connection,
    conversation: ConversationRow,
    *,
    inbound: dict[str, Any] | None,
    now: datetime,
    on_ticket: OnTicket | None = None,
    replies: Replies,
) -> list[int]:
    """The inbound message (or `add_customer_message` on an open ticket), the replies and
    `save_conversation` in one statement on PostgreSQL, inside a transaction or without one
    (on a raw asyncpg connection). Returns the replies' outbox ids; raises TurnRaced
    (nothing written) if the conversation's version or the ticket's status is no longer what
    the turn read, or the same event was written meanwhile."""
    params: dict[str, Any] = {
        "b_id": conversation.id, "b_version": conversation.version,
        "c_step": conversation.step, "c_state": conversation.state,
        "c_language": conversation.language, "c_ticket_id": conversation.ticket_id,
        "c_updated_at": now, "c_new_version": conversation.version + 1,
        "r_keys": replies.keys,
        "r_payloads": [json.dumps(p, ensure_ascii=False) for p in replies.payloads],
        "r_channel": replies.channel, "r_identity_id": replies.identity_id,
        "r_due": replies.due, "r_at": now,
    }
    if on_ticket is not None:
        assert inbound is None
        params |= {
            "t_id": on_ticket.ticket_id, "t_status": on_ticket.status, "t_updated_at": now,
            "m_conversation_id": conversation.id, "m_text": on_ticket.text,
            "m_external_id": on_ticket.external_id, "e_note": on_ticket.note, "m_at": now,
        }
    if inbound is not None:
        for c in _MESSAGE_COLUMNS:
            params[f"m_{c}"] = inbound[c]
    shape = (inbound is not None, on_ticket is not None)
    try:
        if isinstance(conn, asyncpg.Connection):
            params["c_state"] = (
                None if conversation.state is None else json.dumps(conversation.state)
            )
            row = await _DIRECT_WRITES[shape].fetchrow(conn, params)
        else:
            row = (await conn.execute(_WRITES[shape], params)).one()
    except asyncpg.UniqueViolationError as exc:
        raise TurnRaced(f"conversation {conversation.id}: the event was written meanwhile") from exc
    except (DBAPIError, asyncpg.PostgresError) as exc:
        error = exc.orig if isinstance(exc, DBAPIError) else exc
        state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if state not in _RACED_STATES:
            raise
        if on_ticket is not None and "ticket changed" in str(error):
            raise TicketChanged(
                f"ticket {on_ticket.ticket_id} is no longer {on_ticket.status}"
            ) from exc
        raise TurnRaced(f"conversation {conversation.id} changed meanwhile") from exc
    conversation.version += 1
    ids = row[-1] or []
    if len(ids) != len(replies.keys):
        raise AssertionError(f"{len(replies.keys)} replies written as {len(ids)} rows")
    return list(ids)


def inbound_values(
    conversation_id: int, *, channel: str, external_id: str | None, text: str, now: datetime
) -> dict[str, Any]:
    return {
        "conversation_id": conversation_id, "ticket_id": None, "direction": "in",
        "author_type": "customer", "author_name": None, "text": text, "public": True,
        "channel": channel, "external_id": external_id, "created_at": now,
    }


def record_inbound(
    session: AsyncSession,
    conversation: Conversation | ConversationRow,
    *,
    channel: str,
    external_id: str | None,
    text: str,
    now: datetime,
    ticket_id: int | None = None,
) -> Message:
    """The customer's event as a message of the conversation (what dedupe looks up)."""
    message = Message(
        conversation_id=conversation.id,
        ticket_id=ticket_id,
        direction="in",
        author_type="customer",
        text=text,
        public=True,
        channel=channel,
        external_id=external_id,
        created_at=now,
    )
    session.add(message)
    return message


def store_attachment(
    session: AsyncSession,
    *,
    conversation_id: int,
    channel: str,
    kind: str,
    file_id: str | None,
    file_name: str | None,
    mime_type: str | None,
    size: int,
    content: bytes | None,
    now: datetime,
    ticket_id: int | None = None,
    message_id: int | None = None,
) -> Attachment:
    attachment = Attachment(
        ticket_id=ticket_id,
        message_id=message_id,
        conversation_id=conversation_id,
        channel=channel,
        external_file_id=file_id,
        file_name=file_name or kind,
        mime_type=mime_type,
        size=size,
        content=content,
        created_at=now,
    )
    session.add(attachment)
    return attachment


async def attach_pending_to_ticket(
    session: AsyncSession, conversation_id: int, ticket_id: int
) -> None:
    """Files sent during intake belong to the ticket the intake created."""
    await session.execute(
        update(Attachment)
        .where(Attachment.conversation_id == conversation_id, Attachment.ticket_id.is_(None))
        .values(ticket_id=ticket_id)
    )


CUSTOMERS: Table = Customer.__table__  # type: ignore[assignment]
_SET_LANGUAGE = (
    update(CUSTOMERS)
    .where(CUSTOMERS.c.id == bindparam("b_customer_id"))
    .values(language=bindparam("language"))
)


async def set_customer_language(session: AsyncSession, customer_id: int, language: str) -> None:
    conn = await session.connection()
    await conn.execute(_SET_LANGUAGE, {"b_customer_id": customer_id, "language": language})


@dataclass(frozen=True, slots=True)
class VisibleTicket:
    """What a customer may know about one of their tickets."""

    id: int
    number: str
    kind: str
    status: str
    category: str | None
    subject: str
    resolution_due: datetime
    resolved_at: datetime | None
    needs_human: bool


_VISIBLE_COLUMNS = (
    Ticket.id, Ticket.kind, Ticket.status, Ticket.category, Ticket.subject,
    Ticket.resolution_due, Ticket.resolved_at, Ticket.needs_human,
)


def _visible(row: Any) -> VisibleTicket:
    # By position: SQLAlchemy rows and asyncpg records alike.
    return VisibleTicket(
        id=row[0], number=format_number(row[0]), kind=row[1], status=row[2], category=row[3],
        subject=row[4], resolution_due=row[5], resolved_at=row[6], needs_human=row[7],
    )


_OPEN_TICKETS = (
    select(*_VISIBLE_COLUMNS)
    .where(Ticket.customer_id == bindparam("customer_id"), Ticket.status.in_(VISIBLE_OPEN))
    .order_by(Ticket.id.desc())
    .limit(bindparam("limit"))
)
_CUSTOMER_TICKET = select(*_VISIBLE_COLUMNS).where(
    Ticket.id == bindparam("ticket_id"), Ticket.customer_id == bindparam("customer_id")
)
_TICKET_STATUS = select(Ticket.status).where(Ticket.id == bindparam("ticket_id"))
# The same reads for an optimistic turn's raw connection (an IN list becomes = ANY(array):
# asyncpg takes no expanding parameters).
_DIRECT_OPEN_TICKETS = Direct.compile(
    select(*_VISIBLE_COLUMNS)
    .where(Ticket.customer_id == bindparam("customer_id"),
           Ticket.status == any_(bindparam("statuses", type_=ARRAY(String))))
    .order_by(Ticket.id.desc())
    .limit(bindparam("limit")),
    _ASYNCPG,
)
_DIRECT_CUSTOMER_TICKET = Direct.compile(_CUSTOMER_TICKET, _ASYNCPG)
_DIRECT_TICKET_STATUS = Direct.compile(_TICKET_STATUS, _ASYNCPG)


async def open_tickets(
    reader: Reader, customer_id: int, *, limit: int = MAX_LISTED
) -> list[VisibleTicket]:
    """A customer's tickets that are not closed, newest first."""
    params: dict[str, Any] = {"customer_id": customer_id, "limit": limit}
    if isinstance(reader, asyncpg.Connection):
        rows = await _DIRECT_OPEN_TICKETS.fetch(reader, params | {"statuses": VISIBLE_OPEN})
    else:
        rows = list((await reader.execute(_OPEN_TICKETS, params)).all())
    return [_visible(r) for r in rows]


async def customer_ticket(
    reader: Reader, customer_id: int, ticket_id: int
) -> VisibleTicket | None:
    """One ticket by number, only if it is this customer's: another customer's ticket and a
    number that does not exist are the same None, so nothing leaks."""
    params = {"ticket_id": ticket_id, "customer_id": customer_id}
    if isinstance(reader, asyncpg.Connection):
        row = await _DIRECT_CUSTOMER_TICKET.fetchrow(reader, params)
    else:
        row = (await reader.execute(_CUSTOMER_TICKET, params)).first()
    return _visible(row) if row is not None else None


async def ticket_status(reader: Reader, ticket_id: int) -> str | None:
    if isinstance(reader, asyncpg.Connection):
        row = await _DIRECT_TICKET_STATUS.fetchrow(reader, {"ticket_id": ticket_id})
        return None if row is None else str(row[0])
    status = (await reader.execute(_TICKET_STATUS, {"ticket_id": ticket_id})).scalar()
    return None if status is None else str(status)


async def hand_back(
    session: AsyncSession, ticket_id: int, *, actor: str, now: datetime
) -> bool:
    """The desk gives a ticket back to the bot after a `/human` hand-off: the ticket no longer
    needs a person first, the conversations in human mode for it leave that mode, and the
    customer is told. Returns False if nothing was in human mode for this ticket.

    Locks conversations before the ticket, the same order as the dialogue, so a customer
    writing during the hand-back cannot deadlock with it."""
    identity_id = await session.scalar(select(Ticket.identity_id).where(Ticket.id == ticket_id))
    conversation = None
    if identity_id is not None:
        conversation = (
            await session.scalars(
                select(Conversation)
                .where(Conversation.identity_id == identity_id)
                .with_for_update()
            )
        ).first()
    ticket = (
        await session.scalars(select(Ticket).where(Ticket.id == ticket_id).with_for_update())
    ).first()
    if ticket is None:
        return False
    in_human_mode = [
        c for c in (conversation,) if c is not None and (c.state or {}).get(HUMAN_KEY) == ticket_id
    ]
    if not ticket.needs_human and not in_human_mode:
        return False
    ticket.needs_human = False
    ticket.updated_at = now
    event = TicketEvent(ticket_id=ticket.id, at=now, type="handed_back", actor=actor)
    session.add(event)
    await session.flush()
    for conversation in in_human_mode:
        state = dict(conversation.state or {})
        state.pop(HUMAN_KEY, None)
        conversation.state = state
        conversation.updated_at = now
        identity = await session.get(ChannelIdentity, conversation.identity_id)
        if identity is None:
            continue
        outbox.enqueue(
            session,
            key=f"handback:{event.id}:{conversation.id}",
            channel=identity.channel,
            identity_id=identity.id,
            ticket_id=ticket.id,
            kind="handed_back",
            payload={
                "number": format_number(ticket.id),
                "language": conversation.language or ticket.language,
            },
            now=now,
        )
    return True
