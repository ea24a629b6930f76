"""Store benchmark: tickets created per second through the service layer (one client and 50
concurrent clients) and p50/p95 of the ticket list endpoint with 100,000 tickets, on SQLite and
PostgreSQL. Prints figures; never passes or fails.

    .venv/bin/python -m bench.store [--tickets 3000] [--seed 100000] [--only sqlite|postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from argon2 import PasswordHasher
from sqlalchemy import insert, select

from bench.databases import scratch_postgres
from desk.app import make_app
from desk.context import DeskContext
from storage.accounts import issue_token, upsert_agent
from storage.db import Store, create_store
from storage.intake import TicketIntake
from storage.migrate import upgrade
from storage.models import Ticket
from storage.sla import SlaPolicy
from storage.tickets import NewTicket, TicketRules, create_ticket, identity_for

CATEGORIES = ["delivery", "billing", "product_quality", "service_attitude", "returns"]


async def _customers(store: Store, rules: TicketRules, n: int) -> list[tuple[int, int]]:
    out = []
    async with store.transaction() as s:
        for i in range(n):
            who = await identity_for(s, channel="telegram", external_id=f"b{i}",
                                     display_name=f"c{i}", language="en", now=rules.clock())
            out.append((who.customer_id, who.id))
    return out


async def _create(store: Store, rules: TicketRules, who: tuple[int, int], i: int) -> None:
    async with store.transaction() as s:
        await create_ticket(s, rules, NewTicket(
            kind="complaint", channel="telegram", description=f"parcel {i} never arrived",
            customer_id=who[0], identity_id=who[1], category=CATEGORIES[i % len(CATEGORIES)]))


async def creates_per_second(
    store: Store, rules: TicketRules, n: int, clients: int, intake: TicketIntake | None
) -> float:
    """`intake=None`: each create is its own transaction (the path a chat flow takes inside its
    conversation's transaction); otherwise concurrent creates share batched transactions."""
    people = await _customers(store, rules, clients)
    per_client = n // clients

    async def client(c: int) -> None:
        for i in range(per_client):
            if intake is None:
                await _create(store, rules, people[c], i)
            else:
                await intake.create(NewTicket(
                    kind="complaint", channel="telegram", description=f"parcel {i} never arrived",
                    customer_id=people[c][0], identity_id=people[c][1],
                    category=CATEGORIES[i % len(CATEGORIES)]))

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    return per_client * clients / (time.perf_counter() - started)


async def seed(store: Store, n: int) -> None:
    """Bulk rows for the list benchmark (not a measurement)."""
    now = datetime.now(UTC)
    rules = TicketRules(sla=SlaPolicy())
    [(customer_id, identity_id)] = await _customers(store, rules, 1)
    rng = random.Random(7)
    statuses = ["new", "acknowledged", "in_progress", "waiting_customer", "resolved", "closed"]
    batch = []
    for i in range(n):
        created = now - timedelta(minutes=rng.randint(0, 365 * 24 * 60))
        priority = rng.choice(["P1", "P2", "P3", "P3", "P4"])
        batch.append({
            "kind": "complaint", "status": rng.choice(statuses), "priority": priority,
            "category": rng.choice(CATEGORIES), "channel": rng.choice(["telegram", "webchat", "x"]),
            "customer_id": customer_id, "identity_id": identity_id,
            "subject": f"seeded complaint {i}", "description": f"seeded complaint {i} text",
            "created_at": created, "updated_at": created,
            "first_response_due": created + timedelta(hours=4),
            "resolution_due": created + timedelta(hours=rng.choice([4, 24, 72, 168])),
            "needs_human": False, "version": 1,
        })
        if len(batch) == 5000:
            async with store.transaction() as s:
                await s.execute(insert(Ticket), batch)
            batch = []
    if batch:
        async with store.transaction() as s:
            await s.execute(insert(Ticket), batch)


async def list_latency(store: Store, requests: int) -> dict[str, tuple[float, float]]:
    hasher = PasswordHasher(time_cost=1, memory_cost=1024)
    rules = TicketRules(sla=SlaPolicy())
    async with store.transaction() as s:
        await upsert_agent(s, hasher, username="bench", role="agent", password=None,
                           now=rules.clock())
        token = await issue_token(s, "bench", rules.clock())
    intake = TicketIntake(store, rules)
    server = TestServer(make_app(DeskContext(store=store, rules=rules, hasher=hasher,
                                             intake=intake)))
    await server.start_server()
    results = {}
    try:
        async with ClientSession(str(server.make_url("")),
                                 headers={"Authorization": f"Bearer {token}"}) as http:
            first = await (await http.get("/api/tickets?limit=50")).json()
            cursor = first["next_cursor"]
            for name, path in [
                ("first page", "/api/tickets?limit=50"),
                ("status=new,in_progress", "/api/tickets?status=new,in_progress&limit=50"),
                ("priority=P1&category=billing", "/api/tickets?priority=P1&category=billing"),
                ("second page (cursor)", f"/api/tickets?limit=50&cursor={cursor}"),
                ("channel=x&status=new", "/api/tickets?channel=x&status=new&limit=50"),
            ]:
                for _ in range(10):  # warm-up
                    await (await http.get(path)).read()
                times = []
                for _ in range(requests):
                    t = time.perf_counter()
                    r = await http.get(path)
                    await r.read()
                    times.append((time.perf_counter() - t) * 1000)
                    assert r.status == 200
                times.sort()
                results[name] = (statistics.median(times), times[int(len(times) * 0.95) - 1])
    finally:
        await server.close()
        await intake.close()
    return results


async def in_list_vs_merge(store: Store, requests: int) -> tuple[float, float]:
    """A two-status page as the version before (`status IN (...)` on the joined query) and
    as list_tickets now (one index-ordered read per status, merged): p50 in ms of each."""
    from storage.queries import AGENTS, CUSTOMERS, TICKETS, TicketFilter, _filtered, list_tickets

    f = TicketFilter(statuses=["new", "in_progress"])
    before = _filtered(
        select(TICKETS, CUSTOMERS.c.name, AGENTS.c.username)
        .join(CUSTOMERS, CUSTOMERS.c.id == TICKETS.c.customer_id)
        .outerjoin(AGENTS, AGENTS.c.id == TICKETS.c.assignee_id),
        f,
    ).order_by(TICKETS.c.priority, TICKETS.c.resolution_due, TICKETS.c.id).limit(51)
    results = []
    for now in (False, True):
        times = []
        for _ in range(requests):
            t = time.perf_counter()
            async with store.read() as s:
                if now:
                    await list_tickets(s, f, limit=50, cursor=None)
                else:
                    (await s.execute(before)).all()
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        results.append(statistics.median(times))
    return results[0], results[1]


async def analyze(store: Store) -> None:
    # Outside a transaction: statistics gathered in one that rolls back are thrown away.
    async with store.engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await auto.exec_driver_sql("ANALYZE")


async def bench_one(kind: str, url: str, tickets: int, seed_n: int, requests: int) -> None:
    store = create_store(url, pool_size=25)
    await upgrade(store)
    rules = TicketRules(sla=SlaPolicy())
    intake = TicketIntake(store, rules)
    for label, via in (("one transaction each", None), ("batched intake", intake)):
        single = await creates_per_second(store, rules, max(tickets // 3, 100), 1, via)
        concurrent = await creates_per_second(store, rules, tickets, 50, via)
        print(f"{kind:10} create ({label:20}) 1 client  {single:6.0f}/s   "
              f"50 clients {concurrent:6.0f}/s")
    await intake.close()
    started = time.perf_counter()
    await seed(store, seed_n)
    print(f"{kind:10} seeded {seed_n} tickets in {time.perf_counter() - started:.1f}s")
    # SQLite never gathers statistics by itself, so a deployment usually has none: measure
    # the two query forms without them, then with them (everything after runs analysed).
    for stats in ("no statistics", "after ANALYZE"):
        if stats == "after ANALYZE":
            await analyze(store)
        old, new = await in_list_vs_merge(store, 30)
        print(f"{kind:10} status=new,in_progress ({stats}): one IN query p50 {old:6.2f} ms; "
              f"merged per status p50 {new:6.2f} ms")
    for name, (p50, p95) in (await list_latency(store, requests)).items():
        print(f"{kind:10} list {name:30} p50 {p50:6.2f} ms  p95 {p95:6.2f} ms")
    await store.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tickets", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--only", choices=["sqlite", "postgres"])
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}  tickets created: {args.tickets}  list over {args.seed}+ rows")
    if args.only != "postgres":
        with tempfile.TemporaryDirectory() as tmp:
            await bench_one("sqlite", f"sqlite+aiosqlite:///{Path(tmp) / 'b.db'}", args.tickets,
                            args.seed, args.requests)
    if args.only != "sqlite":
        async with scratch_postgres() as url:
            await bench_one("postgres", url, args.tickets, args.seed, args.requests)


if __name__ == "__main__":
    asyncio.run(main())
