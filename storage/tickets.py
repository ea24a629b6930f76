"""The ticket service: every change to a ticket writes its event and, when the customer should
hear of it, its outbox row, in the caller's transaction (`async with store.transaction()`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import asyncpg
from sqlalchemy import Table, bindparam, insert, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage import outbox
from storage.clock import Clock, utc_now
from storage.direct import Direct
from storage.errors import Conflict, Invalid, NotFound
from storage.lifecycle import (
    CHANNELS,
    DONE_STATUSES,
    KINDS,
    PRIORITIES,
    RESPONDING_STATUSES,
    check_move,
    default_priority,
    format_number,
)
from storage.models import (
    Agent,
    ChannelIdentity,
    Customer,
    Message,
    OutboxMessage,
    Survey,
    Ticket,
    TicketEvent,
)
from storage.sla import SlaPolicy, resume_deadlines

SUBJECT_CHARS = 80
MAX_TEXT = 20_000
# CONTRACT §5 complaint categories (nlu/types.py holds the same list; storage imports no nlu).
CATEGORIES: tuple[str, ...] = (
    "service_attitude", "service_speed", "product_quality", "product_safety", "billing",
    "pricing", "delivery", "returns", "store_environment", "website_app", "other",
)


@dataclass(frozen=True)
class TicketRules:
    sla: SlaPolicy
    clock: Clock = utc_now


@dataclass
class NewTicket:
    kind: str
    channel: str
    description: str
    customer_id: int
    identity_id: int | None = None
    subject: str | None = None
    category: str | None = None
    priority: str | None = None
    order_number: str | None = None
    store: str | None = None
    language: str | None = None
    needs_human: bool = False
    actor: str = "system"
    intake_key: str | None = None


def _subject(description: str) -> str:
    first = " ".join(description.split())
    return first if len(first) <= SUBJECT_CHARS else first[: SUBJECT_CHARS - 1] + "…"


def _event(ticket: Ticket, now: datetime, type_: str, actor: str, **kw: Any) -> TicketEvent:
    return TicketEvent(ticket_id=ticket.id, at=now, type=type_, actor=actor, **kw)


async def _notify(
    session: AsyncSession, ticket: Ticket, event: TicketEvent, kind: str, payload: dict[str, Any]
) -> None:
    """An outbox row for the customer, if the ticket came from a channel that can reach them."""
    if ticket.identity_id is None:
        return
    await session.flush()  # the event id makes the outbox key unique per cause
    outbox.enqueue(
        session,
        key=f"event:{event.id}",
        channel=ticket.channel,
        identity_id=ticket.identity_id,
        ticket_id=ticket.id,
        kind=kind,
        payload={"number": format_number(ticket.id), "language": ticket.language} | payload,
        now=event.at,
    )


def validate_new(new: NewTicket) -> str:
    """Checks a new ticket before anything is written; returns its priority."""
    if new.kind not in KINDS:
        raise Invalid(f"unknown kind {new.kind!r}")
    if new.channel not in CHANNELS:
        raise Invalid(f"unknown channel {new.channel!r}")
    description = new.description.strip()
    if not description:
        raise Invalid("description is empty")
    if len(description) > MAX_TEXT:
        raise Invalid(f"description is longer than {MAX_TEXT} characters")
    priority = new.priority or default_priority(new.kind, new.category)
    if priority not in PRIORITIES:
        raise Invalid(f"unknown priority {priority!r}")
    return priority


def ticket_row(rules: TicketRules, new: NewTicket, now: datetime) -> dict[str, Any]:
    """The columns of a new ticket (shared by the one-off and the batched intake)."""
    priority = validate_new(new)
    first_due, resolution_due = rules.sla.deadlines(priority, new.category, now)
    description = new.description.strip()
    return {
        "kind": new.kind,
        "status": "new",
        "priority": priority,
        "category": new.category,
        "channel": new.channel,
        "customer_id": new.customer_id,
        "identity_id": new.identity_id,
        "subject": (new.subject or _subject(description))[:200],
        "description": description,
        "order_number": new.order_number,
        "store": new.store,
        "language": new.language,
        "needs_human": new.needs_human,
        "created_at": now,
        "updated_at": now,
        "first_response_due": first_due,
        "resolution_due": resolution_due,
        "intake_key": new.intake_key,
        "version": 1,
    }


def created_payload(row: dict[str, Any], ticket_id: int) -> dict[str, Any]:
    """What the customer's confirmation carries."""
    return {
        "number": format_number(ticket_id),
        "language": row["language"],
        "kind": row["kind"],
        "category": row["category"],
        "priority": row["priority"],
        "first_response_due": row["first_response_due"].isoformat(),
    }


