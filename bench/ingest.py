"""Mentions/s through parse + triage + store for a spike, on SQLite and PostgreSQL, next to a
plain bulk insert of the same rows in the same run. Prints figures; never passes or fails.

    .venv/bin/python -m bench.ingest [--posts 100000] [--batch 5000] [--only sqlite|postgres]

The spike is what a viral complaint looks like: a dozen complaints retweeted, copied, quoted
with a word or two added (by different people, with their own @handles, links and emoji), among
distinct posts. The embedded NLU parses once per near-duplicate group and caches across batches.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from bench.databases import scratch_postgres
from monitors.triage import Triage, TriageRules
from monitors.types import Author, Post
from nlu.embedded import EmbeddedInterpreter
from storage.db import Store, create_store
from storage.mentions import (
    POSTS,
    CursorAdvance,
    Grouping,
    NewMention,
    StreamKey,
    _row,
    ingest,
)
from storage.migrate import upgrade

VIRAL = [
    "@acme your store sold me rotten chicken and my kids got sick",
    "@acme I was charged twice for the same order and nobody answers",
    "@acme the app crashes every time I try to pay at checkout",
    "@acme my parcel has been stuck in your warehouse for two weeks",
    "@acme the cashier at the downtown store shouted at my mother",
    "@acme you raised the price of baby formula by forty percent overnight",
    "@acme found glass in a jar of your own brand pasta sauce",
    "@acme refund still not here a month after I returned the broken tv",
    "@acme 我在你们店买的牛奶过期了，孩子喝了拉肚子",
    "@acme 订单显示已送达但是我根本没收到包裹",
    "@acme the self checkout machines at the mall store never work",
    "@acme delivery driver left my groceries in the rain again",
]
ADDED = ["same here", "this!!", "unacceptable", "me too", "wow", "ridiculous", "again?!"]
EMOJI = ["", " 😡", " 🤬🤬", " 👎", " 😤"]
SUBJECTS = ["order", "parcel", "refund", "coupon", "store", "app", "delivery", "receipt",
            "milk", "bread", "phone", "jacket", "shoes", "tv", "sofa", "voucher"]
MOODS = ["love", "hate", "like", "miss", "need", "want", "enjoyed", "returned", "bought"]
PLACES = ["downtown", "airport", "mall", "station", "harbour", "campus", "riverside", "market"]
TIMES = ["today", "yesterday", "this morning", "last night", "on sunday", "every week"]


def spike(n: int, seed: int = 5) -> list[Post]:
    """~75% copies of the viral complaints (retweets, copies with handles/links/emoji, quotes
    with a few words added), ~25% distinct posts. Oldest first."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    posts: list[Post] = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.75:
            base = VIRAL[min(int(rng.expovariate(0.35)), len(VIRAL) - 1)]
            kind = rng.random()
            if kind < 0.6:
                text = f"RT @user{rng.randrange(5000)}: {base}"
            elif kind < 0.85:
                text = (f"{base}{rng.choice(EMOJI)} @helpdesk https://t.co/{rng.randrange(10**6):x}"
                        if rng.random() < 0.5 else base.upper())
            else:
                text = f"{rng.choice(ADDED)} {base}{rng.choice(EMOJI)}"
        else:
            text = (f"@acme I {rng.choice(MOODS)} the {rng.choice(SUBJECTS)} from the "
                    f"{rng.choice(PLACES)} store {rng.choice(TIMES)}, "
                    f"{rng.choice(['thanks', 'any news?', 'why?', 'is it normal', 'help'])} "
                    f"{''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(6))}")
        posts.append(Post(
            platform="x", stream="mentions", external_id=str(10**9 + i), text=text,
            author=Author(id=str(i % 40_000), username=f"user{i % 40_000}",
                          followers=int(rng.paretovariate(1.2) * 50)),
            posted_at=start + timedelta(milliseconds=36 * i),
            url=f"https://x.com/i/status/{10**9 + i}",
        ))
    return posts


