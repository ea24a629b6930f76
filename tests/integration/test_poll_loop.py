"""The poll loop against an in-memory platform implementing monitors/types.Adapter (our own
interface): cursors and restarts, 429, 5xx back-off, paused streams, rejected cursors, the read
budget, leases between two processes, direct messages, shutdown."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from monitors.poll import (
    BACKING_OFF,
    LEASED_ELSEWHERE,
    PAUSED,
    RATE_LIMITED,
    READ,
    WAITING,
    Monitor,
    PollPolicy,
    run_monitor,
)
from monitors.triage import Triage, TriageRules
from monitors.types import (
    Author,
    CursorRejected,
    MonitorError,
    Page,
    Paused,
    Post,
    RateLimited,
    Unavailable,
)
from nlu.embedded import EmbeddedInterpreter
from storage.clock import ManualClock
from storage.db import Store, create_store
from storage.mentions import Grouping
from storage.models import MonitorCursor, SocialPost

START = datetime(2026, 1, 30, 9, 0, tzinfo=UTC)
TEXTS = [
    "@acme my parcel never arrived", "@acme thanks for the quick refund!",
    "@acme the checkout page crashes", "@acme your cashier was rude to me",
    "@acme is the downtown store open today?", "@acme I was charged twice",
]


@pytest.fixture(scope="module")
def interpreter() -> EmbeddedInterpreter:
    return EmbeddedInterpreter(preload=True)


class FakePlatform:
    """Serves `timeline[stream]` (oldest first, numeric ids) in pages from a cursor."""

    platform = "x"

    def __init__(self, timeline: dict[str, list[Post]], page_size: int = 3) -> None:
        self.timeline = timeline
        self.page_size = page_size
        self.calls: list[tuple[str, str | None]] = []
        self.errors: list[MonitorError] = []
        self.whoami_error: MonitorError | None = None
        self.reads_per_post = 1
        self.closed = False

    def streams(self) -> Sequence[str]:
        return list(self.timeline)

    async def whoami(self) -> Author:
        if self.whoami_error is not None:
            raise self.whoami_error
        return Author(id="42", username="acme")

    async def read(self, stream: str, cursor: str | None) -> Page:
        self.calls.append((stream, cursor))
        if self.errors:
            raise self.errors.pop(0)
        if cursor == "expired":
            raise CursorRejected("since_id too old")
        after = int(cursor) if cursor else 0
        fresh = [p for p in self.timeline[stream] if int(p.external_id) > after]
        page = fresh[: self.page_size]
        return Page(
            posts=page, cursor=page[-1].external_id if page else cursor,
            more=len(fresh) > len(page), reads=len(page) * self.reads_per_post,
        )

    async def reply(self, in_reply_to: str, text: str) -> str:
        return "r1"

    async def send_direct(self, recipient: str, text: str, conversation: str | None) -> str:
        return "d1"

    async def close(self) -> None:
        self.closed = True


def timeline(n: int, stream: str = "mentions", first: int = 1) -> list[Post]:
    return [
        Post(
            platform="x", stream=stream, external_id=str(i), text=TEXTS[i % len(TEXTS)] + f" #{i}",
            author=Author(id=f"u{i}", username=f"user{i}", followers=100),
            posted_at=START + timedelta(minutes=i),
        )
        for i in range(first, first + n)
    ]


def monitor(
    store: Store, platform: FakePlatform, interpreter: EmbeddedInterpreter, clock: ManualClock,
    owner: str = "proc-a", **policy: Any,
) -> Monitor:
    return Monitor(
        store=store, adapter=platform, triage=Triage(interpreter, TriageRules()),
        grouping=Grouping(), policy=PollPolicy(**({"poll_seconds": 60.0} | policy)),
        owner=owner, clock=clock, rng=random.Random(7),
    )


async def row(store: Store, stream: str = "mentions") -> MonitorCursor:
    async with store.read() as session:
        found = await session.scalar(select(MonitorCursor).where(MonitorCursor.stream == stream))
    assert found is not None
    return found


async def stored(store: Store) -> int:
    async with store.read() as session:
        return int(await session.scalar(select(func.count()).select_from(SocialPost)) or 0)


async def test_first_start_reads_everything_then_a_restart_continues_from_the_cursor(
    store: Store, interpreter: EmbeddedInterpreter
) -> None:
    clock = ManualClock(START)
    platform = FakePlatform({"mentions": timeline(7)})
    assert await monitor(store, platform, interpreter, clock).poll_all() == {"mentions": READ}
    assert platform.calls == [("mentions", None), ("mentions", "3"), ("mentions", "6")]
    assert await stored(store) == 7
    r = await row(store)
    assert (r.cursor, r.account, r.health, r.reads_count) == ("7", "42", "ok", 7)

    # A new process (restart): same store, new platform posts arrive; only they are read.
    platform.timeline["mentions"] += timeline(2, first=8)
    platform.calls.clear()
    clock.advance(minutes=1)
    await monitor(store, platform, interpreter, clock).poll_all()
    assert platform.calls == [("mentions", "7")]
    assert await stored(store) == 9


async def test_a_429_means_no_read_before_the_reset(
    store: Store, interpreter: EmbeddedInterpreter
) -> None:
    clock = ManualClock(START)
    platform = FakePlatform({"mentions": timeline(2)})
    m = monitor(store, platform, interpreter, clock)
    platform.errors.append(RateLimited(START + timedelta(minutes=5)))
    assert await m.poll_stream("mentions") == RATE_LIMITED
    r = await row(store)
    assert r.health == "rate_limited" and r.retry_at == START + timedelta(minutes=5)
    assert r.health_reason == "rate limited until 2026-01-30T09:05:00Z"

    for minutes in (1, 2, 1):  # 09:04 still inside the window, also for a restarted process
        clock.advance(minutes=minutes)
        fresh = monitor(store, platform, interpreter, clock)
        assert await fresh.poll_stream("mentions") == WAITING
    assert len(platform.calls) == 1
    clock.advance(minutes=1, seconds=1)
    assert await m.poll_stream("mentions") == READ
    assert (await row(store)).health == "ok"
    assert await stored(store) == 2


@pytest.mark.parametrize(
    ("reset", "expected"),
    [
        (START - timedelta(hours=1), START + timedelta(seconds=60)),  # our clock runs ahead
        (START + timedelta(days=9), START + timedelta(seconds=900)),  # nonsense header
    ],
)
async def test_a_skewed_reset_time_is_bounded(
    store: Store, interpreter: EmbeddedInterpreter, reset: datetime, expected: datetime
) -> None:
    platform = FakePlatform({"mentions": timeline(1)})
    platform.errors.append(RateLimited(reset))
    m = monitor(store, platform, interpreter, ManualClock(START), rate_limit_max_seconds=900)
    await m.poll_stream("mentions")
    assert (await row(store)).retry_at == expected


async def test_outages_back_off_exponentially_with_jitter_then_recover(
    store: Store, interpreter: EmbeddedInterpreter
) -> None:
    clock = ManualClock(START)
    platform = FakePlatform({"mentions": timeline(1)})
    m = monitor(store, platform, interpreter, clock, backoff_seconds=10, backoff_max_seconds=60)
    waits = []
    for _ in range(5):
        platform.errors.append(Unavailable("503 Service Unavailable"))
        assert await m.poll_stream("mentions") == BACKING_OFF
        r = await row(store)
        assert r.health == "backing_off" and "503" in (r.health_reason or "")
        assert r.retry_at is not None
        waits.append((r.retry_at - clock.now).total_seconds())
        assert await m.poll_stream("mentions") == WAITING  # not before retry_at
        clock.now = r.retry_at + timedelta(seconds=1)
    for wait, ceiling in zip(waits, (10, 20, 40, 60, 60), strict=True):
        assert ceiling / 2 <= wait <= ceiling
    assert await m.poll_stream("mentions") == READ
    r = await row(store)
    assert r.health == "ok" and r.retry_at is None and r.health_reason is None


async def test_a_revoked_token_pauses_the_stream_until_restart(
    store: Store, interpreter: EmbeddedInterpreter
) -> None:
    clock = ManualClock(START)
    platform = FakePlatform({"mentions": timeline(2)})
    m = monitor(store, platform, interpreter, clock)
    platform.errors.append(Paused("401 Unauthorized: token revoked"))
    assert await m.poll_stream("mentions") == PAUSED
    for _ in range(3):
        clock.advance(hours=1)
        assert await m.poll_stream("mentions") == PAUSED
    assert len(platform.calls) == 1
    r = await row(store)
    assert r.health == "paused" and r.health_reason == "401 Unauthorized: token revoked"
    # Restarted (with a fixed token): reads again.
    assert await monitor(store, platform, interpreter, clock).poll_stream("mentions") == READ
    assert await stored(store) == 2


async def test_a_revoked_token_at_start_pauses_every_stream(
    store: Store, interpreter: EmbeddedInterpreter
) -> None:
    platform = FakePlatform({"mentions": timeline(1), "dms": timeline(1, "dms")})
    platform.whoami_error = Paused("401 Unauthorized")
    outcomes = await monitor(store, platform, interpreter, ManualClock(START)).poll_all()
    assert outcomes == {"mentions": PAUSED, "dms": PAUSED}
    assert platform.calls == []
    assert (await row(store, "dms")).health == "paused"


async def test_a_rejected_cursor_is_reset_and_read_afresh_without_doubles(
    store: Store, interpreter: EmbeddedInterpreter
) -> None:
    clock = ManualClock(START)
    platform = FakePlatform({"mentions": timeline(4)})
    m = monitor(store, platform, interpreter, clock)
    await m.poll_stream("mentions")
    assert await stored(store) == 4
    async with store.transaction() as session:
        r = await session.scalar(select(MonitorCursor))
        assert r is not None
        r.cursor = "expired"
    platform.calls.clear()
    clock.advance(minutes=1)
    assert await m.poll_stream("mentions") == READ
    assert platform.calls[:2] == [("mentions", "expired"), ("mentions", None)]
    assert await stored(store) == 4
    assert (await row(store)).cursor == "4"


async def test_the_read_budget_stops_reading_until_next_month(
    store: Store, interpreter: EmbeddedInterpreter
) -> None:
    clock = ManualClock(START)
    platform = FakePlatform({"mentions": timeline(30)}, page_size=2)
    platform.reads_per_post = 30  # 60 billed reads a page: $0.30 at $0.005
    m = monitor(
        store, platform, interpreter, clock, read_prices={"mentions": 0.005},
        monthly_budget_usd=1.0, page_estimate=100, max_pages=10,
    )
    # $0 and $0.30 spent: another page ($0.50 at most) fits; at $0.60 it would not.
    assert await m.poll_stream("mentions") == PAUSED
    assert len(platform.calls) == 2
    r = await row(store)
    assert r.health == "paused" and (r.health_reason or "").startswith("budget")
    assert r.reads_count == 120
    clock.advance(hours=1)
    assert await m.poll_stream("mentions") == PAUSED
    assert len(platform.calls) == 2
    # Writing is never budgeted: replies still go out.
    assert await platform.reply("1", "Sorry to hear that, we are on it") == "r1"
    # February: a new month's budget.
    clock.advance(days=3)
    assert await m.poll_stream("mentions") == PAUSED  # two more pages, then the cap again
    assert len(platform.calls) == 4
    assert (await row(store)).reads_month == "2026-02"


async def test_two_processes_one_stream_only_the_leaseholder_polls(
    store: Store, interpreter: EmbeddedInterpreter
) -> None:
    second_store = create_store(store.engine.url.render_as_string(hide_password=False))
    try:
        clock = ManualClock(START)
        shared = {"mentions": timeline(3)}
        a_platform, b_platform = FakePlatform(shared), FakePlatform(shared)
        a = monitor(store, a_platform, interpreter, clock, owner="proc-a")
        b = monitor(second_store, b_platform, interpreter, clock, owner="proc-b")
        for round_ in range(4):
            outcomes = await asyncio.gather(a.poll_stream("mentions"), b.poll_stream("mentions"))
            assert sorted(outcomes) == sorted([READ, LEASED_ELSEWHERE]), round_
            shared["mentions"] += timeline(1, first=4 + round_)
            clock.advance(minutes=1)
        assert bool(a_platform.calls) != bool(b_platform.calls)  # one process did all reads
        holder, other, other_platform = (
            (a, b, b_platform) if a_platform.calls else (b, a, a_platform)
        )
        assert await stored(store) == 6
        # The holder dies without releasing: after the lease runs out the other takes over,
        # from the stored cursor.
        clock.advance(seconds=holder.policy.lease.total_seconds() + 1)
        assert await other.poll_stream("mentions") == READ
        assert other_platform.calls == [("mentions", "6")]
        assert await stored(store) == 7
        assert await holder.poll_stream("mentions") == LEASED_ELSEWHERE
        # A clean shutdown hands the stream over at once.
        await other.release()
        assert await holder.poll_stream("mentions") == READ
    finally:
        await second_store.close()


async def test_direct_messages_reach_the_hook_once(
    store: Store, interpreter: EmbeddedInterpreter
) -> None:
    seen: list[list[int]] = []

    async def on_direct_messages(ids: Sequence[int]) -> None:
        seen.append(list(ids))

    platform = FakePlatform({"dms": timeline(2, "dms")})
    m = monitor(store, platform, interpreter, ManualClock(START))
    m.on_direct_messages = on_direct_messages
    await m.poll_all()
    await m.poll_all()
    assert [len(batch) for batch in seen] == [2]
    async with store.read() as session:
        states = (await session.scalars(select(SocialPost.state))).all()
    assert states == ["new", "new"]


async def test_direct_messages_read_with_the_mentions_reach_the_hook_after_their_commit(
    store: Store, interpreter: EmbeddedInterpreter
) -> None:
    # Mastodon reads direct messages with the mentions: one stream, posts of both kinds.
    mixed = timeline(2) + timeline(2, "dms", first=3) + timeline(1, first=5)
    seen: list[tuple[int, str | None, list[str]]] = []

    async def on_direct_messages(ids: Sequence[int]) -> None:
        async with store.read() as session:
            states = (await session.scalars(
                select(SocialPost.state).where(SocialPost.id.in_(ids))
            )).all()
        seen.append((len(ids), (await row(store)).cursor, list(states)))

    platform = FakePlatform({"mentions": mixed})
    m = monitor(store, platform, interpreter, ManualClock(START))
    m.on_direct_messages = on_direct_messages
    await m.poll_all()
    await m.poll_all()
    # Pages of 3: "1 2 3(dm)" then "4(dm) 5"; each page's direct message once, after the
    # page and its cursor were committed.
    assert seen == [(1, "3", ["new"]), (1, "5", ["new"])]


async def test_the_loop_stops_on_request_and_hands_its_leases_back(
    store: Store, interpreter: EmbeddedInterpreter
) -> None:
    stop = asyncio.Event()

    class Stopping(FakePlatform):
        async def read(self, stream: str, cursor: str | None) -> Page:
            stop.set()  # SIGTERM arrives while a read is in flight
            return await super().read(stream, cursor)

    platform = Stopping({"mentions": timeline(2)})
    m = monitor(store, platform, interpreter, ManualClock(START))
    await asyncio.wait_for(run_monitor(m, stop), timeout=30)
    r = await row(store)
    assert r.lease_owner is None and r.cursor == "2" and platform.closed


async def test_a_spike_larger_than_one_poll_is_read_on_at_once_not_a_poll_later(
    store: Store, interpreter: EmbeddedInterpreter
) -> None:
    # 10 mentions, 3 a page, 2 pages a poll: one poll leaves 4 unread. The next poll is due
    # in a minute; X would have dropped the oldest of a real spike by then.
    platform = FakePlatform({"mentions": timeline(10)})
    m = monitor(store, platform, interpreter, ManualClock(START), max_pages=2,
                catch_up_seconds=0.05)
    stop = asyncio.Event()
    loop = asyncio.create_task(run_monitor(m, stop))
    try:
        for _ in range(200):
            if await stored(store) == 10:
                break
            await asyncio.sleep(0.05)
        assert await stored(store) == 10, "the rest of the spike waited for the next poll"
        assert not m.behind
        read = list(platform.calls)
        assert read[:4] == [("mentions", None), ("mentions", "3"), ("mentions", "6"),
                            ("mentions", "9")]
        await asyncio.sleep(0.3)  # caught up: back to the minute between polls
        assert platform.calls == read
    finally:
        stop.set()
        await asyncio.wait_for(loop, timeout=30)


async def test_health_probe_reports_each_stream(
    store: Store, interpreter: EmbeddedInterpreter
) -> None:
    from config.monitors import monitor_health, summarise
    from storage.mentions import stream_health

    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    platform = FakePlatform({"mentions": timeline(2), "dms": timeline(1, "dms"),
                             "search": timeline(1, "search")})
    m = monitor(store, platform, interpreter, clock)
    await m.identify()
    await m.poll_stream("mentions")
    platform.errors.append(RateLimited(clock.now + timedelta(minutes=15)))
    await m.poll_stream("dms")
    platform.errors.append(Paused("403 Forbidden: client not enrolled"))
    await m.poll_stream("search")

    probe = await monitor_health(store)
    report = probe()
    assert report["status"] == "degraded"
    until = f"{clock.now + timedelta(minutes=15):%Y-%m-%dT%H:%M:%SZ}"
    assert report["streams"] == {
        "x/42/dms": {"health": f"rate limited until {until}", "last_read": report["streams"][
            "x/42/dms"]["last_read"], "reads_this_month": 0},
        "x/42/mentions": {"health": "ok", "last_read": report["streams"]["x/42/mentions"][
            "last_read"], "reads_this_month": 2},
        "x/42/search": {"health": "paused: 403 Forbidden: client not enrolled",
                        "last_read": report["streams"]["x/42/search"]["last_read"],
                        "reads_this_month": 0},
    }
    # Once the reset time has passed the stream no longer reports as limited.
    async with store.read() as session:
        later = summarise(await stream_health(session), {"mentions": 0.005},
                          clock.now + timedelta(minutes=16))
    assert later["streams"]["x/42/dms"]["health"] == "ok"
    assert later["x_read_cost_usd_this_month"] == 0.01


def _post(platform: str, external_id: str, text: str, minute: int) -> Post:
    return Post(
        platform=platform, stream="mentions", external_id=external_id, text=text,
        author=Author(id=f"{platform}{external_id}", username=f"{platform}{external_id}",
                      followers=10),
        posted_at=START + timedelta(minutes=minute),
    )


async def _group_of(store: Store, platform: str, external_id: str) -> tuple[int, int | None]:
    async with store.read() as session:
        found = (await session.execute(
            select(SocialPost.id, SocialPost.group_id).where(
                SocialPost.platform == platform, SocialPost.external_id == external_id)
        )).one()
    return int(found[0]), found[1]


async def test_a_similar_text_joins_a_group_another_process_started_before_or_after_it_started(
    store: Store, interpreter: EmbeddedInterpreter
) -> None:
    clock = ManualClock(START)
    x = FakePlatform({"mentions": []})
    mastodon = FakePlatform({"mentions": [
        _post("mastodon", "1", "@acme my milk was sour at the Leeds store this morning", 0)]})
    mastodon.platform = "mastodon"  # type: ignore[misc]
    # Process B reads Mastodon and starts a group; process A (its own near-duplicate memory,
    # as after a restart or on another machine) starts afterwards and reads X.
    b = monitor(store, mastodon, interpreter, clock, owner="proc-b")
    assert await b.poll_all() == {"mentions": READ}
    a = monitor(store, x, interpreter, clock, owner="proc-a")
    x.timeline["mentions"].append(
        _post("x", "11", "same here!! @acme my milk was sour at the Leeds store this morning", 1))
    clock.advance(minutes=1)
    assert await a.poll_all() == {"mentions": READ}
    leader, _ = await _group_of(store, "mastodon", "1")
    assert (await _group_of(store, "x", "11"))[1] == leader

    # B starts another group while A runs: A's next poll knows it too.
    mastodon.timeline["mentions"].append(_post(
        "mastodon", "2", "the self checkout at the Glasgow store keeps freezing on me", 2))
    clock.advance(minutes=1)
    await b.poll_all()
    x.timeline["mentions"].append(_post(
        "x", "12", "ugh the self checkout at the Glasgow store keeps freezing on me again", 3))
    clock.advance(minutes=1)
    await a.poll_all()
    second, _ = await _group_of(store, "mastodon", "2")
    assert (await _group_of(store, "x", "12"))[1] == second
    async with store.read() as session:
        sizes = dict((await session.execute(
            select(SocialPost.id, SocialPost.group_size).where(
                SocialPost.id.in_([leader, second])))).all())
    assert sizes == {leader: 2, second: 2}
    # Unrelated text stays alone.
    x.timeline["mentions"].append(_post("x", "13", "@acme where is my parcel from last week", 4))
    clock.advance(minutes=1)
    await a.poll_all()
    assert (await _group_of(store, "x", "13"))[1] is None


async def test_after_each_poll_the_auto_ticket_rule_opens_tickets_for_urgent_mentions(
    store: Store, interpreter: EmbeddedInterpreter
) -> None:
    from config.monitors import auto_ticket_hook
    from storage.models import Ticket
    from storage.sla import SlaPolicy
    from storage.tickets import TicketRules

    clock = ManualClock(START)
    rules = TicketRules(sla=SlaPolicy(), clock=clock)
    platform = FakePlatform({"mentions": [
        _post("x", "1", "@acme your baby formula made my son sick, he was in hospital", 0),
        _post("x", "2", "@acme the queue at the Leeds store was long today", 1),
    ]})
    m = monitor(store, platform, interpreter, clock)
    m.after_poll = auto_ticket_hook(store, rules, ("P1",))
    assert auto_ticket_hook(store, rules, ()) is None  # the rule off: nothing runs
    clock.advance(minutes=5)
    await m.poll_all()
    async with store.read() as session:
        tickets = (await session.scalars(select(Ticket))).all()
        posts = dict((await session.execute(
            select(SocialPost.external_id, SocialPost.state))).all())
    assert [(t.priority, t.channel) for t in tickets] == [("P1", "x")]
    assert posts == {"1": "ticketed", "2": posts["2"]} and posts["2"] != "ticketed"

    async def broken() -> None:
        raise RuntimeError("database went away")

    m.after_poll = broken  # a failing rule never stops the polling
    platform.timeline["mentions"].append(_post("x", "3", "@acme thanks for the refund!", 2))
    assert await m.poll_all() == {"mentions": READ}
    assert await stored(store) == 3