async def create_ticket(session: AsyncSession, rules: TicketRules, new: NewTicket) -> Ticket:
    """A ticket inside the caller's transaction (so a chat flow can write its conversation state
    in the same one). With an `intake_key` already used, the existing ticket comes back."""
    now = rules.clock()
    row = ticket_row(rules, new, now)
    if new.intake_key:
        existing = (
            await session.scalars(select(Ticket).where(Ticket.intake_key == new.intake_key))
        ).first()
        if existing is not None:
            return existing
    ticket = Ticket(**row)
    session.add(ticket)
    await session.flush()
    event = _event(ticket, now, "created", new.actor, to_value="new")
    session.add(event)
    if ticket.identity_id is not None:
        await session.flush()
        outbox.enqueue(
            session,
            key=f"event:{event.id}",
            channel=ticket.channel,
            identity_id=ticket.identity_id,
            ticket_id=ticket.id,
            kind="ticket_created",
            payload=created_payload(row, ticket.id),
            now=now,
        )
    return ticket


@dataclass(frozen=True, slots=True)
class CreatedTicket:
    """What `create_ticket_core` wrote: the ticket's id and, when it made the ticket for a
    customer reachable in a channel, the confirmation's outbox row (its id and columns)."""

    id: int
    created: bool  # False when the intake_key had already made this ticket
    confirmation_id: int | None = None
    confirmation: dict[str, Any] | None = None


_TICKETS = cast(Table, Ticket.__table__)
_EVENTS = cast(Table, TicketEvent.__table__)
_OUTBOX = cast(Table, OutboxMessage.__table__)
_EVENT_COLUMNS = ("ticket_id", "at", "type", "actor", "to_value")
# The keys of `ticket_row` (tests/integration/test_ticket_service.py compares the rows both
# create paths write, so a column added there and not here fails a test).
_TICKET_COLUMNS = (
    "kind", "status", "priority", "category", "channel", "customer_id", "identity_id",
    "subject", "description", "order_number", "store", "language", "needs_human", "created_at",
    "updated_at", "first_response_due", "resolution_due", "intake_key", "version",
)


def _pg_ticket_and_event() -> Any:
    """PostgreSQL: the ticket and its `created` event in one statement (the event inserted
    from the ticket CTE's RETURNING). A used intake_key inserts neither and returns no row.
    Every bound name is prefixed, so none can be taken for a column of the outer INSERT."""
    ticket = (
        pg_insert(_TICKETS)
        .values({k: bindparam(f"t_{k}", type_=_TICKETS.c[k].type) for k in _TICKET_COLUMNS})
        .on_conflict_do_nothing(index_elements=[_TICKETS.c.intake_key])
        .returning(_TICKETS.c.id)
        .cte("new_ticket")
    )
    return (
        insert(_EVENTS)
        .from_select(
            list(_EVENT_COLUMNS),
            select(
                ticket.c.id,
                bindparam("e_at", type_=_EVENTS.c.at.type),
                literal("created", _EVENTS.c.type.type),
                bindparam("e_actor", type_=_EVENTS.c.actor.type),
                literal("new", _EVENTS.c.to_value.type),
            ),
        )
        .returning(_EVENTS.c.ticket_id, _EVENTS.c.id)
    )


# Built once each, so SQLAlchemy compiles them once (its statement cache).
_PG_TICKET_AND_EVENT = _pg_ticket_and_event()
_SQLITE_TICKET = (
    sqlite_insert(_TICKETS)
    .on_conflict_do_nothing(index_elements=[_TICKETS.c.intake_key])
    .returning(_TICKETS.c.id)
)
_INSERT_EVENT = insert(_EVENTS).returning(_EVENTS.c.id)
_INSERT_CONFIRMATION = insert(_OUTBOX).returning(_OUTBOX.c.id)


