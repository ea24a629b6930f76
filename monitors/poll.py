"""One poll loop for every platform adapter (monitors/types.Adapter).

Per (platform, account, stream) a row in monitor_cursors holds the cursor, the lease, the health
and the month's read count. Each poll of a stream:
1. takes (or renews) the lease with one UPDATE .. WHERE the lease is free, expired or ours, so
   exactly one process polls a stream when several share PostgreSQL;
2. skips the read while `retry_at` is ahead (a 429's reset, a back-off): stored in the row, so a
   restart or another process honours it too;
3. reads pages from the cursor (Page.more: the next page at once, up to `max_pages`), triages
   them and writes posts + cursor + read count in one transaction (storage/mentions.ingest).
Errors become health: RateLimited -> rate_limited until the (bounded) reset; Unavailable and
anything unexpected -> backing_off with exponential back-off and jitter; Paused -> paused with
the reason until this process restarts; CursorRejected -> the cursor is reset and read afresh.
Before each read the month's estimated cost (read counts x the price table) is checked against
the budget: past it, the stream pauses ("paused: budget") and resumes in the next month.
Writing (replies, direct messages) never goes through here, so the budget never stops it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, or_, select, update

from monitors.triage import Triage
from monitors.types import (
    Adapter,
    CursorRejected,
    Paused,
    RateLimited,
    Unavailable,
)
from storage.clock import Clock, utc_now
from storage.db import Store
from storage.mentions import (
    CursorAdvance,
    Grouping,
    LeaseLost,
    StreamKey,
    ensure_stream,
    ingest,
    newest_post_id,
    recent_leaders,
)
from storage.models import MonitorCursor

log = logging.getLogger(__name__)
CURSORS: Table = MonitorCursor.__table__  # type: ignore[assignment]

OK, BACKING_OFF, RATE_LIMITED, PAUSED = "ok", "backing_off", "rate_limited", "paused"
BUDGET_REASON = "budget"

# What one poll of a stream did (tests and logs read it).
READ, LEASED_ELSEWHERE, WAITING, STOPPED, LOST = (
    "read", "leased_elsewhere", "waiting", "stopped", "lease_lost"
)

DirectHook = Callable[[Sequence[int]], Awaitable[None]]
AfterPoll = Callable[[], Awaitable[None]]
RECALL_PAGE = 2000  # group leaders read at a time into the near-duplicate memory


@dataclass(frozen=True, slots=True)
class PollPolicy:
    poll_seconds: float = 60.0
    lease_seconds: float = 180.0
    max_pages: int = 10
    backoff_seconds: float = 5.0
    backoff_max_seconds: float = 900.0
    rate_limit_max_seconds: float = 900.0
    # USD per post read, by stream; a stream without a price costs nothing (Mastodon).
    read_prices: Mapping[str, float] = field(default_factory=dict)
    monthly_budget_usd: float | None = None
    # What one more read may cost at most (X returns up to 100 posts a page).
    page_estimate: int = 100
    # The pause before the next poll when a stream still had pages after `max_pages`: X keeps
    # only the 800 newest mentions, so a spike read at the normal pace loses the oldest.
    catch_up_seconds: float = 1.0

    @property
    def lease(self) -> timedelta:
        # The lease must outlive the pause between two polls, or a second process takes over.
        return timedelta(seconds=max(self.lease_seconds, 2 * self.poll_seconds + 30))


@dataclass(slots=True)
class _StreamMemory:
    failures: int = 0
    paused: str | None = None
    behind: bool = False  # the last read stopped at max_pages with more to read


@dataclass
class Monitor:
    """The poll loop's state for one adapter in one process."""

    store: Store
    adapter: Adapter
    triage: Triage
    grouping: Grouping
    policy: PollPolicy
    owner: str
    clock: Clock = utc_now
    on_direct_messages: DirectHook | None = None
    after_poll: AfterPoll | None = None  # runs after every poll: the auto-ticket rule
    rng: random.Random = field(default_factory=random.Random)
    account: str | None = None
    memory: dict[str, _StreamMemory] = field(default_factory=dict)

    @property
    def platform(self) -> str:
        return self.adapter.platform

    def key(self, stream: str) -> StreamKey:
        return StreamKey(self.platform, self.account or "unknown", stream)

    async def identify(self) -> None:
        """Who we read as: the cursors are keyed by it. A revoked token pauses every stream."""
        if self.account is not None:
            return
        try:
            self.account = (await self.adapter.whoami()).id
        except Paused as exc:
            self.account = await self._known_account()
            for stream in self.adapter.streams():
                self.memory.setdefault(stream, _StreamMemory()).paused = str(exc)
        except Exception as exc:
            log.warning("%s: cannot tell who we are yet (%s)", self.platform, type(exc).__name__)
            raise

    async def _known_account(self) -> str:
        async with self.store.read() as session:
            known = await session.scalar(
                select(CURSORS.c.account).where(CURSORS.c.platform == self.platform).limit(1)
            )
        return str(known) if known else "unknown"

    async def poll_all(self) -> dict[str, str]:
        await self.identify()
        try:
            await self.recall_groups()
        except Exception as exc:  # grouping by exact fingerprint still works without it
            log.warning("%s: could not read the stored groups (%s)", self.platform,
                        type(exc).__name__)
        outcomes = {stream: await self.poll_stream(stream) for stream in self.adapter.streams()}
        if self.after_poll is not None:
            try:
                await self.after_poll()
            except Exception:  # the posts are stored; the next poll tries again
                log.exception("%s: after-poll rule failed", self.platform)
        return outcomes

    async def recall_groups(self) -> None:
        """Near-duplicates are found in this process's memory. Before each poll it learns the
        groups stored since it last looked (at start: the newest of the grouping window), so
        "same here!! my milk was sour" joins a group another process started, or one started
        before a restart, not only one this process saw."""
        since = self.clock() - self.grouping.window
        first = self.triage.recalled_id == 0
        while True:
            async with self.store.read() as session:
                # Where "since it last looked" starts, even when the window holds no leader:
                # else an empty window would be searched from the start at every poll.
                top = await newest_post_id(session) if first else 0
                rows = await recent_leaders(
                    session, after_id=self.triage.recalled_id, since=since,
                    limit=self.triage.near.max_entries if first else RECALL_PAGE,
                )
            # At start the window may hold 20,000 leaders (~0.7 s of MinHash): in slices, so
            # the desk sharing this event loop keeps answering meanwhile.
            for i in range(0, len(rows), RECALL_PAGE // 4):
                self.triage.recall([(text, fp) for _, text, fp in rows[i:i + RECALL_PAGE // 4]])
                await asyncio.sleep(0)
            if rows or top:
                self.triage.recalled_id = max(top, rows[-1][0] if rows else 0)
            if first or len(rows) < RECALL_PAGE:
                return

    async def poll_stream(self, stream: str) -> str:
        key = self.key(stream)
        memory = self.memory.setdefault(stream, _StreamMemory())
        now = self.clock()
        row = await self._take_lease(key, now)
        if row is None:
            return LEASED_ELSEWHERE
        if memory.paused is not None:
            await self._health(key, PAUSED, memory.paused, None)
            return PAUSED
        if row["retry_at"] is not None and row["retry_at"] > now:
            return WAITING
        cursor: str | None = row["cursor"]
        reset_once = False
        memory.behind = False
        for page_number in range(1, self.policy.max_pages + 1):
            now = self.clock()
            over = await self._over_budget(stream, now)
            if over is not None:
                await self._health(key, PAUSED, over, None)
                return PAUSED
            try:
                page = await self.adapter.read(stream, cursor)
            except RateLimited as exc:
                until = self._bounded(exc.until, now)
                reason = f"rate limited until {until:%Y-%m-%dT%H:%M:%SZ}"
                await self._health(key, RATE_LIMITED, reason, until)
                return RATE_LIMITED
            except Paused as exc:
                memory.paused = str(exc) or "paused by the platform"
                log.error("%s paused: %s", key, memory.paused)
                await self._health(key, PAUSED, memory.paused, None)
                return PAUSED
            except CursorRejected:
                if reset_once:
                    return await self._back_off(key, memory, "cursor rejected twice", now)
                reset_once = True
                log.warning("%s: the platform rejected the cursor; reading afresh", key)
                cursor = None
                await self._reset_cursor(key)
                continue
            except Unavailable as exc:
                return await self._back_off(key, memory, str(exc) or "unavailable", now)
            except Exception as exc:  # malformed data, a bug in an adapter: never a dead loop
                log.exception("%s: read failed", key)
                return await self._back_off(key, memory, type(exc).__name__, now)
            try:
                written = await self._write(key, page, cursor, now)
            except LeaseLost:
                log.warning("%s: lease taken over by another process", key)
                return LOST
            memory.failures = 0
            if page.cursor is not None:
                cursor = page.cursor
            # Any stream's page may hold direct messages (Mastodon reads them with mentions):
            # `written` lists the direct messages this page stored, whatever the stream.
            if written and self.on_direct_messages is not None:
                try:
                    await self.on_direct_messages(written)
                except Exception:  # stored already; the dialogue catches up on its own
                    log.exception("%s: direct message hook failed", key)
            if not page.more:
                break
            memory.behind = page_number == self.policy.max_pages
        return READ

    @property
    def behind(self) -> bool:
        """A stream has more to read than the last poll's `max_pages` took."""
        return any(m.behind for m in self.memory.values())

    async def _write(self, key: StreamKey, page: Any, cursor: str | None, now: datetime
                     ) -> list[int]:
        rows = await self.triage.mentions(page.posts)
        advance = CursorAdvance(
            key,
            cursor=page.cursor if page.cursor is not None else cursor,
            reads=page.reads,
            month=f"{now:%Y-%m}",
            owner=self.owner,
            lease_until=self.clock() + self.policy.lease,
        )
        async with self.store.transaction() as session:
            result = await ingest(session, rows, cursor=advance, grouping=self.grouping,
                                  now=self.clock())
        if result.inserted:
            log.info("%s: %d new posts (%d grouped, %d flagged)", key, result.inserted,
                     result.grouped, result.flagged)
        return result.direct_ids

    def _bounded(self, until: datetime, now: datetime) -> datetime:
        """A reset time in the past or absurdly far (clock skew, a bad header) is bounded."""
        longest = now + timedelta(seconds=self.policy.rate_limit_max_seconds)
        if until <= now:
            return now + timedelta(seconds=min(self.policy.poll_seconds,
                                               self.policy.rate_limit_max_seconds))
        return min(until, longest)

    async def _back_off(self, key: StreamKey, memory: _StreamMemory, reason: str, now: datetime
                        ) -> str:
        memory.failures += 1
        ceiling = min(
            self.policy.backoff_max_seconds,
            self.policy.backoff_seconds * 2 ** min(memory.failures - 1, 30),
        )
        # "Equal jitter": at least half the step, so retries spread but never hammer.
        delay = ceiling / 2 + self.rng.uniform(0, ceiling / 2)
        until = now + timedelta(seconds=delay)
        log.warning("%s: %s; retrying after %.0f s", key, reason, delay)
        await self._health(key, BACKING_OFF,
                           f"backing off until {until:%Y-%m-%dT%H:%M:%SZ}: {reason}"[:500], until)
        return BACKING_OFF

    async def _over_budget(self, stream: str, now: datetime) -> str | None:
        budget = self.policy.monthly_budget_usd
        price = self.policy.read_prices.get(stream, 0.0)
        if budget is None or price <= 0:
            return None
        async with self.store.read() as session:
            rows = await session.execute(
                select(CURSORS.c.stream, CURSORS.c.reads_count).where(
                    CURSORS.c.platform == self.platform, CURSORS.c.reads_month == f"{now:%Y-%m}"
                )
            )
            spent = sum(n * self.policy.read_prices.get(s, 0.0) for s, n in rows.all())
        if spent + price * self.policy.page_estimate > budget:
            return f"{BUDGET_REASON}: ${spent:.2f} of ${budget:.2f} read this month"
        return None

    async def _take_lease(self, key: StreamKey, now: datetime) -> dict[str, Any] | None:
        where = (
            CURSORS.c.platform == key.platform,
            CURSORS.c.account == key.account,
            CURSORS.c.stream == key.stream,
        )
        async with self.store.transaction() as session:
            await ensure_stream(session, key, now)
            taken: Any = await session.execute(
                update(CURSORS)
                .where(
                    *where,
                    or_(
                        CURSORS.c.lease_owner.is_(None),
                        CURSORS.c.lease_owner == self.owner,
                        CURSORS.c.lease_until.is_(None),
                        CURSORS.c.lease_until < now,
                    ),
                )
                .values(lease_owner=self.owner, lease_until=now + self.policy.lease)
            )
            if taken.rowcount != 1:
                return None
            row = await session.execute(
                select(CURSORS.c.cursor, CURSORS.c.retry_at, CURSORS.c.health).where(*where)
            )
            return dict(row.one()._mapping)

    async def _mine(self, key: StreamKey, **values: Any) -> None:
        async with self.store.transaction() as session:
            await session.execute(
                update(CURSORS)
                .where(
                    CURSORS.c.platform == key.platform,
                    CURSORS.c.account == key.account,
                    CURSORS.c.stream == key.stream,
                    CURSORS.c.lease_owner == self.owner,
                )
                .values(**values)
            )

    async def _health(self, key: StreamKey, health: str, reason: str | None,
                      retry_at: datetime | None) -> None:
        await self._mine(key, health=health, health_reason=reason, retry_at=retry_at)

    async def _reset_cursor(self, key: StreamKey) -> None:
        await self._mine(key, cursor=None, health=OK, health_reason="cursor reset",
                         updated_at=self.clock())

    async def release(self) -> None:
        """Hands the streams back at shutdown so another process takes over at once."""
        async with self.store.transaction() as session:
            await session.execute(
                update(CURSORS)
                .where(CURSORS.c.platform == self.platform, CURSORS.c.lease_owner == self.owner)
                .values(lease_owner=None, lease_until=None)
            )


async def run_monitor(monitor: Monitor, stop: asyncio.Event) -> None:
    """Polls every stream of one adapter until `stop`; then releases the leases."""
    try:
        while not stop.is_set():
            try:
                outcomes = await monitor.poll_all()
                log.debug("%s poll: %s", monitor.platform, outcomes)
            except Exception:
                log.exception("%s: poll failed; retrying", monitor.platform)
            pause = monitor.policy.poll_seconds
            if monitor.behind:  # a spike: read on at once (rate limits still apply)
                pause = min(pause, monitor.policy.catch_up_seconds)
            try:
                await asyncio.wait_for(stop.wait(), pause)
            except TimeoutError:
                pass
    finally:
        try:
            await monitor.release()
        except Exception:
            log.warning("%s: could not release the stream leases", monitor.platform)
        await monitor.adapter.close()
