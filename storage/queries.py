"""Read models for the desk and the API: ticket lists (keyset-paged) and one ticket in full."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import and_, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from storage.errors import Invalid, NotFound
from storage.lifecycle import PRIORITIES, format_number, parse_number
from storage.models import Agent, Attachment, Customer, Message, Ticket, TicketEvent


@dataclass(frozen=True)
class DeadlineFilter:
    """`breached`: a deadline the team still owes has passed; `soon`: none has, but one falls
    due within its priority's horizon (first response, resolution). The caller limits the
    statuses to the open ones: the SLA clock does not run elsewhere."""

    kind: Literal["breached", "soon"]
    now: datetime
    horizons: Mapping[str, tuple[timedelta, timedelta]] = field(default_factory=dict)


@dataclass
class TicketFilter:
    statuses: list[str] = field(default_factory=list)
    priorities: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    assignee_id: int | None = None
    unassigned: bool = False
    q: str | None = None
    deadline: DeadlineFilter | None = None


@dataclass
class TicketRow:
    """A list row: `ticket` and `customer` carry the columns as attributes (plain rows, not
    ORM objects, because hydrating identity-mapped objects cost more than the query)."""

    ticket: Any
    customer: Any
    assignee: str | None


@dataclass(frozen=True, slots=True)
class CustomerSummary:
    id: int
    name: str | None
    phone: str | None
    email: str | None


TICKETS = Ticket.__table__
CUSTOMERS = Customer.__table__
AGENTS = Agent.__table__


@dataclass
class TicketDetail:
    ticket: Ticket
    customer: Customer
    assignee: str | None
    events: list[TicketEvent]
    messages: list[Message]
    # Tickets merged into this one: their messages and attachments are shown here too.
    merged_from: list[int] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)


def encode_cursor(ticket: Any) -> str:
    raw = json.dumps([ticket.priority, ticket.resolution_due.isoformat(), ticket.id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, datetime, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        priority, due, ticket_id = json.loads(base64.urlsafe_b64decode(padded))
        return str(priority), datetime.fromisoformat(due), int(ticket_id)
    except (ValueError, TypeError) as exc:
        raise Invalid("cursor: not a cursor this API gave out") from exc


def _filtered(query: Any, f: TicketFilter) -> Any:
    if f.statuses:
        query = query.where(Ticket.status.in_(f.statuses))
    if f.priorities:
        query = query.where(Ticket.priority.in_(f.priorities))
    if f.categories:
        query = query.where(Ticket.category.in_(f.categories))
    if f.channels:
        query = query.where(Ticket.channel.in_(f.channels))
    if f.assignee_id is not None:
        query = query.where(Ticket.assignee_id == f.assignee_id)
    if f.unassigned:
        query = query.where(Ticket.assignee_id.is_(None))
    if f.deadline is not None:
        query = query.where(_deadline_clause(f.deadline, f.priorities))
    if f.q:
        number = parse_number(f.q) if f.q.strip().upper().startswith("CL-") else None
        if number is not None:
            query = query.where(Ticket.id == number)
        else:
            like = "%" + f.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(
                or_(
                    Ticket.subject.ilike(like, escape="\\"),
                    Ticket.description.ilike(like, escape="\\"),
                    Ticket.order_number == f.q.strip(),
                )
            )
    return query


def _deadline_clause(d: DeadlineFilter, priorities: list[str]) -> Any:
    owes_first = TICKETS.c.first_response_at.is_(None)
    if d.kind == "breached":
        return or_(
            TICKETS.c.resolution_due <= d.now,
            and_(owes_first, TICKETS.c.first_response_due <= d.now),
        )
    not_yet = and_(
        TICKETS.c.resolution_due > d.now,
        or_(~owes_first, TICKETS.c.first_response_due > d.now),
    )
    soon = []
    for priority in priorities or PRIORITIES:
        first, resolution = d.horizons.get(priority, (timedelta(hours=1), timedelta(hours=1)))
        soon.append(
            and_(
                TICKETS.c.priority == priority,
                or_(
                    TICKETS.c.resolution_due <= d.now + resolution,
                    and_(owes_first, TICKETS.c.first_response_due <= d.now + first),
                ),
            )
        )
    return and_(not_yet, or_(*soon))


def _after(cursor: str) -> Any:
    priority, due, ticket_id = decode_cursor(cursor)
    # Spelled out rather than as a row-value comparison so both SQLite and PostgreSQL
    # walk the (priority, resolution_due, id) index.
    return or_(
        TICKETS.c.priority > priority,
        and_(TICKETS.c.priority == priority, TICKETS.c.resolution_due > due),
        and_(
            TICKETS.c.priority == priority,
            TICKETS.c.resolution_due == due,
            TICKETS.c.id > ticket_id,
        ),
    )


def _page_keys(f: TicketFilter, cursor: str | None, limit: int, status: str | None) -> Any:
    keys: Any = _filtered(select(TICKETS.c.id, TICKETS.c.priority, TICKETS.c.resolution_due), f)
    if status is not None:
        keys = keys.where(TICKETS.c.status == status)
    if cursor:
        keys = keys.where(_after(cursor))
    order = (TICKETS.c.priority, TICKETS.c.resolution_due, TICKETS.c.id)
    return keys.order_by(*order).limit(limit)


def page_keys(f: TicketFilter, cursor: str | None, limit: int, *, merge: bool) -> Any:
    """(id, priority, resolution_due) of one page. `merge`: one index-ordered read per status,
    merged, instead of a single `status IN (...)`. With a deadline filter each status is also
    read per priority: the deadline condition then bounds a range of the urgency index rather
    than filtering a walk over every open ticket."""
    if not merge:
        return _page_keys(f, cursor, limit, None)
    statuses: list[str | None] = list(f.statuses) or [None]
    if f.deadline is not None:
        pieces = [
            (status, replace(f, statuses=[], priorities=[priority]))
            for status in statuses
            for priority in (f.priorities or PRIORITIES)
        ]
    else:
        pieces = [(status, replace(f, statuses=[])) for status in statuses]
    parts = [select(_page_keys(one, cursor, limit, s).subquery()) for s, one in pieces]
    return select(union_all(*parts).subquery())


async def list_tickets(
    session: AsyncSession, f: TicketFilter, *, limit: int, cursor: str | None
) -> tuple[list[TicketRow], str | None]:
    """Most urgent first: priority, then the nearest resolution deadline, then the oldest.

    With several statuses, each status is read in index order on its own and the pieces are
    merged: a planner left with `status IN (...)` would otherwise collect every matching row
    and sort them all (SQLite: 100 ms at 100,000 tickets instead of under 1 ms)."""
    merge = len(f.statuses) > 1 or f.deadline is not None
    keys = page_keys(f, cursor, limit + 1, merge=merge).subquery()
    query = (
        select(
            TICKETS,
            CUSTOMERS.c.name.label("customer_name"),
            CUSTOMERS.c.phone.label("customer_phone"),
            CUSTOMERS.c.email.label("customer_email"),
            AGENTS.c.username.label("assignee_name"),
        )
        .join(keys, keys.c.id == TICKETS.c.id)
        .join(CUSTOMERS, CUSTOMERS.c.id == TICKETS.c.customer_id)
        .outerjoin(AGENTS, AGENTS.c.id == TICKETS.c.assignee_id)
        .order_by(keys.c.priority, keys.c.resolution_due, keys.c.id)
        .limit(limit + 1)
    )
    rows = [
        TicketRow(
            r,
            CustomerSummary(r.customer_id, r.customer_name, r.customer_phone, r.customer_email),
            r.assignee_name,
        )
        for r in (await session.execute(query)).all()
    ]
    next_cursor = encode_cursor(rows[limit - 1].ticket) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def ticket_detail(session: AsyncSession, ticket_id: int) -> TicketDetail:
    row = (
        await session.execute(
            select(Ticket, Customer, Agent.username)
            .join(Customer, Customer.id == Ticket.customer_id)
            .outerjoin(Agent, Agent.id == Ticket.assignee_id)
            .where(Ticket.id == ticket_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"no ticket {format_number(ticket_id)}")
    ticket, customer, assignee = row
    events = list(
        (
            await session.scalars(
                select(TicketEvent)
                .where(TicketEvent.ticket_id == ticket_id)
                .order_by(TicketEvent.id)
            )
        ).all()
    )
    merged_from = list(
        (
            await session.scalars(
                select(Ticket.id).where(Ticket.merged_into_id == ticket_id).order_by(Ticket.id)
            )
        ).all()
    )
    shown = [ticket_id, *merged_from]
    messages = list(
        (
            await session.scalars(
                select(Message).where(Message.ticket_id.in_(shown)).order_by(Message.id)
            )
        ).all()
    )
    attachments = list(
        (
            await session.scalars(
                select(Attachment)
                .options(defer(Attachment.content))  # listed, not downloaded
                .where(Attachment.ticket_id.in_(shown))
                .order_by(Attachment.id)
            )
        ).all()
    )
    return TicketDetail(
        ticket, customer, assignee, events, messages, merged_from, attachments
    )