def _confirmation(
    new: NewTicket, row: dict[str, Any], ticket_id: int, event_id: int, due: datetime,
    now: datetime,
) -> dict[str, Any]:
    """The outbox row that tells the customer their ticket's number (`ticket_created`), keyed
    by the `created` event so it is written once."""
    return {
        "key": f"event:{event_id}", "channel": new.channel, "identity_id": new.identity_id,
        "ticket_id": ticket_id, "kind": "ticket_created",
        "payload": created_payload(row, ticket_id), "status": outbox.PENDING, "attempts": 0,
        "next_attempt_at": due, "created_at": now,
    }


async def create_ticket_core(
    session: AsyncSession,
    rules: TicketRules,
    new: NewTicket,
    *,
    confirmation_due: datetime | None = None,
) -> CreatedTicket:
    """`create_ticket` in Core statements, for the chat's hot path: the same rows (ticket,
    `created` event, the confirmation's outbox row) without the ORM's unit of work. On
    PostgreSQL two round trips (ticket + event, then the confirmation), on SQLite three; the
    ORM path takes a SELECT of the intake key and three flushes. A used intake_key writes
    nothing and returns the existing ticket (`created=False`, no confirmation: the caller
    finds the one written the first time). `confirmation_due` holds the confirmation back
    from the outbox worker (a chat sends it itself, as the turn's reply)."""
    now = rules.clock()
    row = ticket_row(rules, new, now)
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        params = {f"t_{k}": v for k, v in row.items()}
        found = (await conn.execute(
            _PG_TICKET_AND_EVENT, params | {"e_at": now, "e_actor": new.actor}
        )).first()
        ticket_id, event_id = (found[0], found[1]) if found is not None else (None, None)
    else:
        ticket_id = (await conn.execute(_SQLITE_TICKET, row)).scalar()
        event_id = None
        if ticket_id is not None:
            event_id = (await conn.execute(_INSERT_EVENT, {
                "ticket_id": ticket_id, "at": now, "type": "created", "actor": new.actor,
                "to_value": "new",
            })).scalar_one()
    if ticket_id is None or event_id is None:
        existing = (await conn.execute(
            select(Ticket.id).where(Ticket.intake_key == new.intake_key)
        )).scalar_one()
        return CreatedTicket(id=existing, created=False)
    if new.identity_id is None:
        return CreatedTicket(id=ticket_id, created=True)
    confirmation = _confirmation(new, row, ticket_id, event_id, confirmation_due or now, now)
    confirmation_id = (await conn.execute(_INSERT_CONFIRMATION, confirmation)).scalar_one()
    return CreatedTicket(ticket_id, True, confirmation_id, confirmation)


_CONFIRMATION_COLUMNS = (
    "key", "channel", "identity_id", "ticket_id", "kind", "payload", "status", "attempts",
    "next_attempt_at", "created_at",
)
# The same two statements compiled once for asyncpg (storage/direct.py), for a chat turn that
# runs on a raw connection (create_ticket_raw).
_ASYNCPG = PGDialect_asyncpg()
_DIRECT_TICKET_AND_EVENT = Direct.compile(_PG_TICKET_AND_EVENT, _ASYNCPG)
_DIRECT_CONFIRMATION = Direct.compile(
    insert(_OUTBOX)
    .values({c: bindparam(f"o_{c}", type_=_OUTBOX.c[c].type) for c in _CONFIRMATION_COLUMNS})
    .returning(_OUTBOX.c.id),
    _ASYNCPG,
)
_DIRECT_BY_INTAKE_KEY = Direct.compile(
    select(_TICKETS.c.id).where(_TICKETS.c.intake_key == bindparam("k")), _ASYNCPG
)


async def create_ticket_raw(
    raw: asyncpg.Connection, rules: TicketRules, new: NewTicket, *, confirmation_due: datetime
) -> CreatedTicket:
    """`create_ticket_core` on PostgreSQL for a chat turn on a raw asyncpg connection, inside
    the transaction the caller opened on it (the turn's own write joins it): the same rows in
    the same two round trips, without SQLAlchemy's session around them. A used intake_key
    writes nothing and returns the existing ticket with `created=False`."""
    now = rules.clock()
    row = ticket_row(rules, new, now)
    params = {f"t_{k}": v for k, v in row.items()} | {"e_at": now, "e_actor": new.actor}
    found = await _DIRECT_TICKET_AND_EVENT.fetchrow(raw, params)
    if found is None:
        existing = await _DIRECT_BY_INTAKE_KEY.fetchrow(raw, {"k": new.intake_key})
        return CreatedTicket(id=int(existing[0]), created=False)
    ticket_id, event_id = int(found[0]), int(found[1])
    if new.identity_id is None:
        return CreatedTicket(id=ticket_id, created=True)
    confirmation = _confirmation(new, row, ticket_id, event_id, confirmation_due, now)
    values = {f"o_{k}": v for k, v in confirmation.items()}
    values["o_payload"] = json.dumps(confirmation["payload"], ensure_ascii=False)
    confirmation_id = int((await _DIRECT_CONFIRMATION.fetchrow(raw, values))[0])
    return CreatedTicket(ticket_id, True, confirmation_id, confirmation)


