"""Merging two tickets of one customer: the duplicate is closed and points at the ticket that
carries on; both timelines say so, the customer is told, and the duplicate's messages show on
the surviving ticket (ticket_detail reads them through `merged_into_id`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage import outbox
from storage.errors import Conflict, Invalid, NotFound
from storage.lifecycle import format_number
from storage.models import Ticket, TicketEvent
from storage.tickets import TicketRules


def _merged_text(source: str, target: str, language: str | None) -> str:
    # Storage cannot use the bot's catalogue; the senders pass `text` through as written.
    if language == "zh":
        return f"您的请求 {source} 已与 {target} 合并，我们将在 {target} 中继续处理。"
    return f"Your request {source} has been merged into {target}; we will carry on there."


async def merge_tickets(
    session: AsyncSession,
    rules: TicketRules,
    source_id: int,
    target_id: int,
    *,
    actor: str,
    note: str | None = None,
) -> Ticket:
    """Merges `source` into `target` and returns the target. Refused (in words) for a ticket
    into itself, another customer's ticket, or a ticket that was itself merged away."""
    if source_id == target_id:
        raise Invalid("a ticket cannot be merged into itself")
    # Lock both rows in id order, so two merges of the same pair cannot deadlock.
    found = {
        t.id: t
        for t in (
            await session.scalars(
                select(Ticket)
                .where(Ticket.id.in_((source_id, target_id)))
                .order_by(Ticket.id)
                .with_for_update()
            )
        ).all()
    }
    for ticket_id in (source_id, target_id):
        if ticket_id not in found:
            raise NotFound(f"no ticket {format_number(ticket_id)}")
    source, target = found[source_id], found[target_id]
    src, dst = format_number(source.id), format_number(target.id)
    if source.customer_id != target.customer_id:
        raise Invalid(f"{src} and {dst} belong to different customers; only one customer's "
                      "tickets can be merged")
    if source.merged_into_id is not None:
        raise Conflict(f"{src} was already merged into {format_number(source.merged_into_id)}")
    if target.merged_into_id is not None:
        raise Conflict(f"{dst} was merged into {format_number(target.merged_into_id)}; "
                       "merge into that ticket instead")
    now = rules.clock()
    previous = source.status
    source.merged_into_id = target.id
    source.status = "closed"
    source.closed_at = now
    source.paused_at = None
    source.updated_at = now
    target.updated_at = now
    # The merged ticket's needs (a /human hand-off) carry over to the one that goes on.
    target.needs_human = target.needs_human or source.needs_human
    closed = TicketEvent(
        ticket_id=source.id, at=now, type="merged", actor=actor, from_value=previous,
        to_value="closed", note=note or f"merged into {dst}", data={"into": dst},
    )
    session.add(closed)
    session.add(
        TicketEvent(
            ticket_id=target.id, at=now, type="merged_from", actor=actor, from_value=src,
            to_value=dst, note=note or f"{src} was merged into this ticket", data={"from": src},
        )
    )
    identity = source.identity_id or target.identity_id
    if identity is not None:
        await session.flush()  # the event id keys the outbox row
        outbox.enqueue(
            session,
            key=f"event:{closed.id}",
            channel=source.channel if source.identity_id else target.channel,
            identity_id=identity,
            ticket_id=target.id,
            kind="ticket_merged",
            payload={
                "number": dst, "merged": src, "language": source.language or target.language,
                "text": _merged_text(src, dst, source.language or target.language),
            },
            now=now,
        )
    return target
