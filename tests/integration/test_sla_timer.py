"""The SLA timer: breaches once, escalates, reminds assignees, respects the pause."""

from __future__ import annotations

from sqlalchemy import select

from storage import tickets
from storage.clock import ManualClock
from storage.db import Store
from storage.models import TicketEvent
from storage.sla_timer import check_deadlines
from tests.integration.helpers import agent, chat_customer, chat_ticket, rules


async def _events(store: Store, number: int) -> list[tuple[str, str | None]]:
    async with store.read() as s:
        rows = await s.scalars(
            select(TicketEvent).where(TicketEvent.ticket_id == number).order_by(TicketEvent.id)
        )
        return [(e.type, e.to_value) for e in rows.all()]


async def _tick(store: Store, r: tickets.TicketRules) -> tuple[int, int]:
    async with store.transaction() as s:
        result = await check_deadlines(s, r, postgres=store.is_postgres)
    return result.breached, result.reminded


async def test_a_missed_first_response_is_recorded_once_and_escalated(store: Store) -> None:
    clock = ManualClock()
    r = rules(clock)
    who = await chat_customer(store, r)
    number = await chat_ticket(store, r, who, category="product_safety")  # P1: 15 min
    clock.advance(minutes=14)
    assert await _tick(store, r) == (0, 0)
    clock.advance(minutes=2)
    assert await _tick(store, r) == (1, 0)
    assert await _tick(store, r) == (0, 0)
    assert await _events(store, number) == [
        ("created", "new"), ("sla_breached", "first_response"), ("escalated", "P1"),
    ]


async def test_a_ticket_waiting_for_the_customer_does_not_breach(store: Store) -> None:
    clock = ManualClock()
    r = rules(clock)
    who = await chat_customer(store, r)
    number = await chat_ticket(store, r, who)  # P3: 72 h
    async with store.transaction() as s:
        await tickets.move_ticket(s, r, number, "acknowledged", actor="agent:a")
        await tickets.move_ticket(s, r, number, "waiting_customer", actor="agent:a")
    clock.advance(hours=100)
    assert await _tick(store, r) == (0, 0)
    async with store.transaction() as s:
        await tickets.move_ticket(s, r, number, "in_progress", actor="agent:a")
    clock.advance(hours=71)
    assert await _tick(store, r) == (0, 0)  # the 100 h pause moved the deadline
    clock.advance(hours=2)
    assert await _tick(store, r) == (1, 0)


async def test_the_assignee_is_reminded_before_the_deadline(store: Store) -> None:
    clock = ManualClock()
    r = rules(clock)
    who = await chat_customer(store, r)
    number = await chat_ticket(store, r, who, priority="P2")  # 24 h to resolve
    await agent(store, "bob")
    async with store.transaction() as s:
        await tickets.move_ticket(s, r, number, "in_progress", actor="agent:bob")
        await tickets.assign(s, r, number, "bob", actor="agent:bob")
    clock.advance(hours=19)
    assert await _tick(store, r) == (0, 0)
    clock.advance(hours=1)  # 20 h = 80 % of 24 h
    assert await _tick(store, r) == (0, 1)
    assert await _tick(store, r) == (0, 0)
    assert ("sla_reminder", "bob") in await _events(store, number)