async def load_ticket(session: AsyncSession, ticket_id: int, *, for_update: bool = False) -> Ticket:
    query = select(Ticket).where(Ticket.id == ticket_id)
    if for_update:
        # Two agents changing one ticket queue on the row instead of overwriting each other.
        query = query.with_for_update()
    ticket = (await session.scalars(query)).first()
    if ticket is None:
        raise NotFound(f"no ticket {format_number(ticket_id)}")
    return ticket


async def move_ticket(
    session: AsyncSession,
    rules: TicketRules,
    ticket_id: int,
    target: str,
    *,
    actor: str,
    note: str | None = None,
    by_agent: bool = True,
    expected: str | None = None,
    notify_customer: bool = True,
) -> Ticket:
    """`expected`: the status the person saw; if someone moved the ticket meanwhile, Conflict
    (in words) instead of acting on a ticket they have not seen. `notify_customer=False` when
    the customer caused the move and the chat has already told them (no second message)."""
    ticket = await load_ticket(session, ticket_id, for_update=True)
    if expected is not None and ticket.status != expected:
        raise await changed_meanwhile(session, ticket, "status", ticket.status)
    check_move(ticket.status, target)
    now = rules.clock()
    previous = ticket.status
    if previous == "waiting_customer" and ticket.paused_at is not None:
        ticket.first_response_due, ticket.resolution_due = resume_deadlines(
            ticket.paused_at,
            now,
            ticket.first_response_due,
            ticket.resolution_due,
            ticket.first_response_at is not None,
        )
        ticket.paused_at = None
    if target == "waiting_customer":
        ticket.paused_at = now
    if target == "resolved":
        ticket.resolved_at = now
    elif target == "closed":
        ticket.closed_at = now
    reopen = previous in DONE_STATUSES and target not in DONE_STATUSES
    if reopen:
        ticket.resolved_at = None
        ticket.closed_at = None
    if by_agent and ticket.first_response_at is None and target in RESPONDING_STATUSES:
        ticket.first_response_at = now
    ticket.status = target
    ticket.updated_at = now
    kind = "reopened" if reopen else "status"
    event = _event(
        ticket, now, kind, actor, from_value=previous, to_value=target, note=note
    )
    session.add(event)
    if notify_customer:
        await _notify(
            session,
            ticket,
            event,
            "status_changed",
            {
                "from": previous,
                "status": target,
                "resolution_due": ticket.resolution_due.isoformat()
                if target not in DONE_STATUSES
                else None,
            },
        )
    return ticket


async def reply(
    session: AsyncSession,
    rules: TicketRules,
    ticket_id: int,
    text: str,
    *,
    public: bool,
    agent: Agent,
) -> Message:
    text = text.strip()
    if not text:
        raise Invalid("text is empty")
    if len(text) > MAX_TEXT:
        raise Invalid(f"text is longer than {MAX_TEXT} characters")
    ticket = await load_ticket(session, ticket_id, for_update=True)
    now = rules.clock()
    message = Message(
        ticket_id=ticket.id,
        direction="out",
        author_type="agent",
        author_name=agent.display_name or agent.username,
        text=text,
        public=public,
        channel=ticket.channel,
        created_at=now,
    )
    session.add(message)
    ticket.updated_at = now
    actor = f"agent:{agent.username}"
    event = _event(ticket, now, "reply" if public else "note", actor, note=text[:500])
    session.add(event)
    if public:
        if ticket.first_response_at is None:
            ticket.first_response_at = now
        await _notify(
            session,
            ticket,
            event,
            "agent_reply",
            {"text": text, "agent": agent.display_name or agent.username},
        )
    await session.flush()
    return message


