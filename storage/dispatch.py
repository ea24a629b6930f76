"""The outbox worker: claims due messages, hands each to the sender of its channel, and records
the outcome. Senders belong to the channels (bot/, monitors/); this module only knows the
protocol, so storage imports nothing of them."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import partial
from typing import TypeVar

from storage import outbox
from storage.clock import Clock, utc_now
from storage.db import Store

log = logging.getLogger("careloop.outbox")

Sender = Callable[[outbox.Delivery], Awaitable[None]]
Part = TypeVar("Part")


class PermanentFailure(Exception):
    """The platform will never take this message (blocked bot, deleted account, bad request).
    With `unreachable=True` the customer's identity is marked so nothing more is tried."""

    def __init__(self, reason: str, *, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.unreachable = unreachable


class RetryAfter(Exception):
    """The platform asked us to wait (Telegram 429 `retry_after`, X `x-rate-limit-reset`)."""

    def __init__(self, seconds: float, reason: str = "rate limited") -> None:
        super().__init__(reason)
        self.seconds = seconds


@dataclass
class DispatchPolicy:
    max_attempts: int = 8
    backoff_seconds: float = 2.0
    backoff_max_seconds: float = 3600.0
    batch_size: int = 50
    idle_seconds: float = 0.5
    concurrency: int = 20
    # run_dispatcher writes the outcomes of this long in one transaction.
    record_seconds: float = 0.2

    def backoff(self, attempt: int) -> float:
        base = min(self.backoff_max_seconds, self.backoff_seconds * 2 ** max(attempt - 1, 0))
        # Jitter so a burst of failures does not come back as one burst.
        return base * random.uniform(0.8, 1.2)


@dataclass
class Outcome:
    sent: list[int] = field(default_factory=list)
    retry: list[tuple[int, float, str]] = field(default_factory=list)
    dead: list[tuple[int, str, int | None]] = field(default_factory=list)
    # Claimed but never handed to a sender (the worker is stopping, or the lease ran short).
    released: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.sent or self.retry or self.dead or self.released)


async def _deliver(
    sender: Sender, d: outbox.Delivery, policy: DispatchPolicy, out: Outcome
) -> None:
    if not d.reachable and d.kind != outbox.PUBLIC_REPLY:
        # They blocked us: sending would only be refused (and spend the rate limit a fan-out
        # needs). A public reply to a mention goes to the post, not to them, so it still goes.
        out.dead.append((d.id, "the customer cannot be reached on this channel (blocked)", None))
        return
    try:
        await sender(d)
    except PermanentFailure as exc:
        log.warning("outbox %s dead: %s", d.id, exc)
        out.dead.append((d.id, str(exc), d.identity_id if exc.unreachable else None))
    except RetryAfter as exc:
        out.retry.append((d.id, max(exc.seconds, 0.0), str(exc)))
    except Exception as exc:  # a network error, a 5xx: try again later
        reason = f"{type(exc).__name__}: {exc}"
        if d.attempt >= policy.max_attempts:
            log.warning("outbox %s dead after %d attempts: %s", d.id, d.attempt, reason)
            out.dead.append((d.id, reason, None))
        else:
            out.retry.append((d.id, policy.backoff(d.attempt), reason))
    else:
        out.sent.append(d.id)


async def send_parts(
    d: outbox.Delivery, parts: Sequence[Part], send_one: Callable[[Part], Awaitable[None]]
) -> None:
    """Sends a message that goes out in several parts, from the first one no earlier attempt
    sent. After each part but the last the row records how far it got, so a failure or a crash
    sends again at most the part that was in flight, never the whole message."""
    for index in range(min(d.parts_sent, len(parts)), len(parts)):
        await send_one(parts[index])
        if index + 1 < len(parts) and d.progress is not None:
            try:
                await d.progress(index + 1)
            except Exception:  # the database went away: carry on, a retry may repeat parts
                log.exception("outbox %s: parts sent not recorded", d.id)


async def record_parts(store: Store, row_id: int, parts: int) -> None:
    async with store.transaction() as session:
        await outbox.mark_parts_sent(session, row_id, parts)


async def _claim(
    store: Store, senders: Mapping[str, Sender], policy: DispatchPolicy, worker: str,
    clock: Clock,
) -> list[outbox.Delivery]:
    async with store.transaction() as session:
        claimed = await outbox.claim(
            session,
            channels=sorted(senders),
            worker=worker,
            now=clock(),
            limit=policy.batch_size,
            postgres=store.is_postgres,
        )
    return [replace(d, progress=partial(record_parts, store, d.id)) for d in claimed]


async def _record(store: Store, out: Outcome, worker: str, clock: Clock) -> None:
    """Every outcome in one transaction."""
    now = clock()
    async with store.transaction() as session:
        await outbox.mark_sent(session, out.sent, now)
        for row_id, wait, reason in out.retry:
            await outbox.mark_retry(session, row_id, now + timedelta(seconds=wait), reason)
        for row_id, reason, unreachable_identity in out.dead:
            await outbox.mark_dead(session, row_id, reason)
            if unreachable_identity is not None:
                await outbox.set_reachable(
                    session, reachable=False, reason=reason, identity_id=unreachable_identity
                )
        await outbox.release(session, out.released, worker)


async def dispatch_once(
    store: Store,
    senders: Mapping[str, Sender],
    policy: DispatchPolicy,
    *,
    worker: str,
    clock: Clock = utc_now,
) -> int:
    """One claim-deliver-record round; returns how many messages it handled. Tests and tools
    step the outbox with it; the long-running worker is `run_dispatcher`."""
    batch = await _claim(store, senders, policy, worker, clock)
    if not batch:
        return 0
    out = Outcome()
    gate = asyncio.Semaphore(policy.concurrency)

    async def one(d: outbox.Delivery) -> None:
        async with gate:
            await _deliver(senders[d.channel], d, policy, out)

    await asyncio.gather(*(one(d) for d in batch))
    await _record(store, out, worker, clock)
    return len(batch)


