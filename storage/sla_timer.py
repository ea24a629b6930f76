"""The SLA timer: records breaches, escalates them, and reminds assignees before a deadline.

Each pass is one transaction and idempotent (a breach is recorded once per ticket and target),
so any number of workers may run it; on PostgreSQL they skip each other's locked rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.lifecycle import OPEN_STATUSES
from storage.models import Agent, Ticket, TicketEvent
from storage.tickets import TicketRules

BATCH = 500
_Query = TypeVar("_Query", bound=Select)  # type: ignore[type-arg]


@dataclass
class SlaPass:
    breached: int = 0
    reminded: int = 0


async def check_deadlines(session: AsyncSession, rules: TicketRules, *, postgres: bool) -> SlaPass:
    now = rules.clock()
    result = SlaPass()
    open_ = Ticket.status.in_(OPEN_STATUSES)

    def lock(query: _Query) -> _Query:
        return query.with_for_update(skip_locked=True) if postgres else query

    first = await session.scalars(
        lock(
            select(Ticket)
            .where(
                open_,
                Ticket.first_response_at.is_(None),
                Ticket.first_response_breached_at.is_(None),
                Ticket.first_response_due <= now,
            )
            .limit(BATCH)
        )
    )
    for ticket in first.all():
        ticket.first_response_breached_at = now
        _breach(session, ticket, "first_response", ticket.first_response_due.isoformat(), now)
        result.breached += 1

    late = await session.scalars(
        lock(
            select(Ticket)
            .where(open_, Ticket.resolution_breached_at.is_(None), Ticket.resolution_due <= now)
            .limit(BATCH)
        )
    )
    for ticket in late.all():
        ticket.resolution_breached_at = now
        _breach(session, ticket, "resolution", ticket.resolution_due.isoformat(), now)
        result.breached += 1

    # Remind the assignee once, when the configured share of the resolution window has gone.
    candidates = await session.execute(
        lock(
            select(Ticket, Agent.username)
            .join(Agent, Agent.id == Ticket.assignee_id)
            .where(
                open_,
                Ticket.reminded_at.is_(None),
                Ticket.resolution_breached_at.is_(None),
                Ticket.resolution_due > now,
            )
            .order_by(Ticket.resolution_due)
            .limit(BATCH)
        )
    )
    for ticket, username in candidates.all():
        if now >= rules.sla.reminder_at(ticket.created_at, ticket.resolution_due):
            ticket.reminded_at = now
            session.add(
                TicketEvent(
                    ticket_id=ticket.id, at=now, type="sla_reminder", actor="sla",
                    to_value=username, note=f"resolution due {ticket.resolution_due.isoformat()}",
                )
            )
            result.reminded += 1
    return result


def _breach(session: AsyncSession, ticket: Ticket, target: str, due: str, now: datetime) -> None:
    session.add(
        TicketEvent(
            ticket_id=ticket.id, at=now, type="sla_breached", actor="sla", to_value=target,
            note=f"{target.replace('_', ' ')} was due {due}",
        )
    )
    if ticket.escalated_at is None:
        ticket.escalated_at = now
        session.add(
            TicketEvent(
                ticket_id=ticket.id, at=now, type="escalated", actor="sla",
                from_value=ticket.priority, to_value=ticket.priority,
                note=f"{target.replace('_', ' ')} deadline missed",
            )
        )
