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

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage import outbox
from storage.lifecycle import format_number
from storage.models import (
    Attachment,
    ChannelIdentity,
    Conversation,
    Customer,
    Message,
    Ticket,
    TicketEvent,
)
from storage.tickets import identity_for

# Tickets a customer still cares about: everything except closed (a resolved ticket may still
# be waiting for their satisfaction score).
VISIBLE_OPEN = ("new", "acknowledged", "in_progress", "waiting_customer", "resolved")
MAX_LISTED = 10
EXTERNAL_ID_CHARS = 128
# State keys the desk's hand-back clears (the dialogue owns the rest of Conversation.state).
HUMAN_KEY = "human"


@dataclass
class Loaded:
    """One customer's conversation, locked for this transaction."""

    identity: ChannelIdentity
    conversation: Conversation
    duplicate: bool  # this platform event was already handled


def message_key(customer_ref: str, message_ref: str | None) -> str | None:
    """The stored external id of an inbound event. Namespaced by the customer because some
    platforms number messages per chat (Telegram message_id), not globally."""
    if not message_ref:
        return None
    return f"{customer_ref}:{message_ref}"[:EXTERNAL_ID_CHARS]


async def load_locked(
    session: AsyncSession,
    *,
    channel: str,
    customer_ref: str,
    message_ref: str | None,
    display_name: str | None,
    language: str | None,
    now: datetime,
    postgres: bool,
) -> Loaded:
    """Identity, conversation (row-locked) and whether the event is a duplicate, in one query
    on the common path; first contact creates the customer, identity and conversation."""
    key = message_key(customer_ref, message_ref)
    seen = (
        exists().where(Message.channel == channel, Message.external_id == key)
        if key
        else None
    )
    columns: list[Any] = [ChannelIdentity, Conversation]
    if seen is not None:
        columns.append(seen)
    query = (
        select(*columns)
        .join(Conversation, Conversation.identity_id == ChannelIdentity.id)
        .where(ChannelIdentity.channel == channel, ChannelIdentity.external_id == customer_ref)
    )
    if postgres:
        query = query.with_for_update(of=Conversation)
    row = (await session.execute(query)).first()
    if row is not None:
        duplicate = bool(row[2]) if seen is not None else False
        return Loaded(identity=row[0], conversation=row[1], duplicate=duplicate)
    # First contact (or an identity made elsewhere, e.g. by an X DM intake): a concurrent first
    # event of the same customer fails on a unique constraint and the caller retries, finding
    # the row on the common path.
    identity = await identity_for(
        session, channel=channel, external_id=customer_ref, display_name=display_name,
        language=language, now=now,
    )
    conversation = Conversation(
        identity_id=identity.id, step=None, state={}, language=language, updated_at=now
    )
    session.add(conversation)
    await session.flush()
    return Loaded(identity=identity, conversation=conversation, duplicate=False)


def record_inbound(
    session: AsyncSession,
    conversation: Conversation,
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


async def set_customer_language(session: AsyncSession, customer_id: int, language: str) -> None:
    await session.execute(
        update(Customer).where(Customer.id == customer_id).values(language=language)
    )


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
    return VisibleTicket(
        id=row.id, number=format_number(row.id), kind=row.kind, status=row.status,
        category=row.category, subject=row.subject, resolution_due=row.resolution_due,
        resolved_at=row.resolved_at, needs_human=row.needs_human,
    )


async def open_tickets(
    session: AsyncSession, customer_id: int, *, limit: int = MAX_LISTED
) -> list[VisibleTicket]:
    """A customer's tickets that are not closed, newest first."""
    rows = await session.execute(
        select(*_VISIBLE_COLUMNS)
        .where(Ticket.customer_id == customer_id, Ticket.status.in_(VISIBLE_OPEN))
        .order_by(Ticket.id.desc())
        .limit(limit)
    )
    return [_visible(r) for r in rows.all()]


async def customer_ticket(
    session: AsyncSession, customer_id: int, ticket_id: int
) -> VisibleTicket | None:
    """One ticket by number, only if it is this customer's: another customer's ticket and a
    number that does not exist are the same None, so nothing leaks."""
    row = (
        await session.execute(
            select(*_VISIBLE_COLUMNS).where(
                Ticket.id == ticket_id, Ticket.customer_id == customer_id
            )
        )
    ).first()
    return _visible(row) if row is not None else None


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
