"""The outbox: messages owed to customers, written in the transaction of the change that caused
them, claimed and delivered by the worker (at least once; the key makes a cause enqueue once)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import ChannelIdentity, OutboxMessage

PENDING, SENDING, SENT, DEAD = "pending", "sending", "sent", "dead"
# The kind of a reply to a social post: it goes to the post, not to a customer's inbox.
# payload: {"post_id", "in_reply_to", "text", "platform"}
PUBLIC_REPLY = "public_reply"
# A claimed row whose worker died comes back after this long.
CLAIM_LEASE = timedelta(minutes=2)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a channel sender gets: enough to render and address one message."""

    id: int
    key: str
    channel: str
    recipient: str | None  # the platform's id for the customer (chat id, user id)
    identity_id: int | None
    ticket_id: int | None
    kind: str
    payload: dict[str, Any]
    attempt: int
    # False: the customer blocked us on this identity (set_reachable).
    reachable: bool = True
    # Of a message that goes out in several parts (Telegram's 4,096 characters, X's DM
    # length): how many went out on earlier attempts (dispatch.send_parts starts after them).
    parts_sent: int = 0
    # Set by the worker: records that the first n parts went out, so a retry, or another
    # worker after a crash, starts at part n + 1 instead of sending the earlier ones again.
    progress: Callable[[int], Awaitable[None]] | None = field(
        default=None, repr=False, compare=False
    )


def enqueue(
    session: AsyncSession,
    *,
    key: str,
    channel: str,
    identity_id: int | None,
    ticket_id: int | None,
    kind: str,
    payload: dict[str, Any],
    now: datetime,
) -> OutboxMessage:
    row = OutboxMessage(
        key=key,
        channel=channel,
        identity_id=identity_id,
        ticket_id=ticket_id,
        kind=kind,
        payload=payload,
        status=PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(row)
    return row


async def claim(
    session: AsyncSession,
    *,
    channels: list[str],
    worker: str,
    now: datetime,
    limit: int,
    postgres: bool,
) -> list[Delivery]:
    """Take up to `limit` due rows for these channels. On PostgreSQL `FOR UPDATE SKIP LOCKED`
    lets several workers claim side by side; SQLite's BEGIN IMMEDIATE serialises them."""
    if not channels:
        return []
    due = or_(
        (OutboxMessage.status == PENDING) & (OutboxMessage.next_attempt_at <= now),
        (OutboxMessage.status == SENDING) & (OutboxMessage.locked_until < now),
    )
    query = (
        select(OutboxMessage.id)
        .where(due, OutboxMessage.channel.in_(channels))
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
    )
    if postgres:
        query = query.with_for_update(skip_locked=True)
    ids = list((await session.scalars(query)).all())
    if not ids:
        return []
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(ids))
        .values(
            status=SENDING,
            locked_by=worker,
            locked_until=now + CLAIM_LEASE,
            attempts=OutboxMessage.attempts + 1,
        )
    )
    rows = await session.execute(
        select(OutboxMessage, ChannelIdentity.external_id, ChannelIdentity.reachable)
        .outerjoin(ChannelIdentity, ChannelIdentity.id == OutboxMessage.identity_id)
        .where(OutboxMessage.id.in_(ids))
        .order_by(OutboxMessage.id)
        .execution_options(populate_existing=True)
    )
    return [
        Delivery(
            id=m.id,
            key=m.key,
            channel=m.channel,
            recipient=ext,
            identity_id=m.identity_id,
            ticket_id=m.ticket_id,
            kind=m.kind,
            payload=m.payload,
            attempt=m.attempts,
            reachable=reachable is not False,
            parts_sent=m.parts_sent,
        )
        for m, ext, reachable in rows.all()
    ]


async def mark_parts_sent(session: AsyncSession, row_id: int, parts: int) -> None:
    """The first `parts` parts of a row not yet sent went out (never lowers the count)."""
    await session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == row_id,
            OutboxMessage.status.in_((PENDING, SENDING)),
            OutboxMessage.parts_sent < parts,
        )
        .values(parts_sent=parts)
    )


async def mark_sent(session: AsyncSession, ids: list[int], now: datetime) -> None:
    if ids:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids), OutboxMessage.status == SENDING)
            .values(status=SENT, sent_at=now, locked_by=None, locked_until=None, last_error=None)
        )


async def mark_delivered(session: AsyncSession, ids: list[int], now: datetime) -> None:
    """Rows a channel delivered inline (a chat reply sent right after the dialogue answered),
    so the worker does not send them again."""
    if ids:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids), OutboxMessage.status == PENDING)
            .values(status=SENT, sent_at=now, attempts=OutboxMessage.attempts + 1)
        )


async def mark_retry(session: AsyncSession, row_id: int, at: datetime, error: str) -> None:
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == row_id, OutboxMessage.status == SENDING)
        .values(
            status=PENDING, next_attempt_at=at, locked_by=None, locked_until=None,
            last_error=error[:500],
        )
    )


async def release(session: AsyncSession, ids: list[int], worker: str) -> None:
    """Claimed rows this worker will not send after all (it is stopping, or their lease is
    running out before their turn): due again at once, for any worker, and the claim does not
    count as an attempt. Only rows still claimed by this worker: a row whose lease ran out may
    already be another worker's."""
    if ids:
        await session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.id.in_(ids),
                OutboxMessage.status == SENDING,
                OutboxMessage.locked_by == worker,
            )
            .values(
                status=PENDING, locked_by=None, locked_until=None,
                attempts=OutboxMessage.attempts - 1,
            )
        )


async def mark_dead(session: AsyncSession, row_id: int, error: str) -> None:
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == row_id)
        .values(status=DEAD, locked_by=None, locked_until=None, last_error=error[:500])
    )


async def counts_by_status(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
    )
    return {status: n for status, n in rows.all()}


async def set_reachable(
    session: AsyncSession, *, reachable: bool, reason: str | None = None,
    identity_id: int | None = None, channel: str | None = None, external_id: str | None = None,
) -> int:
    """Records whether the customer can be written to on this identity (by id, or by channel
    and platform id): False when they blocked us or a send was refused for good, True when
    they unblocked or wrote again. The outbox worker skips unreachable ones. Returns
    how many identities matched."""
    where = (
        [ChannelIdentity.id == identity_id] if identity_id is not None
        else [ChannelIdentity.channel == channel, ChannelIdentity.external_id == external_id]
    )
    result = await session.execute(
        update(ChannelIdentity).where(*where).values(
            reachable=reachable,
            unreachable_reason=None if reachable else (reason or "")[:200] or None,
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