@dataclass
class _Claimed:
    deliveries: list[outbox.Delivery]
    at: float  # time.monotonic() of the claim: how much of the lease is left


async def run_dispatcher(
    store: Store,
    senders: Mapping[str, Sender],
    policy: DispatchPolicy,
    stop: asyncio.Event,
    *,
    worker: str,
    clock: Clock = utc_now,
) -> None:
    """The worker, as a pipeline, so a rate-limited channel never waits on the database: the
    next batch is claimed while the current one is sending (one batch ahead, no more), a
    delivery starts as soon as one of `policy.concurrency` slots is free whichever batch it
    came from, and outcomes are written by their own task, several sends to a transaction.

    Guarantees are the ones of `dispatch_once`: rows are claimed under a lease before they are
    sent, a send is recorded after it happened (at least once; a crash between the two sends
    again after the lease), RetryAfter and dead letters are recorded alike. On `stop` nothing
    new starts: sends in flight finish and are recorded, claimed rows not yet started are
    released (due again at once, the claim not counted as an attempt), then it returns."""
    log.info("outbox worker %s delivering for %s", worker, ", ".join(sorted(senders)) or "none")
    ahead: asyncio.Queue[_Claimed | None] = asyncio.Queue(maxsize=1)
    outcomes = _Outcomes()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(_claim_ahead(store, senders, policy, stop, worker, clock, ahead))
        recorder = tasks.create_task(_record_outcomes(store, outcomes, policy, worker, clock))
        try:
            await _send_claimed(senders, policy, stop, ahead, outcomes, tasks)
        finally:
            outcomes.close()
        await recorder


class _Outcomes:
    """Outcomes waiting to be written: the senders add, the recorder takes them all at once."""

    def __init__(self) -> None:
        self.pending = Outcome()
        self.ready = asyncio.Event()
        self.closed = False

    def add(self, out: Outcome) -> None:
        self.pending.sent += out.sent
        self.pending.retry += out.retry
        self.pending.dead += out.dead
        self.pending.released += out.released
        self.ready.set()

    def take(self) -> Outcome:
        out, self.pending = self.pending, Outcome()
        self.ready.clear()
        return out

    def close(self) -> None:
        self.closed = True
        self.ready.set()


async def _claim_ahead(
    store: Store, senders: Mapping[str, Sender], policy: DispatchPolicy, stop: asyncio.Event,
    worker: str, clock: Clock, ahead: asyncio.Queue[_Claimed | None],
) -> None:
    while not stop.is_set():
        try:
            batch = await _claim(store, senders, policy, worker, clock)
        except Exception:  # the database went away: keep the worker alive and try again
            log.exception("outbox claim failed; retrying")
            await _sleep(stop, 5.0)
            continue
        if not batch:
            await _sleep(stop, policy.idle_seconds)
            continue
        await ahead.put(_Claimed(batch, time.monotonic()))
        # The next claim waits until this batch starts: the pipeline holds one batch ahead.
        await ahead.join()
    await ahead.put(None)


async def _send_claimed(
    senders: Mapping[str, Sender], policy: DispatchPolicy, stop: asyncio.Event,
    ahead: asyncio.Queue[_Claimed | None], outcomes: _Outcomes, tasks: asyncio.TaskGroup,
) -> None:
    gate = asyncio.Semaphore(policy.concurrency)
    in_flight: set[asyncio.Task[None]] = set()
    # A claimed row is sent only with at least half its lease left, so it is recorded long
    # before another worker may take it over.
    fresh_for = outbox.CLAIM_LEASE.total_seconds() / 2

    async def one(d: outbox.Delivery) -> None:
        out = Outcome()
        try:
            await _deliver(senders[d.channel], d, policy, out)
        finally:
            gate.release()
            outcomes.add(out)

    current: deque[outbox.Delivery] = deque()
    claimed_at = 0.0
    try:
        while True:
            # A free slot first, then the next delivery: a batch is taken off the queue only
            # when it can start, so the claimer stays exactly one batch ahead.
            await gate.acquire()
            if not current:
                claimed = await ahead.get()
                ahead.task_done()
                # The claimer's None comes after `stop`; batches queued before it are drained
                # (released below), so the claimer is never left blocked on a full queue.
                if claimed is None:
                    gate.release()
                    break
                current.extend(claimed.deliveries)
                claimed_at = claimed.at
            if stop.is_set() or time.monotonic() - claimed_at > fresh_for:
                gate.release()
                outcomes.add(Outcome(released=[d.id for d in current]))
                current.clear()
                continue
            task = tasks.create_task(one(current.popleft()))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
    finally:
        if in_flight:
            await asyncio.wait(list(in_flight))


async def _record_outcomes(
    store: Store, outcomes: _Outcomes, policy: DispatchPolicy, worker: str, clock: Clock
) -> None:
    """Writes outcomes as they come, gathering those of `policy.record_seconds` into one
    transaction; after close, writes the rest and returns."""
    while True:
        await outcomes.ready.wait()
        if not outcomes.closed:
            await asyncio.sleep(policy.record_seconds)
        closing = outcomes.closed
        out = outcomes.take()
        for attempt in range(1, 4):
            if not out:
                break
            try:
                await _record(store, out, worker, clock)
                break
            except Exception:  # the database went away: the rows come back after their lease
                log.exception("outbox outcomes not recorded (attempt %d of 3)", attempt)
                await asyncio.sleep(1.0 * attempt)
        if closing:
            return


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