@dataclass
class Figures:
    name: str
    posts: int
    seconds: float
    triage_seconds: float
    parsed: int
    plain_seconds: float

    def line(self) -> str:
        rate = self.posts / self.seconds
        plain = self.posts / self.plain_seconds
        return (f"{self.name:<10} pipeline {rate:>8,.0f} mentions/s ({self.seconds:5.1f} s; "
                f"triage {self.triage_seconds:4.1f} s, {self.parsed:,} texts parsed) | "
                f"plain bulk insert {plain:>8,.0f} rows/s ({self.plain_seconds:4.1f} s) | "
                f"ratio {rate / plain:.2f}")


async def pipeline(store: Store, interpreter: EmbeddedInterpreter, posts: list[Post],
                   batch: int) -> tuple[float, float, int, list[NewMention]]:
    triage = Triage(interpreter, TriageRules())
    grouping = Grouping(window=timedelta(hours=24), flag_size=5)
    key = StreamKey("x", "42", "mentions")
    kept: list[NewMention] = []
    triage_seconds = 0.0
    writing: asyncio.Task[None] | None = None

    async def write(rows: list[NewMention], cursor: str) -> None:
        async with store.transaction() as session:
            await ingest(session, rows, grouping=grouping, now=datetime.now(UTC),
                         cursor=CursorAdvance(key, cursor=cursor, reads=len(rows),
                                              month="2026-01"))

    started = time.perf_counter()
    for i in range(0, len(posts), batch):
        page = posts[i : i + batch]
        t = time.perf_counter()
        # Parsing runs in a thread (or the pool) while the previous batch is being written.
        rows = await triage.mentions(page)
        triage_seconds += time.perf_counter() - t
        kept.extend(rows)
        if writing is not None:
            await writing
        writing = asyncio.create_task(write(rows, page[-1].external_id))
    if writing is not None:
        await writing
    return time.perf_counter() - started, triage_seconds, triage.parsed, kept


async def plain_insert(store: Store, rows: list[NewMention], batch: int) -> float:
    now = datetime.now(UTC)
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        params = [_row(m, now, None, 1) for m in rows[i : i + batch]]
        async with store.transaction() as session:
            await session.execute(insert(POSTS), params)
    return time.perf_counter() - started


async def measure(name: str, url: str, plain_url: str, posts: list[Post], batch: int,
                  interpreter: EmbeddedInterpreter) -> Figures:
    store, plain_store = create_store(url), create_store(plain_url)
    try:
        await upgrade(store)
        await upgrade(plain_store)
        seconds, triage_seconds, parsed, rows = await pipeline(store, interpreter, posts, batch)
        plain = await plain_insert(plain_store, rows, batch)
        return Figures(name, len(posts), seconds, triage_seconds, parsed, plain)
    finally:
        await store.close()
        await plain_store.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--posts", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--only", choices=("sqlite", "postgres"))
    ap.add_argument("--workers", type=int, default=0, help="NLU worker processes (0: none)")
    args = ap.parse_args()
    interpreter = EmbeddedInterpreter(preload=True, workers=args.workers)
    posts = spike(args.posts)
    await interpreter.parse_many([f"warm up {i}" for i in range(256)])  # start the workers
    sample = [p.text for p in posts[:2000]]
    t = time.perf_counter()
    await interpreter.parse_many(sample)
    per_text = (time.perf_counter() - t) / len(sample)
    distinct = len({p.text for p in posts})
    print(f"spike: {len(posts):,} posts, {distinct:,} distinct texts; NLU alone "
          f"{1 / per_text:,.0f} texts/s with {args.workers} worker processes")
    results: list[Figures] = []
    if args.only in (None, "sqlite"):
        with tempfile.TemporaryDirectory() as tmp:
            results.append(await measure(
                "sqlite", f"sqlite+aiosqlite:///{Path(tmp) / 'a.db'}",
                f"sqlite+aiosqlite:///{Path(tmp) / 'b.db'}", posts, args.batch, interpreter))
        print(results[-1].line(), flush=True)
    if args.only in (None, "postgres"):
        async with scratch_postgres() as url, scratch_postgres() as plain_url:
            results.append(await measure("postgres", url, plain_url, posts, args.batch,
                                         interpreter))
        print(results[-1].line(), flush=True)
    await interpreter.close()


if __name__ == "__main__":
    asyncio.run(main())
