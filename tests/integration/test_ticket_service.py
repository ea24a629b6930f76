"""The ticket service on SQLite and PostgreSQL: numbers, moves, events, outbox, SLA clock."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from storage import tickets
from storage.clock import ManualClock
from storage.db import Store
from storage.errors import IllegalMove, Invalid, NotFound
from storage.models import OutboxMessage, Ticket, TicketEvent
from storage.queries import ticket_detail
from tests.integration.helpers import agent, chat_customer, chat_ticket, rules


async def _outbox(store: Store, ticket_id: int) -> list[OutboxMessage]:
    async with store.read() as s:
        return list(
            (await s.scalars(
                select(OutboxMessage).where(OutboxMessage.ticket_id == ticket_id)
                .order_by(OutboxMessage.id)
            )).all()
        )


async def test_a_chat_ticket_gets_a_number_deadlines_an_event_and_a_confirmation(
    store: Store,
) -> None:
    clock = ManualClock()
    r = rules(clock)
    who = await chat_customer(store, r)
    first = await chat_ticket(store, r, who)
    second = await chat_ticket(store, r, who, category="product_safety")
    assert second > first > 0
    async with store.read() as s:
        d = await ticket_detail(s, second)
    assert d.ticket.priority == "P1"  # a safety complaint
    assert d.ticket.first_response_due == clock.now + timedelta(minutes=15)
    assert d.ticket.resolution_due == clock.now + timedelta(hours=4)
    assert [e.type for e in d.events] == ["created"]
    [confirmation] = await _outbox(store, second)
    assert confirmation.kind == "ticket_created"
    assert confirmation.payload["number"] == f"CL-{second}"
    assert confirmation.channel == "telegram" and confirmation.status == "pending"


async def test_a_phone_ticket_has_no_one_to_notify(store: Store) -> None:
    r = rules()
    async with store.transaction() as s:
        c = await tickets.find_or_create_customer(
            s, name="Ann", phone="+44 20 1234", email=None, now=r.clock()
        )
        t = await tickets.create_ticket(
            s, r, tickets.NewTicket(kind="complaint", channel="phone",
                                    description="rude staff", customer_id=c.id)
        )
        again = await tickets.find_or_create_customer(
            s, name=None, phone="+44 20 1234", email=None, now=r.clock()
        )
    assert again.id == c.id  # the same phone number is the same customer
    assert await _outbox(store, t.id) == []


async def test_an_illegal_move_is_refused_and_changes_nothing(store: Store) -> None:
    r = rules()
    who = await chat_customer(store, r)
    number = await chat_ticket(store, r, who)
    with pytest.raises(IllegalMove):
        async with store.transaction() as s:
            await tickets.move_ticket(s, r, number, "closed", actor="agent:alice")
    async with store.read() as s:
        d = await ticket_detail(s, number)
    assert d.ticket.status == "new" and len(d.events) == 1
    assert len(await _outbox(store, number)) == 1


async def test_unknown_ticket_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        async with store.transaction() as s:
            await tickets.move_ticket(s, rules(), 999_999, "acknowledged", actor="x")


async def test_every_status_change_is_an_event_and_a_customer_update(store: Store) -> None:
    clock = ManualClock()
    r = rules(clock)
    who = await chat_customer(store, r)
    number = await chat_ticket(store, r, who)
    path = ["acknowledged", "in_progress", "resolved", "closed", "in_progress", "resolved"]
    for status in path:
        clock.advance(minutes=10)
        async with store.transaction() as s:
            await tickets.move_ticket(s, r, number, status, actor="agent:alice", note="n")
    async with store.read() as s:
        d = await ticket_detail(s, number)
    moves = [(e.from_value, e.to_value) for e in d.events if e.type in ("status", "reopened")]
    assert moves == list(zip(["new", *path[:-1]], path, strict=True))
    assert [e.type for e in d.events].count("reopened") == 1
    assert d.ticket.first_response_at == d.ticket.created_at + timedelta(minutes=10)
    assert d.ticket.resolved_at == clock.now and d.ticket.closed_at is None
    updates = [m for m in await _outbox(store, number) if m.kind == "status_changed"]
    assert [m.payload["status"] for m in updates] == path
    assert len({m.key for m in updates}) == len(path)


async def test_waiting_for_the_customer_pauses_the_sla_clock(store: Store) -> None:
    clock = ManualClock()
    r = rules(clock)
    who = await chat_customer(store, r)
    number = await chat_ticket(store, r, who)  # P3: 72 h to resolve
    async with store.read() as s:
        due_before = (await ticket_detail(s, number)).ticket.resolution_due
    async with store.transaction() as s:
        await tickets.move_ticket(s, r, number, "acknowledged", actor="agent:alice")
        await tickets.move_ticket(s, r, number, "waiting_customer", actor="agent:alice")
    clock.advance(hours=30)
    async with store.transaction() as s:  # the customer answers: the ticket moves by itself
        await tickets.add_customer_message(s, r, number, "here is the photo")
    async with store.read() as s:
        d = await ticket_detail(s, number)
    assert d.ticket.status == "in_progress"
    assert d.ticket.resolution_due == due_before + timedelta(hours=30)
    assert d.events[-1].actor == "customer"
    assert d.messages[-1].text == "here is the photo"


async def test_a_public_reply_is_the_first_response_and_reaches_the_customer(store: Store) -> None:
    clock = ManualClock()
    r = rules(clock)
    who = await chat_customer(store, r)
    number = await chat_ticket(store, r, who)
    alice = await agent(store)
    clock.advance(minutes=3)
    async with store.transaction() as s:
        await tickets.reply(s, r, number, "internal: check courier", public=False, agent=alice)
    async with store.transaction() as s:
        assert (await tickets.load_ticket(s, number)).first_response_at is None
        await tickets.reply(s, r, number, "Sorry! We are on it.", public=True, agent=alice)
    async with store.read() as s:
        d = await ticket_detail(s, number)
    assert d.ticket.first_response_at == clock.now
    assert [(m.public, m.text) for m in d.messages] == [
        (False, "internal: check courier"), (True, "Sorry! We are on it.")
    ]
    replies = [m for m in await _outbox(store, number) if m.kind == "agent_reply"]
    assert [m.payload["text"] for m in replies] == ["Sorry! We are on it."]


async def test_assign_names_a_real_agent(store: Store) -> None:
    r = rules()
    who = await chat_customer(store, r)
    number = await chat_ticket(store, r, who)
    await agent(store, "bob")
    async with store.transaction() as s:
        await tickets.assign(s, r, number, "bob", actor="agent:alice")
    with pytest.raises(Invalid, match="agent"):
        async with store.transaction() as s:
            await tickets.assign(s, r, number, "nobody", actor="agent:alice")
    async with store.read() as s:
        d = await ticket_detail(s, number)
    assert d.assignee == "bob"
    assert [(e.type, e.to_value) for e in d.events][-1] == ("assigned", "bob")


async def test_a_low_satisfaction_score_reopens_the_ticket(store: Store) -> None:
    r = rules()
    who = await chat_customer(store, r)
    number = await chat_ticket(store, r, who)
    async with store.transaction() as s:
        await tickets.move_ticket(s, r, number, "resolved", actor="agent:alice")
        await tickets.record_survey(s, r, number, 2, "still broken", channel="telegram")
    async with store.read() as s:
        d = await ticket_detail(s, number)
    assert d.ticket.status == "in_progress" and d.ticket.csat == 2
    assert [e.type for e in d.events][-2:] == ["csat", "reopened"]
    with pytest.raises(Invalid):
        async with store.transaction() as s:
            await tickets.record_survey(s, r, number, 6, channel="telegram")


async def test_concurrent_creates_get_distinct_numbers(store: Store) -> None:
    r = rules()
    who = await chat_customer(store, r)
    numbers = await asyncio.gather(*(chat_ticket(store, r, who) for _ in range(40)))
    assert len(set(numbers)) == 40
    async with store.read() as s:
        assert await s.scalar(select(func.count()).select_from(Ticket)) == 40
        assert await s.scalar(select(func.count()).select_from(OutboxMessage)) == 40


async def test_two_agents_changing_one_ticket_at_once_lose_nothing(store: Store) -> None:
    r = rules()
    who = await chat_customer(store, r)
    number = await chat_ticket(store, r, who)
    await agent(store, "bob")

    async def move() -> None:
        async with store.transaction() as s:
            await tickets.move_ticket(s, r, number, "in_progress", actor="agent:alice")

    async def assign() -> None:
        async with store.transaction() as s:
            await tickets.assign(s, r, number, "bob", actor="agent:carol")

    await asyncio.gather(move(), assign())
    async with store.read() as s:
        d = await ticket_detail(s, number)
    assert d.ticket.status == "in_progress" and d.assignee == "bob"
    async with store.read() as s:
        types = (await s.scalars(
            select(TicketEvent.type).where(TicketEvent.ticket_id == number)
        )).all()
    assert sorted(types) == ["assigned", "created", "status"]


async def test_a_failed_transaction_leaves_nothing_half_written(store: Store) -> None:
    r = rules()
    who = await chat_customer(store, r)
    with pytest.raises(RuntimeError):
        async with store.transaction() as s:
            await tickets.create_ticket(s, r, tickets.NewTicket(
                kind="complaint", channel="telegram", description="x",
                customer_id=who.customer_id, identity_id=who.id))
            raise RuntimeError("crash before commit")
    async with store.read() as s:
        for model in (Ticket, TicketEvent, OutboxMessage):
            assert await s.scalar(select(func.count()).select_from(model)) == 0


def _columns(row: object, skip: set[str]) -> dict[str, object]:
    table = row.__table__  # type: ignore[attr-defined]
    return {c.name: getattr(row, c.key) for c in table.columns if c.name not in skip}


Columns = dict[str, object]


async def _written(store: Store, ticket_id: int) -> tuple[Columns, list[Columns], list[Columns]]:
    """Everything a create wrote for one ticket, minus ids and what derives from them."""
    async with store.read() as s:
        ticket = await s.get(Ticket, ticket_id)
        events = (await s.scalars(
            select(TicketEvent).where(TicketEvent.ticket_id == ticket_id).order_by(TicketEvent.id)
        )).all()
        messages = (await s.scalars(
            select(OutboxMessage).where(OutboxMessage.ticket_id == ticket_id)
        )).all()
    assert ticket is not None
    [event] = events
    for m in messages:  # the key and the number name the cause: the event, the ticket
        assert m.key == f"event:{event.id}" and m.payload["number"] == f"CL-{ticket_id}"
    return (
        _columns(ticket, {"id", "intake_key"}),
        [_columns(e, {"id", "ticket_id"}) for e in events],
        [_columns(m, {"id", "ticket_id", "key"})
         | {"payload": {k: v for k, v in m.payload.items() if k != "number"}}
         for m in messages],
    )


@pytest.mark.parametrize("reachable", [True, False])
async def test_the_core_create_path_writes_the_same_rows_as_the_orm_path(
    store: Store, reachable: bool
) -> None:
    clock = ManualClock()
    r = rules(clock)
    who = await chat_customer(store, r)

    def new(key: str) -> tickets.NewTicket:
        return tickets.NewTicket(
            kind="complaint", channel="telegram", description="  The milk was sour  ",
            customer_id=who.customer_id, identity_id=who.id if reachable else None,
            category="product_quality", priority="P2", order_number="123-4567",
            store="Canal Street", language="zh", needs_human=True, actor="customer",
            intake_key=key,
        )

    async with store.transaction() as s:
        orm = (await tickets.create_ticket(s, r, new("chat:1:1"))).id
    async with store.transaction() as s:
        core = await tickets.create_ticket_core(s, r, new("chat:1:2"))
    assert core.created and core.id > orm
    orm_rows, core_rows = await _written(store, orm), await _written(store, core.id)
    assert core_rows == orm_rows
    assert len(orm_rows[2]) == (1 if reachable else 0)
    if reachable:
        [row] = await _outbox(store, core.id)
        assert core.confirmation_id == row.id and core.confirmation is not None
        assert core.confirmation["payload"] == row.payload


async def test_a_retried_core_create_returns_the_same_ticket_and_writes_nothing(
    store: Store,
) -> None:
    clock = ManualClock()
    r = rules(clock)
    who = await chat_customer(store, r)
    new = tickets.NewTicket(kind="complaint", channel="telegram", description="late parcel",
                            customer_id=who.customer_id, identity_id=who.id,
                            intake_key="chat:7:3")
    async with store.transaction() as s:
        first = await tickets.create_ticket_core(s, r, new)
    clock.advance(seconds=5)
    async with store.transaction() as s:
        again = await tickets.create_ticket_core(s, r, new)
    async with store.transaction() as s:
        orm_again = await tickets.create_ticket(s, r, new)
    assert first.created and not again.created
    assert again.id == first.id == orm_again.id and again.confirmation_id is None
    async with store.read() as s:
        assert await s.scalar(select(func.count()).select_from(Ticket)) == 1
        assert await s.scalar(select(func.count()).select_from(TicketEvent)) == 1
    assert len(await _outbox(store, first.id)) == 1
