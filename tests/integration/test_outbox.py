"""The outbox worker: delivery, retries with back-off, rate limits, dead letters, two workers."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select, update

from storage.clock import ManualClock
from storage.db import Store
from storage.dispatch import DispatchPolicy, PermanentFailure, RetryAfter, dispatch_once
from storage.models import ChannelIdentity, OutboxMessage
from storage.outbox import Delivery
from tests.integration.helpers import chat_customer, chat_ticket, rules

POLICY = DispatchPolicy(max_attempts=3, backoff_seconds=10, batch_size=100)


async def _rows(store: Store) -> list[OutboxMessage]:
    async with store.read() as s:
        return list((await s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all())


async def test_due_messages_reach_the_channel_once_with_the_customer_address(store: Store) -> None:
    clock = ManualClock()
    r = rules(clock)
    who = await chat_customer(store, r, external_id="777")
    numbers = [await chat_ticket(store, r, who) for _ in range(3)]
    got: list[Delivery] = []

    async def telegram(d: Delivery) -> None:
        got.append(d)

    assert await dispatch_once(store, {"telegram": telegram}, POLICY, worker="w", clock=clock) == 3
    assert await dispatch_once(store, {"telegram": telegram}, POLICY, worker="w", clock=clock) == 0
    assert [d.payload["number"] for d in got] == [f"CL-{n}" for n in numbers]
    assert {d.recipient for d in got} == {"777"}
    assert {row.status for row in await _rows(store)} == {"sent"}


async def test_a_channel_this_process_cannot_send_waits(store: Store) -> None:
    r = rules()
    who = await chat_customer(store, r)
    await chat_ticket(store, r, who)

    async def webchat(d: Delivery) -> None:
        raise AssertionError("wrong channel")

    assert await dispatch_once(store, {"webchat": webchat}, POLICY, worker="w") == 0
    assert [row.status for row in await _rows(store)] == ["pending"]


async def test_rate_limit_waits_as_long_as_the_platform_asks(store: Store) -> None:
    clock = ManualClock()
    r = rules(clock)
    who = await chat_customer(store, r)
    await chat_ticket(store, r, who)

    async def limited(d: Delivery) -> None:
        raise RetryAfter(42)

    await dispatch_once(store, {"telegram": limited}, POLICY, worker="w", clock=clock)
    [row] = await _rows(store)
    assert row.status == "pending"
    assert row.next_attempt_at == clock.now + timedelta(seconds=42)
    clock.advance(seconds=41)
    assert await dispatch_once(store, {"telegram": limited}, POLICY, worker="w", clock=clock) == 0


async def test_transient_failures_back_off_then_go_dead(store: Store) -> None:
    clock = ManualClock()
    r = rules(clock)
    who = await chat_customer(store, r)
    await chat_ticket(store, r, who)
    waits = []

    async def flaky(d: Delivery) -> None:
        raise ConnectionResetError("peer reset")

    for _ in range(POLICY.max_attempts):
        await dispatch_once(store, {"telegram": flaky}, POLICY, worker="w", clock=clock)
        [row] = await _rows(store)
        if row.status == "pending":
            waits.append((row.next_attempt_at - clock.now).total_seconds())
            clock.now = row.next_attempt_at
    [row] = await _rows(store)
    assert row.status == "dead" and row.attempts == POLICY.max_attempts
    assert "peer reset" in (row.last_error or "")
    assert len(waits) == POLICY.max_attempts - 1 and waits[1] > waits[0] * 1.3  # exponential


async def test_a_blocked_customer_is_marked_unreachable_and_not_retried(store: Store) -> None:
    r = rules()
    who = await chat_customer(store, r)
    await chat_ticket(store, r, who)

    async def blocked(d: Delivery) -> None:
        raise PermanentFailure("Forbidden: bot was blocked by the user", unreachable=True)

    await dispatch_once(store, {"telegram": blocked}, POLICY, worker="w")
    [row] = await _rows(store)
    assert row.status == "dead" and row.attempts == 1
    async with store.read() as s:
        identity = await s.get(ChannelIdentity, who.id)
    assert identity is not None and identity.reachable is False
    assert "blocked" in (identity.unreachable_reason or "")


async def test_a_message_claimed_by_a_worker_that_died_is_delivered_later(store: Store) -> None:
    clock = ManualClock()
    r = rules(clock)
    who = await chat_customer(store, r)
    await chat_ticket(store, r, who)
    async with store.transaction() as s:  # a worker claimed it, then crashed
        await s.execute(update(OutboxMessage).values(
            status="sending", locked_by="dead-worker", locked_until=clock.now + timedelta(minutes=2)
        ))
    sent: list[int] = []

    async def ok(d: Delivery) -> None:
        sent.append(d.id)

    assert await dispatch_once(store, {"telegram": ok}, POLICY, worker="w2", clock=clock) == 0
    clock.advance(minutes=3)
    assert await dispatch_once(store, {"telegram": ok}, POLICY, worker="w2", clock=clock) == 1
    assert len(sent) == 1


async def test_two_workers_never_send_the_same_message_twice(store: Store) -> None:
    r = rules()
    who = await chat_customer(store, r)
    for _ in range(60):
        await chat_ticket(store, r, who)
    sent: list[int] = []

    async def slow(d: Delivery) -> None:
        await asyncio.sleep(0.001)
        sent.append(d.id)

    small = DispatchPolicy(batch_size=7)

    async def worker(name: str) -> None:
        while await dispatch_once(store, {"telegram": slow}, small, worker=name):
            pass

    await asyncio.gather(worker("a"), worker("b"), worker("c"))
    assert sorted(sent) == sorted(set(sent)) and len(sent) == 60
    assert {row.status for row in await _rows(store)} == {"sent"}
