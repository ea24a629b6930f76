"""Ticket-list views benchmark: p50/p95 of each view (all, mine, unassigned, breaching soon,
breached, a filtered list, a second page) through GET /api/tickets, and of one ticket
(GET /api/tickets/{number}), over 200,000 seeded tickets on PostgreSQL; prints the query plan of
the views. Prints figures; never passes or fails.

    .venv/bin/python -m bench.ticket_views [--seed 200000] [--requests 200] [--plans] [--compare]

--compare interleaves, request by request, the list statement built afresh for every request
(as before it was cached per filter shape) with the cached one, so both meet the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from argon2 import PasswordHasher
from sqlalchemy import insert, select, text
from sqlalchemy.dialects import postgresql

from bench.databases import scratch_postgres
from bench.store import analyze
from desk.app import make_app
from desk.context import DeskContext
from storage import queries, views
from storage.accounts import issue_token, upsert_agent
from storage.db import Store, create_store
from storage.intake import TicketIntake
from storage.migrate import upgrade
from storage.models import Customer, Message, Ticket
from storage.queries import TicketFilter, page_keys
from storage.sla import SlaPolicy
from storage.tickets import TicketRules

AGENTS = 20
CATEGORIES = ["delivery", "billing", "product_quality", "service_attitude", "returns", None]
VIEWS = (
    ("all", ""),
    ("mine", "view=mine"),
    ("unassigned", "view=unassigned"),
    ("breaching soon", "view=breaching_soon"),
    ("breached", "view=breached"),
    ("P1,P2 open delivery", "priority=P1,P2&status=new,acknowledged,in_progress&category=delivery"),
)


async def seed(store: Store, n: int, agent_ids: list[int], now: datetime) -> None:
    """Mostly done tickets over a year; about 15% open, created in the last ten days so their
    deadlines fall on both sides of now."""
    rng = random.Random(11)
    targets = {"P1": (0.25, 4), "P2": (1, 24), "P3": (4, 72), "P4": (24, 168)}
    async with store.transaction() as s:
        customers = (await s.scalars(
            insert(Customer).returning(Customer.id),
            [{"name": f"customer {i}", "created_at": now} for i in range(2000)],
        )).all()
    batch: list[dict[str, object]] = []
    for i in range(n):
        open_ = rng.random() < 0.15
        status = rng.choice(["new", "acknowledged", "in_progress", "waiting_customer"]) \
            if open_ else rng.choice(["resolved", "closed", "closed"])
        ago = timedelta(minutes=rng.randint(0, (10 if open_ else 365) * 24 * 60))
        created = now - ago
        priority = rng.choice(["P1", "P2", "P3", "P3", "P4"])
        first_h, res_h = targets[priority]
        answered = status != "new" or rng.random() < 0.3
        batch.append({
            "kind": "complaint", "status": status, "priority": priority,
            "category": rng.choice(CATEGORIES), "channel": rng.choice(["telegram", "webchat", "x"]),
            "customer_id": rng.choice(customers), "identity_id": None,
            "assignee_id": rng.choice(agent_ids) if rng.random() < 0.7 else None,
            "subject": f"seeded complaint {i}", "description": f"seeded complaint {i} text",
            "created_at": created, "updated_at": created,
            "first_response_due": created + timedelta(hours=first_h),
            "resolution_due": created + timedelta(hours=res_h),
            "first_response_at": created + timedelta(minutes=20) if answered else None,
            "needs_human": False, "version": 1,
        })
        if len(batch) == 5000:
            async with store.transaction() as s:
                await s.execute(insert(Ticket), batch)
            batch = []
    if batch:
        async with store.transaction() as s:
            await s.execute(insert(Ticket), batch)
    async with store.transaction() as s:  # a conversation on the first tickets
        ids = (await s.scalars(select(Ticket.id).order_by(Ticket.id).limit(200))).all()
        await s.execute(insert(Message), [
            {"ticket_id": t, "direction": d, "author_type": a, "text": f"message {k}",
             "public": True, "channel": "telegram", "created_at": now}
            for t in ids for k, (d, a) in enumerate((("in", "customer"), ("out", "agent")) * 5)
        ])


def _pct(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.95) - 1]


async def plans(store: Store, agent_id: int, now: datetime) -> None:
    policy = SlaPolicy()
    for name, query in VIEWS[1:5]:
        spec = views.parse_filters(dict(parse_qsl(query)))
        async with store.read() as s:
            f = await views.resolve(s, spec, agent_id=agent_id, now=now, policy=policy)
            sql = page_keys(f, None, 51).compile(
                dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
            )
            rows = (await s.execute(
                text(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}")
            )).all()
        print(f"--- plan: {name}")
        for (line,) in rows:
            if any(k in line for k in ("Scan", "Execution", "Sort", "Limit  ", "Merge")):
                print("   ", line)


@contextmanager
def rebuilt_per_request(on: bool) -> Iterator[None]:
    """While on, list_tickets builds its statement afresh each time (the uncached builders),
    as it did before the statement was cached per shape."""
    cached = (queries._list_statement, queries._keys_statement)
    if on:
        queries._list_statement = cached[0].__wrapped__  # type: ignore[assignment]
        queries._keys_statement = cached[1].__wrapped__  # type: ignore[assignment]
    try:
        yield
    finally:
        queries._list_statement, queries._keys_statement = cached  # type: ignore[misc]


def statement_cost(filters: list[tuple[str, TicketFilter]], rounds: int) -> None:
    """Python cost of the statement alone, no database: built and keyed for the compiled
    cache (what a request paid before) against shape + cache lookup (what it pays now)."""
    for name, f in filters:
        costs = []
        queries._list_statement(queries._shape_and_values(f, None, 51)[0])  # warm the cache
        for build in (True, False):
            t0 = time.perf_counter()
            with rebuilt_per_request(build):
                for _ in range(rounds):
                    shape, _values = queries._shape_and_values(f, None, 51)
                    queries._list_statement(shape)._generate_cache_key()
            costs.append((time.perf_counter() - t0) * 1000 / rounds)
        print(f"statement {name:20} built per request {costs[0]:6.2f} ms  "
              f"cached {costs[1]:6.3f} ms")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=200_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--plans", action="store_true")
    ap.add_argument("--compare", action="store_true",
                    help="also time each list with its statement rebuilt per request")
    args = ap.parse_args()
    async with scratch_postgres() as url:
        store = create_store(url)
        await upgrade(store)
        now = datetime.now(UTC)
        hasher = PasswordHasher(time_cost=1, memory_cost=1024)
        async with store.transaction() as s:
            agents = [
                await upsert_agent(s, hasher, username=f"agent{i}", role="agent", password=None,
                                   now=now)
                for i in range(AGENTS)
            ]
            token = await issue_token(s, "agent0", now)
        started = time.perf_counter()
        await seed(store, args.seed, [a.id for a in agents], now)
        await analyze(store)
        print(f"postgres: seeded {args.seed} tickets in {time.perf_counter() - started:.1f}s")
        # The figures move with what else the machine runs.
        print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        rules = TicketRules(sla=SlaPolicy())
        intake = TicketIntake(store, rules)
        server = TestServer(make_app(DeskContext(store=store, rules=rules, hasher=hasher,
                                                 intake=intake)))
        await server.start_server()
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with ClientSession(headers=headers) as http:
                base = str(server.make_url("/api/tickets"))
                async with http.get(base + "?limit=50") as resp:
                    cursor = (await resp.json())["next_cursor"]
                cases = [(n, f"{base}?limit=50&{q}") for n, q in VIEWS]
                cases.append(("second page", f"{base}?limit=50&cursor={cursor}"))
                cases.append(("one ticket (10 messages)", f"{base}/CL-1"))
                modes = ("rebuilt", "cached") if args.compare else ("cached",)
                for name, url_ in cases:
                    samples: dict[str, list[float]] = {m: [] for m in modes}
                    for _ in range(args.requests):
                        for mode in modes:
                            with rebuilt_per_request(mode == "rebuilt"):
                                t0 = time.perf_counter()
                                async with http.get(url_) as resp:
                                    body = await resp.json()
                                    assert resp.status == 200, body
                                samples[mode].append((time.perf_counter() - t0) * 1000)
                    count = len(body.get("items", [body]))
                    for mode in modes:
                        p50, p95 = _pct(samples[mode])
                        label = f" [{mode}]" if args.compare else ""
                        print(f"postgres GET {name:26} rows {count:3}  p50 {p50:6.2f} ms  "
                              f"p95 {p95:6.2f} ms{label}")
            if args.compare:
                filters = []
                for name, query in VIEWS:
                    async with store.read() as s:
                        filters.append((name, await views.resolve(
                            s, views.parse_filters(dict(parse_qsl(query))),
                            agent_id=agents[0].id, now=now, policy=rules.sla,
                        )))
                statement_cost(filters, 50)
            print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
            if args.plans:
                await plans(store, agents[0].id, now)
        finally:
            await server.close()
            await intake.close()
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
