"""Desk benchmark: seeds a year of data on a scratch PostgreSQL (1,000,000 social posts,
200,000 tickets with their events, messages and surveys) and prints p50/p95 of the queue, the
ticket list and views, a ticket, and the reports, through the real aiohttp app in-process
(the JSON API with a Bearer token, the pages with a logged-in session cookie).
Prints figures; never passes or fails. Targets: pages and lists p95 <= 50 ms, reports over a
year <= 500 ms.

    .venv/bin/python -m bench.desk [--posts 1000000] [--tickets 200000] [--requests 40]
    .venv/bin/python -m bench.desk --reports [--rounds 7]   # the reports only, before/after
    .venv/bin/python -m bench.desk --database URL ...       # an already seeded database, kept

`--reports` times each query of the year's report alone, the way it ran before (commit 9ccf916:
default session settings, mentions by one GROUP BY over a (posted_at, platform, state) index,
created here for the comparison) and as it runs now, interleaved in the same run so both see the
same machine load; then the whole report both ways, then the report endpoints.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from aiohttp import ClientSession, CookieJar
from aiohttp.test_utils import TestServer
from argon2 import PasswordHasher
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from bench.databases import scratch_postgres
from desk.app import make_app
from desk.context import DeskContext
from storage import reports
from storage.accounts import issue_token, upsert_agent
from storage.clock import utc_now
from storage.db import Store, create_store
from storage.intake import TicketIntake
from storage.migrate import upgrade
from storage.models import SocialPost
from storage.sla import SlaPolicy
from storage.tickets import TicketRules

AGENTS = 20
CUSTOMERS = 50_000
PASSWORD = "bench-password-1"
CATEGORIES = ("service_attitude", "service_speed", "product_quality", "product_safety",
              "billing", "pricing", "delivery", "returns", "store_environment", "website_app",
              "other")
CHANNELS = ("telegram", "webchat", "x", "mastodon", "phone", "email", "in_store")


def _array(values: tuple[str, ...]) -> str:
    return "(ARRAY[" + ",".join(f"'{v}'" for v in values) + "])"


# Server-side generation (INSERT ... SELECT over generate_series): no rows cross the wire, so
# a year of data seeds in minutes. Random but fixed in shape: statuses, priorities, categories
# and channels in realistic proportions, times spread over the year before :now.
SEED_SQL = [
    f"""INSERT INTO customers (name, language, created_at)
        SELECT 'Customer ' || g, 'en', :now - interval '400 days'
        FROM generate_series(1, {CUSTOMERS}) g""",
    """INSERT INTO tickets (kind, status, priority, category, channel, customer_id, subject,
        description, assignee_id, needs_human, created_at, updated_at, first_response_due,
        resolution_due, first_response_at, resolved_at, closed_at, csat, version)
      SELECT kind, status, priority, CASE WHEN kind = 'complaint' THEN category END, channel,
        customer_id, 'Seeded ' || kind || ' ' || g, 'Seeded ticket text number ' || g,
        assignee_id, false, c, c + interval '1 hour', c + fr_target, c + res_target,
        CASE WHEN status <> 'new' THEN c + fr_target * (r6 * 1.4) END,
        CASE WHEN status IN ('resolved', 'closed') THEN c + res_target * (r7 * 1.3) END,
        CASE WHEN status = 'closed' THEN c + res_target * 1.4 END,
        CASE WHEN status IN ('resolved', 'closed') AND r8 < 0.35
             THEN 1 + floor(r8 / 0.35 * 5)::int END,
        1
      FROM (
        SELECT g, c, r6, r7, r8, kind, status, priority, category, channel, customer_id,
          assignee_id,
          CASE priority WHEN 'P1' THEN interval '15 minutes' WHEN 'P2' THEN interval '1 hour'
               WHEN 'P3' THEN interval '4 hours' ELSE interval '24 hours' END AS fr_target,
          CASE priority WHEN 'P1' THEN interval '4 hours' WHEN 'P2' THEN interval '24 hours'
               WHEN 'P3' THEN interval '72 hours' ELSE interval '7 days' END AS res_target
        FROM (
          SELECT g, c, random() AS r6, random() AS r7, random() AS r8,
            CASE WHEN r1 < 0.8 THEN 'complaint' WHEN r1 < 0.9 THEN 'suggestion'
                 WHEN r1 < 0.95 THEN 'praise' ELSE 'question' END AS kind,
            CASE WHEN c > :now - interval '3 days' AND r2 < 0.5 THEN 'new'
                 WHEN r2 < 0.03 THEN 'new' WHEN r2 < 0.06 THEN 'acknowledged'
                 WHEN r2 < 0.12 THEN 'in_progress' WHEN r2 < 0.16 THEN 'waiting_customer'
                 WHEN r2 < 0.45 THEN 'resolved' ELSE 'closed' END AS status,
            (ARRAY['P1','P2','P2','P3','P3','P3','P3','P4'])[1 + floor(r3 * 8)::int]
              AS priority,
            (CATEGORIES)[1 + floor(r4 * 11)::int] AS category,
            (CHANNELS)[1 + floor(r5 * 7)::int] AS channel,
            1 + (g % CUSTOMER_COUNT) AS customer_id,
            CASE WHEN r5 < 0.75 THEN 1 + (g % AGENT_COUNT) END AS assignee_id
          FROM (
            SELECT g, :now - random() * interval '365 days' AS c, random() AS r1,
                   random() AS r2, random() AS r3, random() AS r4, random() AS r5
            FROM generate_series(1, :tickets) g
          ) base
        ) picked
      ) shaped""",
    """INSERT INTO ticket_events (ticket_id, at, type, from_value, to_value, actor)
       SELECT id, created_at, 'created', NULL, 'new', 'system' FROM tickets""",
    """INSERT INTO ticket_events (ticket_id, at, type, from_value, to_value, actor)
       SELECT id, first_response_at, 'status', 'new', 'in_progress', 'agent:bench1'
       FROM tickets WHERE first_response_at IS NOT NULL""",
    """INSERT INTO ticket_events (ticket_id, at, type, from_value, to_value, actor)
       SELECT id, resolved_at, 'status', 'in_progress', 'resolved', 'agent:bench1'
       FROM tickets WHERE resolved_at IS NOT NULL""",
    """INSERT INTO messages (ticket_id, direction, author_type, text, public, channel,
                             created_at)
       SELECT id, 'in', 'customer', description, true, channel, created_at FROM tickets""",
    """INSERT INTO messages (ticket_id, direction, author_type, author_name, text, public,
                             channel, created_at)
       SELECT id, 'out', 'agent', 'bench1', 'Sorry to hear that; we are on it.', true, channel,
              first_response_at
       FROM tickets WHERE first_response_at IS NOT NULL""",
    """INSERT INTO surveys (ticket_id, score, channel, asked_at, answered_at)
       SELECT id, csat, channel, resolved_at, resolved_at + interval '2 hours'
       FROM tickets WHERE csat IS NOT NULL""",
    """INSERT INTO social_posts (platform, stream, external_id, url, author_id, author_username,
        author_followers, text, language, posted_at, fetched_at, state, intent, priority,
        category, sentiment_label, sentiment_score, group_size, handled_by, handled_at,
        version)
      SELECT platform, 'mentions', 'bench-' || g, 'https://example.invalid/' || g,
        'a' || (g % 90000),
        'user' || (g % 90000), floor(power(r3, 4) * 200000)::int,
        'Seeded post number ' || g || ' about @shop', 'en', p, p, state,
        CASE WHEN state IN ('flagged', 'ticketed', 'replied', 'dismissed') THEN 'complaint'
             ELSE 'praise' END,
        CASE WHEN state IN ('flagged', 'ticketed', 'replied', 'dismissed')
             THEN (ARRAY['P1','P2','P3','P3'])[1 + floor(r4 * 4)::int] ELSE 'P4' END,
        CASE WHEN state IN ('flagged', 'ticketed', 'replied', 'dismissed')
             THEN (CATEGORIES)[1 + floor(r4 * 11)::int] END,
        CASE WHEN state = 'ignored' THEN 'positive' ELSE 'negative' END,
        CASE WHEN state = 'ignored' THEN 0.6 ELSE -0.6 END,
        1,
        CASE WHEN state IN ('ticketed', 'replied', 'dismissed') THEN 'bench1' END,
        CASE WHEN state IN ('ticketed', 'replied', 'dismissed')
             THEN p + interval '1 hour' * (1 + r4 * 10) END,
        1
      FROM (
        SELECT g, p, r3, r4,
          CASE WHEN r1 < 0.6 THEN 'x' ELSE 'mastodon' END AS platform,
          CASE WHEN r2 < 0.05 THEN 'new' WHEN r2 < 0.15 THEN 'flagged'
               WHEN r2 < 0.20 THEN 'ticketed' WHEN r2 < 0.30 THEN 'replied'
               WHEN r2 < 0.40 THEN 'dismissed' ELSE 'ignored' END AS state
        FROM (
          SELECT g, :now - random() * interval '365 days' AS p, random() AS r1,
                 random() AS r2, random() AS r3, random() AS r4
          FROM generate_series(1, :posts) g
        ) base
      ) picked""",
]


async def seed(store: Store, posts: int, tickets: int, now: datetime) -> None:
    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    async with store.transaction() as s:
        for i in range(1, AGENTS + 1):
            await upsert_agent(s, hasher, username=f"bench{i}", role="admin", password=PASSWORD,
                               now=now)
    for sql in SEED_SQL:
        sql = (sql.replace(":now", "CAST(:now AS timestamptz)")
               .replace(":posts", str(posts)).replace(":tickets", str(tickets))
               .replace("(CATEGORIES)", _array(CATEGORIES))
               .replace("(CHANNELS)", _array(CHANNELS))
               .replace("CUSTOMER_COUNT", str(CUSTOMERS)).replace("AGENT_COUNT", str(AGENTS)))
        started = time.perf_counter()
        async with store.transaction() as s:
            result = await s.execute(text(sql), {"now": now})
        table = sql.split("INTO", 1)[1].split()[0]
        rows = getattr(result, "rowcount", 0)
        print(f"  seeded {rows:>9,} {table:<14} {time.perf_counter() - started:6.1f} s",
              flush=True)
    async with store.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        # As autovacuum would after a load: fresh statistics and visibility maps.
        await conn.execute(text("VACUUM ANALYZE"))


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _login(session: ClientSession, base: str) -> None:
    form = await (await session.get(f"{base}/login")).text()
    found = re.search(r'name="csrf_token" value="([^"]+)"', form)
    if found is None:
        raise RuntimeError("the login page carries no CSRF token")
    resp = await session.post(f"{base}/login", data={
        "username": "bench1", "password": PASSWORD, "csrf_token": found.group(1)},
        allow_redirects=False)
    if resp.status != 302:
        raise RuntimeError(f"login failed: {resp.status}")


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- the report, before and after ----------------------------------------------------------

# The index the mentions GROUP BY read before migration 0007 (same columns, bench-only name).
BEFORE_INDEX = "bench_ix_social_posts_report_before"
Part = Callable[[AsyncSession, reports.Period, datetime], Awaitable[Any]]


async def _mentions_grouped(session: AsyncSession, period: reports.Period, _now: datetime) -> Any:
    """The mentions query before: one GROUP BY date_bin(posted_at), platform, state."""
    bucket = reports._bucket_of(SocialPost.posted_at, period.bucket, True).label("b")
    return (await session.execute(
        select(bucket, SocialPost.platform, SocialPost.state, func.count())
        .where(reports._in(period, SocialPost.posted_at))
        .group_by(bucket, SocialPost.platform, SocialPost.state)
    )).all()


# (name, before, after): the same statement both ways except mentions; "after" also runs with
# the report's session settings (no JIT, work_mem for the percentile sorts).
REPORT_PARTS: list[tuple[str, Part, Part]] = [
    ("ticket counts (status x category x ...)",
     lambda s, p, now: reports._ticket_counts(s, p, now),
     lambda s, p, now: reports._ticket_counts(s, p, now)),
    ("categories of the previous period",
     lambda s, p, now: reports._category_counts(s, p.previous),
     lambda s, p, now: reports._category_counts(s, p.previous)),
    ("csat", lambda s, p, now: reports._csat(s, p), lambda s, p, now: reports._csat(s, p)),
    ("first response + resolution percentiles",
     lambda s, p, now: reports._times(s, p), lambda s, p, now: reports._times(s, p)),
    ("mentions by bucket x platform x state", _mentions_grouped,
     lambda s, p, now: reports._mention_counts(s, p)),
    ("ticket volume by bucket x channel x category",
     lambda s, p, now: reports._volume(s, p), lambda s, p, now: reports._volume(s, p)),
]


async def _run_part(store: Store, part: Part, period: reports.Period, now: datetime,
                    tuned: bool) -> float:
    started = time.perf_counter()
    async with store.read() as session:
        if tuned:
            await reports._tune(session)
        await part(session, period, now)
    return (time.perf_counter() - started) * 1000


async def _whole_before(store: Store, period: reports.Period, now: datetime) -> float:
    """The six queries at once on their own connections, as summary_of ran them before."""
    started = time.perf_counter()
    await asyncio.gather(*(_run_part(store, before, period, now, tuned=False)
                           for _, before, _ in REPORT_PARTS))
    return (time.perf_counter() - started) * 1000


async def _whole_after(store: Store, period: reports.Period, now: datetime) -> float:
    started = time.perf_counter()
    await reports.summary_of(store, period, now)
    return (time.perf_counter() - started) * 1000


async def compare_reports(store: Store, now: datetime, rounds: int) -> None:
    """Each query of the year's report, then the whole report, before and after, interleaved
    (the order alternates every round) so that both see the same load."""
    async with store.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f"CREATE INDEX IF NOT EXISTS {BEFORE_INDEX} "
                                "ON social_posts (posted_at, platform, state)"))
        await conn.execute(text("VACUUM ANALYZE social_posts"))
    try:
        for days in (365, 30):
            period = reports.last_days(days, now)
            print(f"\nreport of {days} days, each query alone, median of {rounds} ({_load()})")
            print(f"{'query':<48} {'before ms':>10} {'after ms':>10}")
            cases: list[tuple[str, Part | None, Part | None]] = [
                *REPORT_PARTS, ("whole report (queries at once)", None, None)]
            for name, before, after_part in cases:
                samples: dict[bool, list[float]] = {False: [], True: []}

                async def run(after: bool, before: Part | None = before,
                              after_part: Part | None = after_part,
                              period: reports.Period = period) -> float:
                    if before is None or after_part is None:
                        whole = _whole_after if after else _whole_before
                        return await whole(store, period, now)
                    return await _run_part(store, after_part if after else before, period,
                                           now, tuned=after)

                for after in (False, True):  # warm-up: plans, caches
                    await run(after)
                for i in range(rounds):
                    for after in ((False, True) if i % 2 == 0 else (True, False)):
                        samples[after].append(await run(after))
                print(f"{name:<48} {statistics.median(samples[False]):10.1f} "
                      f"{statistics.median(samples[True]):10.1f}", flush=True)
            print(_load())
    finally:
        async with store.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"DROP INDEX IF EXISTS {BEFORE_INDEX}"))


async def measure(store: Store, requests: int, tickets: int, now: datetime,
                  only_reports: bool = False) -> None:
    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    rules = TicketRules(sla=SlaPolicy(), clock=lambda: now)
    async with store.transaction() as s:
        token = await issue_token(s, "bench1", now)
    intake = TicketIntake(store, rules)
    server = TestServer(make_app(DeskContext(store=store, rules=rules, hasher=hasher,
                                             intake=intake, secret="bench-secret")))
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    rng = random.Random(11)
    year = f"since={(now - timedelta(days=365)).date()}&until={(now + timedelta(days=1)).date()}"
    api = {"Authorization": f"Bearer {token}"}
    # (name, path, is a report, uses the API token)
    cases = [
        ("queue API  /api/mentions?state=flagged", "/api/mentions?state=flagged", False, True),
        ("queue page /queue", "/queue", False, False),
        ("list API   /api/tickets", "/api/tickets", False, True),
        ("list API   /api/tickets?status=new,in_progress", "/api/tickets?status=new,in_progress",
         False, True),
        ("view API   /api/tickets?view=mine", "/api/tickets?view=mine", False, True),
        ("view API   /api/tickets?view=unassigned", "/api/tickets?view=unassigned", False, True),
        ("view API   /api/tickets?view=breached", "/api/tickets?view=breached", False, True),
        ("list page  /tickets", "/tickets", False, False),
        ("view page  /tickets?view=breaching_soon", "/tickets?view=breaching_soon", False,
         False),
        ("ticket API /api/tickets/{n}", "/api/tickets/CL-{n}", False, True),
        ("ticket page /tickets/{n}", "/tickets/CL-{n}", False, False),
        ("report API /api/reports/summary (30 days)", "/api/reports/summary", True, True),
        ("report API /api/reports/summary (365 days)", f"/api/reports/summary?{year}", True,
         True),
        ("report page /reports (30 days)", "/reports", True, False),
        ("report page /reports (365 days)", f"/reports?{year}", True, False),
    ]
    if only_reports:
        cases = [case for case in cases if case[2]]
    # unsafe=True: the server is on 127.0.0.1, and a default jar drops cookies from IP hosts.
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as pages, \
            ClientSession(headers=api) as client:
        await _login(pages, base)
        print(f"\n{'endpoint':<48} {'p50 ms':>8} {'p95 ms':>8}  target   ({_load()})")
        for name, path, report, with_token in cases:
            session = client if with_token else pages
            count = max(5, requests // 4) if report else requests
            samples = []
            skipped = None
            for i in range(count + 2):  # two warm-ups: the first pays for plans and caches
                url = base + path.replace("{n}", str(rng.randint(1, tickets)))
                started = time.perf_counter()
                async with session.get(url, allow_redirects=False) as resp:
                    await resp.read()
                    status = resp.status
                elapsed = (time.perf_counter() - started) * 1000
                if status in (404, 405) and "{n}" not in path:
                    skipped = f"not there yet ({status}): skipped"
                    break
                if status != 200:
                    skipped = f"answered {status}: skipped"
                    break
                if i >= 2:
                    samples.append(elapsed)
            if skipped:
                print(f"{name:<48} {skipped}")
                continue
            target = 500 if report else 50
            p95 = _pct(samples, 0.95)
            verdict = "ok" if p95 <= target else "OVER"
            print(f"{name:<48} {statistics.median(samples):8.1f} {p95:8.1f}  "
                  f"<= {target} {verdict}", flush=True)
    print(_load())
    await server.close()
    await intake.close()


async def run(url: str, args: argparse.Namespace, seeded: bool) -> None:
    store = create_store(url)
    try:
        await upgrade(store)
        if seeded:
            async with store.read() as s:
                now = (await s.execute(text("SELECT max(created_at) FROM tickets"))).scalar_one()
        else:
            now = utc_now()
            print(f"seeding {args.posts:,} posts and {args.tickets:,} tickets over a year")
            started = time.perf_counter()
            await seed(store, args.posts, args.tickets, now)
            print(f"seeded in {time.perf_counter() - started:.0f} s")
        if args.reports:
            await compare_reports(store, now, args.rounds)
        await measure(store, args.requests, args.tickets, now, only_reports=args.reports)
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--tickets", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--reports", action="store_true",
                        help="only the reports: each query before/after, then the endpoints")
    parser.add_argument("--rounds", type=int, default=7,
                        help="--reports: runs of each query, both ways")
    parser.add_argument("--database", help="an already seeded database (not dropped)")
    args = parser.parse_args()
    if args.database:
        await run(args.database, args, seeded=True)
        return
    async with scratch_postgres() as url:
        await run(url, args, seeded=False)


if __name__ == "__main__":
    asyncio.run(main())