async def assign(
    session: AsyncSession, rules: TicketRules, ticket_id: int, username: str | None, *, actor: str
) -> Ticket:
    ticket = await load_ticket(session, ticket_id, for_update=True)
    agent: Agent | None = None
    if username is not None:
        agent = (await session.scalars(select(Agent).where(Agent.username == username))).first()
        if agent is None or not agent.active:
            raise Invalid(f"agent: no active agent named {username!r}")
    previous = None
    if ticket.assignee_id is not None:
        previous = await session.scalar(
            select(Agent.username).where(Agent.id == ticket.assignee_id)
        )
    now = rules.clock()
    ticket.assignee_id = agent.id if agent else None
    ticket.updated_at = now
    session.add(
        _event(
            ticket, now, "assigned", actor, from_value=previous,
            to_value=agent.username if agent else None,
        )
    )
    return ticket


async def changed_meanwhile(
    session: AsyncSession, ticket: Ticket, field: str, current: str | None
) -> Conflict:
    """The 409 a person reads when their form was built from an older state of the ticket."""
    types = {"status": ("status", "reopened"), "priority": ("priority",),
             "category": ("category",)}.get(field, (field,))
    who = await session.scalar(
        select(TicketEvent.actor)
        .where(TicketEvent.ticket_id == ticket.id, TicketEvent.type.in_(types))
        .order_by(TicketEvent.id.desc())
        .limit(1)
    )
    by = f" by {who.removeprefix('agent:')}" if who else ""
    return Conflict(
        f"{format_number(ticket.id)} was changed meanwhile{by}: its {field} is now "
        f"{current or 'none'}. Nothing was changed; look at the ticket again and retry."
    )


def _deadline_text(number: str, language: str | None, due: datetime) -> str:
    """The customer's words for a moved promise (storage cannot use the bot's catalogue)."""
    when = due.strftime("%Y-%m-%d %H:%M UTC")
    if language == "zh":
        return f"关于 {number} 的更新：我们调整了处理安排，预计在 {when} 之前解决。"
    return (
        f"Update on {number}: we re-prioritised your request and now aim to resolve it "
        f"by {when}."
    )


async def _retarget(
    session: AsyncSession,
    rules: TicketRules,
    ticket: Ticket,
    field: str,
    value: str | None,
    *,
    actor: str,
    note: str | None,
    expected: str | None,
    check_expected: bool,
) -> Ticket:
    """A priority or category override. The deadlines move by the difference between the old
    and the new SLA target, which is what creating the ticket with the new values would have
    given, pauses while waiting on the customer included."""
    previous: str | None = getattr(ticket, field)
    if check_expected and previous != expected:
        raise await changed_meanwhile(session, ticket, field, previous)
    if previous == value:
        return ticket
    now = rules.clock()
    old = rules.sla.target(ticket.priority, ticket.category)
    setattr(ticket, field, value)
    new = rules.sla.target(ticket.priority, ticket.category)
    old_due = ticket.resolution_due
    ticket.first_response_due += new.first_response - old.first_response
    ticket.resolution_due += new.resolution - old.resolution
    # A deadline pushed back into the future is no longer breached, and its reminder is owed
    # again; breaches already recorded in the timeline stay there.
    if ticket.first_response_at is None and ticket.first_response_due > now:
        ticket.first_response_breached_at = None
    if ticket.resolved_at is None and ticket.resolution_due > now:
        ticket.resolution_breached_at = None
    if ticket.resolution_due != old_due:
        ticket.reminded_at = None
    ticket.updated_at = now
    event = _event(ticket, now, field, actor, from_value=previous, to_value=value, note=note)
    session.add(event)
    if ticket.resolution_due != old_due and ticket.status not in DONE_STATUSES:
        number = format_number(ticket.id)
        await _notify(
            session,
            ticket,
            event,
            "deadline_changed",
            {
                "resolution_due": ticket.resolution_due.isoformat(),
                "text": _deadline_text(number, ticket.language, ticket.resolution_due),
            },
        )
    return ticket


