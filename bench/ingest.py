"""Mentions/s through parse + triage + store for a spike, on SQLite and PostgreSQL, next to a
plain bulk insert of the same rows in the same run. Prints figures; never passes or fails.

    .venv/bin/python -m bench.ingest [--posts 100000] [--batch 5000] [--only sqlite|postgres]
                                     [--before REV]

`--before REV` first runs the same benchmark with monitors/fingerprint.py, monitors/triage.py
and storage/mentions.py as they were at git revision REV (in a child process), then with the
working tree's; each line ends with a digest of what was stored (every post's group leader,
group size, state, priority, parse fields), so equal digests mean identical results.

The spike is what a viral complaint looks like: a dozen complaints retweeted, copied, quoted
with a word or two added (by different people, with their own @handles, links and emoji), among
distinct posts. The embedded NLU parses once per near-duplicate group and caches across batches.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import random
import runpy
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

from sqlalchemy import insert, select
from sqlalchemy.orm import aliased

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
from storage.models import SocialPost

# What `--before` takes from the older revision.
MEASURED = {
    "monitors.fingerprint": "monitors/fingerprint.py",
    "monitors.triage": "monitors/triage.py",
    "storage.mentions": "storage/mentions.py",
}

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
    tail_seconds: float  # from the end of the last triage to the last commit
    parsed: int
    plain_seconds: float
    digest: str
    load: str

    def line(self) -> str:
        rate = self.posts / self.seconds
        plain = self.posts / self.plain_seconds
        return (f"{self.name:<10} pipeline {rate:>8,.0f} mentions/s ({self.seconds:5.1f} s; "
                f"triage {self.triage_seconds:4.1f} s, {self.parsed:,} texts parsed, last write "
                f"{self.tail_seconds:4.1f} s after) | plain bulk insert {plain:>8,.0f} rows/s "
                f"({self.plain_seconds:4.1f} s) | ratio {rate / plain:.2f} | stored {self.digest}"
                f" | load {self.load}")


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


async def stored_digest(store: Store) -> str:
    """A digest of every stored post's grouping and triage, independent of row ids."""
    leader = aliased(SocialPost)
    post = SocialPost
    async with store.read() as session:
        rows = (await session.execute(
            select(post.platform, post.external_id, leader.external_id, post.group_size,
                   post.state, post.priority, post.fingerprint, post.intent, post.category,
                   post.language, post.sentiment_label, post.sentiment_score,
                   post.raw.is_(None), post.posted_at)
            .outerjoin(leader, leader.id == post.group_id)
            .order_by(post.platform, post.external_id)
        )).all()
    h = hashlib.sha256()
    for row in rows:
        h.update(repr(tuple(row)).encode())
    return f"{len(rows):,} rows sha256 {h.hexdigest()[:12]}"


async def pipeline(store: Store, interpreter: EmbeddedInterpreter, posts: list[Post],
                   batch: int) -> tuple[float, float, float, int, list[NewMention]]:
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
    last_triage = time.perf_counter()
    if writing is not None:
        await writing
    done = time.perf_counter()
    return done - started, triage_seconds, done - last_triage, triage.parsed, kept


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
        at = load()
        seconds, triage_seconds, tail, parsed, rows = await pipeline(
            store, interpreter, posts, batch)
        plain = await plain_insert(plain_store, rows, batch)
        return Figures(name, len(posts), seconds, triage_seconds, tail, parsed, plain,
                       await stored_digest(store), at)
    finally:
        await store.close()
        await plain_store.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--posts", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--only", choices=("sqlite", "postgres"))
    ap.add_argument("--workers", type=int, default=0, help="NLU worker processes (0: none)")
    ap.add_argument("--before", metavar="REV",
                    help="first run the same with the measured modules as of git REV")
    ap.add_argument("--label", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.before:
        rest = [a for a in sys.argv[1:] if a not in ("--before", args.before)
                and not a.startswith("--before=")]
        code = "import bench.ingest as b; b.run_as_of()"
        child = await asyncio.create_subprocess_exec(sys.executable, "-c", code, args.before,
                                                     *rest)
        if await child.wait() != 0:
            raise SystemExit(f"the run as of {args.before} failed")
        args.label = "now"
    interpreter = EmbeddedInterpreter(preload=True, workers=args.workers)
    posts = spike(args.posts)
    # The spike is the benchmark's input, not the service's memory: keep the collector from
    # walking its 100,000 posts again and again (the service holds one page at a time).
    gc.collect()
    gc.freeze()
    await interpreter.parse_many([f"warm up {i}" for i in range(256)])  # start the workers
    sample = [p.text for p in posts[:2000]]
    t = time.perf_counter()
    await interpreter.parse_many(sample)
    per_text = (time.perf_counter() - t) / len(sample)
    distinct = len({p.text for p in posts})
    print(f"{args.label + ': ' if args.label else ''}"
          f"spike: {len(posts):,} posts, {distinct:,} distinct texts; NLU alone "
          f"{1 / per_text:,.0f} texts/s with {args.workers} worker processes")
    results: list[Figures] = []
    if args.only in (None, "sqlite"):
        with tempfile.TemporaryDirectory() as tmp:
            results.append(await measure(
                "sqlite", f"sqlite+aiosqlite:///{Path(tmp) / 'a.db'}",
                f"sqlite+aiosqlite:///{Path(tmp) / 'b.db'}", posts, args.batch, interpreter))
        print(f"{args.label + ' ' if args.label else ''}{results[-1].line()}", flush=True)
    if args.only in (None, "postgres"):
        async with scratch_postgres() as url, scratch_postgres() as plain_url:
            results.append(await measure("postgres", url, plain_url, posts, args.batch,
                                         interpreter))
        print(f"{args.label + ' ' if args.label else ''}{results[-1].line()}", flush=True)
    await interpreter.close()


class _AsOf(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports the measured modules from a git revision (`git show REV:path`)."""

    def __init__(self, rev: str) -> None:
        self.rev = rev

    def find_spec(self, name: str, path: object = None, target: object = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if name not in MEASURED:
            return None
        return importlib.util.spec_from_loader(name, self, origin=f"{self.rev}:{MEASURED[name]}")

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        source = subprocess.run(
            ["git", "show", f"{self.rev}:{MEASURED[module.__name__]}"],
            check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parent,
        ).stdout
        exec(compile(source, f"{self.rev}:{MEASURED[module.__name__]}", "exec"), module.__dict__)


def run_as_of() -> None:
    """`python -c 'import bench.ingest as b; b.run_as_of()' REV [args]`: this benchmark with
    the measured modules as of REV (what `--before` runs)."""
    rev, args = sys.argv[1], sys.argv[2:]
    for name in (*MEASURED, "bench.ingest"):
        sys.modules.pop(name, None)
    sys.meta_path.insert(0, _AsOf(rev))
    sys.argv = ["bench.ingest", *args, "--label", rev]
    runpy.run_module("bench.ingest", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    asyncio.run(main())
