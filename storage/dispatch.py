"""The outbox worker: claims due messages, hands each to the sender of its channel, and records
the outcome. Senders belong to the channels (bot/, monitors/); this module only knows the
protocol, so storage imports nothing of them."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import update

from storage import outbox
from storage.clock import Clock, utc_now
from storage.db import Store
from storage.models import ChannelIdentity

log = logging.getLogger("careloop.outbox")

Sender = Callable[[outbox.Delivery], Awaitable[None]]


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

    def backoff(self, attempt: int) -> float:
        base = min(self.backoff_max_seconds, self.backoff_seconds * 2 ** max(attempt - 1, 0))
        # Jitter so a burst of failures does not come back as one burst.
        return base * random.uniform(0.8, 1.2)


@dataclass
class Outcome:
    sent: list[int] = field(default_factory=list)
    retry: list[tuple[int, float, str]] = field(default_factory=list)
    dead: list[tuple[int, str, int | None]] = field(default_factory=list)


async def _deliver(
    sender: Sender, d: outbox.Delivery, policy: DispatchPolicy, out: Outcome
) -> None:
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


async def dispatch_once(
    store: Store,
    senders: Mapping[str, Sender],
    policy: DispatchPolicy,
    *,
    worker: str,
    clock: Clock = utc_now,
) -> int:
    """One claim-deliver-record round; returns how many messages it handled."""
    async with store.transaction() as session:
        batch = await outbox.claim(
            session,
            channels=sorted(senders),
            worker=worker,
            now=clock(),
            limit=policy.batch_size,
            postgres=store.is_postgres,
        )
    if not batch:
        return 0
    out = Outcome()
    gate = asyncio.Semaphore(policy.concurrency)

    async def one(d: outbox.Delivery) -> None:
        async with gate:
            await _deliver(senders[d.channel], d, policy, out)

    await asyncio.gather(*(one(d) for d in batch))
    now = clock()
    async with store.transaction() as session:
        await outbox.mark_sent(session, out.sent, now)
        for row_id, wait, reason in out.retry:
            await outbox.mark_retry(session, row_id, now + timedelta(seconds=wait), reason)
        for row_id, reason, unreachable_identity in out.dead:
            await outbox.mark_dead(session, row_id, reason)
            if unreachable_identity is not None:
                await session.execute(
                    update(ChannelIdentity)
                    .where(ChannelIdentity.id == unreachable_identity)
                    .values(reachable=False, unreachable_reason=reason[:200])
                )
    return len(batch)


async def run_dispatcher(
    store: Store,
    senders: Mapping[str, Sender],
    policy: DispatchPolicy,
    stop: asyncio.Event,
    *,
    worker: str,
    clock: Clock = utc_now,
) -> None:
    log.info("outbox worker %s delivering for %s", worker, ", ".join(sorted(senders)) or "none")
    while not stop.is_set():
        try:
            handled = await dispatch_once(store, senders, policy, worker=worker, clock=clock)
        except Exception:  # the database went away: keep the worker alive and try again
            log.exception("outbox round failed; retrying")
            handled = 0
            await _sleep(stop, 5.0)
        if handled == 0:
            await _sleep(stop, policy.idle_seconds)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
