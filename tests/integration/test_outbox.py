"""The outbox worker: delivery, retries with back-off, rate limits, dead letters, two workers."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select, update

from storage.clock import ManualClock
from storage.db import Store
from storage.dispatch import (
    DispatchPolicy,
    PermanentFailure,
    RetryAfter,
    dispatch_once,
    run_dispatcher,
)
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


async def _statuses(store: Store) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in await _rows(store):
        counts[row.status] = counts.get(row.status, 0) + 1
    return counts


async def test_the_worker_claims_the_next_batch_while_the_current_one_is_sending(
    store: Store,
) -> None:
    r = rules()
    who = await chat_customer(store, r)
    for _ in range(12):
        await chat_ticket(store, r, who)
    first_started, release = asyncio.Event(), asyncio.Event()
    sent: list[int] = []

    async def held(d: Delivery) -> None:
        first_started.set()
        await release.wait()  # the first batch stays on the wire until the test lets it go
        sent.append(d.id)

    stop = asyncio.Event()
    policy = DispatchPolicy(batch_size=4, concurrency=4, idle_seconds=0.01, record_seconds=0.01)
    worker = asyncio.create_task(run_dispatcher(store, {"telegram": held}, policy, stop,
                                                worker="w"))
    await first_started.wait()
    # While batch one (4 messages) is sending, batch two is already claimed, and no more.
    for _ in range(500):
        if (await _statuses(store)).get("sending") == 8:
            break
        await asyncio.sleep(0.01)
    assert await _statuses(store) == {"sending": 8, "pending": 4}
    assert sent == []
    release.set()
    for _ in range(500):
        if (await _statuses(store)) == {"sent": 12}:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await worker
    assert await _statuses(store) == {"sent": 12}
    assert sorted(sent) == sorted(set(sent)) and len(sent) == 12


async def test_a_worker_stopped_mid_pipeline_loses_and_doubles_nothing(store: Store) -> None:
    r = rules()
    who = await chat_customer(store, r)
    for _ in range(40):
        await chat_ticket(store, r, who)
    sent: list[int] = []
    stop = asyncio.Event()
    on_the_wire = asyncio.Event()

    async def stops_the_worker(d: Delivery) -> None:
        if len(sent) == 9:  # SIGTERM arrives with this send in flight
            stop.set()
            on_the_wire.set()
            await asyncio.sleep(0.05)
        sent.append(d.id)

    policy = DispatchPolicy(batch_size=5, concurrency=2, idle_seconds=0.01, record_seconds=0.01)
    await run_dispatcher(store, {"telegram": stops_the_worker}, policy, stop, worker="w")
    assert on_the_wire.is_set()
    rows = await _rows(store)
    # What went out is recorded as sent, in-flight sends included; everything claimed and not
    # started is due again at once, its claim not counted as an attempt; nothing is left
    # claimed (which would wait out the lease).
    assert sorted(row.id for row in rows if row.status == "sent") == sorted(sent)
    assert 10 <= len(sent) < 40
    left = [row for row in rows if row.status != "sent"]
    assert {row.status for row in left} == {"pending"}
    assert {row.attempts for row in left} == {0}
    assert {row.locked_by for row in left} == {None}

    # The next worker delivers the rest: every message exactly once over both runs.
    stop2 = asyncio.Event()

    async def ok(d: Delivery) -> None:
        sent.append(d.id)
        if len(sent) >= 40:
            stop2.set()

    await asyncio.wait_for(
        run_dispatcher(store, {"telegram": ok}, policy, stop2, worker="w2"), timeout=60
    )
    assert sorted(sent) == sorted(row.id for row in rows) and len(set(sent)) == 40
    assert await _statuses(store) == {"sent": 40}


async def test_the_worker_records_retries_and_dead_letters_like_a_round(store: Store) -> None:
    clock = ManualClock()
    r = rules(clock)
    who = await chat_customer(store, r)
    blocked = await chat_customer(store, r, external_id="9009")
    await chat_ticket(store, r, who)
    await chat_ticket(store, r, blocked)
    handled = asyncio.Event()
    seen: list[int] = []

    async def mixed(d: Delivery) -> None:
        seen.append(d.id)
        if len(seen) == 2:
            handled.set()
        if d.recipient == "9009":
            raise PermanentFailure("Forbidden: bot was blocked by the user", unreachable=True)
        raise RetryAfter(30)

    stop = asyncio.Event()
    policy = DispatchPolicy(idle_seconds=0.01, record_seconds=0.01)
    worker = asyncio.create_task(
        run_dispatcher(store, {"telegram": mixed}, policy, stop, worker="w", clock=clock)
    )
    await handled.wait()
    stop.set()
    await worker
    first, second = await _rows(store)
    assert first.status == "pending" and first.next_attempt_at == clock.now + timedelta(seconds=30)
    assert second.status == "dead"
    async with store.read() as s:
        identity = await s.get(ChannelIdentity, blocked.id)
    assert identity is not None and identity.reachable is False