async def set_priority(
    session: AsyncSession,
    rules: TicketRules,
    ticket_id: int,
    priority: str,
    *,
    actor: str,
    note: str | None = None,
    expected: str | None = None,
) -> Ticket:
    if priority not in PRIORITIES:
        raise Invalid(f"priority: unknown value {priority!r}")
    ticket = await load_ticket(session, ticket_id, for_update=True)
    return await _retarget(
        session, rules, ticket, "priority", priority, actor=actor, note=note,
        expected=expected, check_expected=expected is not None,
    )


async def set_category(
    session: AsyncSession,
    rules: TicketRules,
    ticket_id: int,
    category: str | None,
    *,
    actor: str,
    note: str | None = None,
    expected: str | None = None,
) -> Ticket:
    """`expected`: the category the person saw ("" for none); None, no check."""
    if category is not None and category not in CATEGORIES:
        raise Invalid(f"category: unknown value {category!r}")
    ticket = await load_ticket(session, ticket_id, for_update=True)
    return await _retarget(
        session, rules, ticket, "category", category, actor=actor, note=note,
        expected=expected or None, check_expected=expected is not None,
    )


async def add_customer_message(
    session: AsyncSession,
    rules: TicketRules,
    ticket_id: int,
    text: str,
    *,
    external_id: str | None = None,
) -> Message:
    """The customer wrote about an existing ticket; a ticket waiting on them starts moving."""
    ticket = await load_ticket(session, ticket_id, for_update=True)
    now = rules.clock()
    message = Message(
        ticket_id=ticket.id,
        direction="in",
        author_type="customer",
        text=text[:MAX_TEXT],
        public=True,
        channel=ticket.channel,
        external_id=external_id,
        created_at=now,
    )
    session.add(message)
    ticket.updated_at = now
    session.add(_event(ticket, now, "customer_message", "customer", note=text[:500]))
    if ticket.status == "waiting_customer":
        await move_ticket(
            session, rules, ticket.id, "in_progress", actor="customer", by_agent=False,
            note="the customer answered", notify_customer=False,
        )
    await session.flush()
    return message


async def record_survey(
    session: AsyncSession,
    rules: TicketRules,
    ticket_id: int,
    score: int,
    comment: str | None = None,
    *,
    channel: str,
) -> Survey:
    """A CSAT answer. 1-2 reopens a resolved or closed ticket so the team follows up."""
    if not 1 <= score <= 5:
        raise Invalid("score must be 1 to 5")
    ticket = await load_ticket(session, ticket_id, for_update=True)
    now = rules.clock()
    survey = Survey(
        ticket_id=ticket.id, score=score, comment=comment, channel=channel,
        asked_at=ticket.resolved_at or now, answered_at=now,
    )
    session.add(survey)
    ticket.csat = score
    ticket.updated_at = now
    session.add(
        _event(ticket, now, "csat", "customer", to_value=str(score), note=comment)
    )
    if score <= 2 and ticket.status in DONE_STATUSES:
        await move_ticket(
            session, rules, ticket.id, "in_progress", actor="customer", by_agent=False,
            note=f"low satisfaction score {score}: follow up", notify_customer=False,
        )
    return survey


async def find_or_create_customer(
    session: AsyncSession,
    *,
    name: str | None,
    phone: str | None,
    email: str | None,
    now: datetime,
) -> Customer:
    """Staff-entered tickets: the same phone or e-mail is the same customer."""
    for column, value in ((Customer.phone, phone), (Customer.email, email)):
        if value:
            found = (await session.scalars(select(Customer).where(column == value))).first()
            if found is not None:
                if name and not found.name:
                    found.name = name
                return found
    customer = Customer(name=name, phone=phone, email=email, created_at=now)
    session.add(customer)
    await session.flush()
    return customer


async def identity_for(
    session: AsyncSession,
    *,
    channel: str,
    external_id: str,
    display_name: str | None,
    language: str | None,
    now: datetime,
) -> ChannelIdentity:
    """The customer behind a platform id, created on first contact."""
    found = (
        await session.scalars(
            select(ChannelIdentity).where(
                ChannelIdentity.channel == channel, ChannelIdentity.external_id == external_id
            )
        )
    ).first()
    if found is not None:
        return found
    customer = Customer(name=display_name, language=language, created_at=now)
    session.add(customer)
    await session.flush()
    identity = ChannelIdentity(
        customer_id=customer.id,
        channel=channel,
        external_id=external_id,
        display_name=display_name,
        created_at=now,
    )
    session.add(identity)
    await session.flush()
    return identity
