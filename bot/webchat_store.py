"""What the web chat reads from the store: a visitor's recent conversation (shown on connect)
and the webchat outbox rows written since (pushed to open sockets).

Reads only: every write goes through the dialogue, the ticket service or bot.delivery. These
queries belong with the outbox in storage/ and can move there unchanged.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select

from storage import outbox
from storage.db import Store
from storage.models import ChannelIdentity, Conversation, Message, OutboxMessage

CHANNEL = "webchat"
# Bind parameters per IN list: well under SQLite's and asyncpg's limits.
_CHUNK = 500


@dataclass(frozen=True)
class Row:
    """One outbox row for a visitor, in the shape a channel sender receives."""

    delivery: outbox.Delivery
    status: str
    created_at: datetime


@dataclass(frozen=True)
class Said:
    """Something the customer wrote, as the dialogue stored it."""

    id: int
    text: str
    created_at: datetime


@dataclass
class History:
    """A visitor's recent conversation: what they said and the outbox rows they were sent."""

    language: str | None = None
    said: list[Said] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    # The newest outbox id when the history was read: later rows reach the socket by push.
    floor: int = 0


def _delivery(m: OutboxMessage, visitor: str) -> outbox.Delivery:
    return outbox.Delivery(
        id=m.id, key=m.key, channel=m.channel, recipient=visitor, identity_id=m.identity_id,
        ticket_id=m.ticket_id, kind=m.kind, payload=m.payload, attempt=m.attempts,
    )


async def history(store: Store, visitor: str, limit: int) -> History:
    out = History()
    async with store.read() as session:
        # The floor first: a row committed after it is either in the history below or above
        # the floor, so it is shown by one path or the other (and never twice: ids dedupe).
        out.floor = int(await session.scalar(select(func.max(OutboxMessage.id))) or 0)
        identity = (
            await session.scalars(
                select(ChannelIdentity).where(
                    ChannelIdentity.channel == CHANNEL, ChannelIdentity.external_id == visitor
                )
            )
        ).first()
        if identity is None:
            return out
        conv = (
            await session.scalars(
                select(Conversation).where(Conversation.identity_id == identity.id)
            )
        ).first()
        out.language = conv.language if conv is not None else None
        rows = await session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.identity_id == identity.id, OutboxMessage.status != outbox.DEAD)
            .order_by(OutboxMessage.id.desc())
            .limit(limit)
        )
        out.rows = [Row(_delivery(m, visitor), m.status, m.created_at) for m in rows]
        out.rows.reverse()
        # The customer's side: the dialogue files every inbound event under the conversation
        # (also those it adds to a ticket).
        if conv is not None:
            said = await session.scalars(
                select(Message)
                .where(Message.conversation_id == conv.id, Message.direction == "in")
                .order_by(Message.id.desc())
                .limit(limit)
            )
            out.said = [Said(m.id, m.text, m.created_at) for m in said]
            out.said.reverse()
    return out


async def rows_after(
    store: Store, visitors: Collection[str], after: int, limit: int = 1000
) -> list[Row]:
    """Webchat rows above `after` for these visitors, whatever their status but dead: a row
    another process's worker already marked sent still has to reach a socket open here."""
    found: list[Row] = []
    names = sorted(visitors)
    async with store.read() as session:
        for start in range(0, len(names), _CHUNK):
            chunk = names[start : start + _CHUNK]
            result = await session.execute(
                select(OutboxMessage, ChannelIdentity.external_id)
                .join(ChannelIdentity, ChannelIdentity.id == OutboxMessage.identity_id)
                .where(
                    OutboxMessage.id > after,
                    OutboxMessage.channel == CHANNEL,
                    OutboxMessage.status != outbox.DEAD,
                    ChannelIdentity.channel == CHANNEL,
                    ChannelIdentity.external_id.in_(chunk),
                )
                .order_by(OutboxMessage.id)
                .limit(limit)
            )
            found.extend(Row(_delivery(m, ext), m.status, m.created_at) for m, ext in result.all())
    found.sort(key=lambda r: r.delivery.id)
    return found
