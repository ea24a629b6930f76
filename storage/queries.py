"""Read models for the desk and the API: ticket lists (keyset-paged) and one ticket in full."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from sqlalchemy import and_, bindparam, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from storage.errors import Invalid, NotFound
from storage.lifecycle import PRIORITIES, format_number, parse_number
from storage.models import (
    Agent,
    Attachment,
    ChannelIdentity,
    Customer,
    Message,
    Ticket,
    TicketEvent,
)


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
    # False once the platform refused a message (they blocked the bot, deleted the account):
    # the outbox stops sending to them until they write again (storage/outbox.set_reachable).
    reachable: bool = True
    unreachable_reason: str | None = None


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


@dataclass(frozen=True, slots=True)
class _Shape:
    """What a list statement's SQL depends on; the values travel as parameters, so one
    statement serves every request of the same shape."""

    statuses: int  # statuses asked for; with `merge`, each is read on its own
    merge: bool
    # With a deadline filter each status is read per priority (this many); otherwise the
    # priorities asked for are one IN list.
    split_priorities: int
    priority_list: bool
    categories: bool
    channels: bool
    assignee: bool
    unassigned: bool
    deadline: Literal["breached", "soon"] | None
    search: Literal["number", "text"] | None
    after: bool
    limit: int


def _shape_and_values(
    f: TicketFilter, cursor: str | None, limit: int
) -> tuple[_Shape, dict[str, Any]]:
    """The statement shape of one list request and the values for its parameters."""
    merge = len(f.statuses) > 1 or f.deadline is not None
    split = list(f.priorities or PRIORITIES) if f.deadline is not None else []
    values: dict[str, Any] = {}
    if merge:
        values |= {f"status_{i}": status for i, status in enumerate(f.statuses)}
    elif f.statuses:
        values["statuses"] = list(f.statuses)
    values |= {f"priority_{j}": priority for j, priority in enumerate(split)}
    if f.priorities and not split:
        values["priorities"] = list(f.priorities)
    if f.categories:
        values["categories"] = list(f.categories)
    if f.channels:
        values["channels"] = list(f.channels)
    if f.assignee_id is not None:
        values["assignee_id"] = f.assignee_id
    if f.deadline is not None:
        d = f.deadline
        values["now"] = d.now
        if d.kind == "soon":
            for j, priority in enumerate(split):
                first, resolution = d.horizons.get(priority, (timedelta(hours=1),) * 2)
                values[f"soon_first_{j}"] = d.now + first
                values[f"soon_resolution_{j}"] = d.now + resolution
    search: Literal["number", "text"] | None = None
    if f.q:
        number = parse_number(f.q) if f.q.strip().upper().startswith("CL-") else None
        if number is not None:
            search, values["number"] = "number", number
        else:
            escaped = f.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            search, values["like"] = "text", f"%{escaped}%"
            values["order_number"] = f.q.strip()
    if cursor:
        priority, due, ticket_id = decode_cursor(cursor)
        values |= {"after_priority": priority, "after_due": due, "after_id": ticket_id}
    shape = _Shape(
        statuses=len(f.statuses),
        merge=merge,
        split_priorities=len(split),
        priority_list=bool(f.priorities) and not split,
        categories=bool(f.categories),
        channels=bool(f.channels),
        assignee=f.assignee_id is not None,
        unassigned=f.unassigned,
        deadline=f.deadline.kind if f.deadline is not None else None,
        search=search,
        after=bool(cursor),
        limit=limit,
    )
    return shape, values


def _conditions(shape: _Shape) -> list[Any]:
    """The filters every read of a list shares (_read adds the status, the priority when read
    one by one, the deadline and the cursor)."""
    c = TICKETS.c
    out: list[Any] = []
    if shape.priority_list:
        out.append(c.priority.in_(bindparam("priorities", expanding=True)))
    if shape.categories:
        out.append(c.category.in_(bindparam("categories", expanding=True)))
    if shape.channels:
        out.append(c.channel.in_(bindparam("channels", expanding=True)))
    if shape.assignee:
        out.append(c.assignee_id == bindparam("assignee_id"))
    if shape.unassigned:
        out.append(c.assignee_id.is_(None))
    if shape.search == "number":
        out.append(c.id == bindparam("number"))
    elif shape.search == "text":
        like = bindparam("like", type_=c.subject.type)
        out.append(
            or_(
                c.subject.ilike(like, escape="\\"),
                c.description.ilike(like, escape="\\"),
                c.order_number == bindparam("order_number"),
            )
        )
    return out


def _deadline_clause(kind: str, priority: int | None) -> Any:
    """`priority`: the index of the priority this read is limited to (always given for
    `soon`, whose horizon depends on it)."""
    c = TICKETS.c
    now = bindparam("now", type_=c.resolution_due.type)
    owes_first = c.first_response_at.is_(None)
    if kind == "breached":
        return or_(c.resolution_due <= now, and_(owes_first, c.first_response_due <= now))
    not_yet = and_(c.resolution_due > now, or_(~owes_first, c.first_response_due > now))
    return and_(
        not_yet,
        or_(
            c.resolution_due <= bindparam(f"soon_resolution_{priority}", type_=now.type),
            and_(owes_first, c.first_response_due <= bindparam(f"soon_first_{priority}",
                                                               type_=now.type)),
        ),
    )


def _after() -> Any:
    c = TICKETS.c
    priority = bindparam("after_priority", type_=c.priority.type)
    due = bindparam("after_due", type_=c.resolution_due.type)
    # Spelled out rather than as a row-value comparison so both SQLite and PostgreSQL
    # walk the (priority, resolution_due, id) index.
    return or_(
        c.priority > priority,
        and_(c.priority == priority, c.resolution_due > due),
        and_(c.priority == priority, c.resolution_due == due, c.id > bindparam("after_id")),
    )


def _read(shape: _Shape, status: int | None, priority: int | None) -> Any:
    """One index-ordered read of page keys: of one status (and priority) when given."""
    c = TICKETS.c
    keys = select(c.id, c.priority, c.resolution_due).where(*_conditions(shape))
    if shape.statuses and not shape.merge:
        keys = keys.where(c.status.in_(bindparam("statuses", expanding=True)))
    if status is not None:
        keys = keys.where(c.status == bindparam(f"status_{status}", type_=c.status.type))
    if priority is not None:
        keys = keys.where(c.priority == bindparam(f"priority_{priority}", type_=c.priority.type))
    if shape.deadline is not None:
        keys = keys.where(_deadline_clause(shape.deadline, priority))
    if shape.after:
        keys = keys.where(_after())
    return keys.order_by(c.priority, c.resolution_due, c.id).limit(shape.limit)


@lru_cache(maxsize=512)
def _keys_statement(shape: _Shape) -> Any:
    """(id, priority, resolution_due) of one page. With `merge`: one index-ordered read per
    status, merged, instead of a single `status IN (...)`. With a deadline filter each status
    is also read per priority: the deadline condition then bounds a range of the urgency index
    rather than filtering a walk over every open ticket."""
    if not shape.merge:
        return _read(shape, None, None)
    statuses: list[int | None] = list(range(shape.statuses)) or [None]
    priorities: list[int | None] = list(range(shape.split_priorities)) or [None]
    parts = [
        select(_read(shape, status, priority).subquery())
        for status in statuses
        for priority in priorities
    ]
    merged = union_all(*parts).subquery()
    # The page is cut here, before the joins: otherwise every read's keys (up to 12 x limit)
    # were joined to tickets, customers and agents and then sorted.
    return (
        select(merged)
        .order_by(merged.c.priority, merged.c.resolution_due, merged.c.id)
        .limit(shape.limit)
    )


@lru_cache(maxsize=512)
def _list_statement(shape: _Shape) -> Any:
    """Built once per shape: a merge of up to 12 small reads costs tens of milliseconds of
    Python to assemble and compile, far more than the database takes to run it."""
    keys = _keys_statement(shape).subquery()
    return (
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
        .limit(shape.limit)
    )


def page_keys(f: TicketFilter, cursor: str | None, limit: int) -> Any:
    """The page-keys statement of a list with its values bound (for EXPLAIN and benches)."""
    shape, values = _shape_and_values(f, cursor, limit)
    return _keys_statement(shape).params(values)


def _filtered(query: Any, f: TicketFilter) -> Any:
    """`query` limited by the filters of `f` but a deadline, with its statuses as one IN list
    and the values bound (bench.store builds the version before list_tickets merged with it)."""
    if f.deadline is not None:
        raise ValueError("_filtered: a deadline filter needs list_tickets")
    shape, values = _shape_and_values(replace(f, statuses=[]), None, 1)
    query = query.where(*_conditions(shape))
    if f.statuses:
        query = query.where(TICKETS.c.status.in_(f.statuses))
    return query.params(values)


async def list_tickets(
    session: AsyncSession, f: TicketFilter, *, limit: int, cursor: str | None
) -> tuple[list[TicketRow], str | None]:
    """Most urgent first: priority, then the nearest resolution deadline, then the oldest.

    With several statuses, each status is read in index order on its own and the pieces are
    merged: a planner left with `status IN (...)` would otherwise collect every matching row
    and sort them all (SQLite: 100 ms at 100,000 tickets instead of under 1 ms). The statement
    is built once per shape of filter (see _list_statement); the values are its parameters."""
    shape, values = _shape_and_values(f, cursor, limit + 1)
    result = await session.execute(_list_statement(shape), values)
    rows = [
        TicketRow(
            r,
            CustomerSummary(r.customer_id, r.customer_name, r.customer_phone, r.customer_email),
            r.assignee_name,
        )
        for r in result.all()
    ]
    next_cursor = encode_cursor(rows[limit - 1].ticket) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def ticket_detail(session: AsyncSession, ticket_id: int) -> TicketDetail:
    row = (
        await session.execute(
            select(Ticket, Customer, Agent.username, ChannelIdentity.reachable,
                   ChannelIdentity.unreachable_reason)
            .join(Customer, Customer.id == Ticket.customer_id)
            .outerjoin(Agent, Agent.id == Ticket.assignee_id)
            .outerjoin(ChannelIdentity, ChannelIdentity.id == Ticket.identity_id)
            .where(Ticket.id == ticket_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"no ticket {format_number(ticket_id)}")
    ticket, customer, assignee, reachable, unreachable_reason = row
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
        ticket, customer, assignee, events, messages, merged_from, attachments,
        reachable=reachable is not False, unreachable_reason=unreachable_reason,
    )
