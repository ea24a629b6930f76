"""Mentions/s the Mastodon adapter reads from the fake Mastodon server, the way the poll loop
reads a burst: every stream the adapter polls, from a cursor, page after page while `more`.
Prints figures; never passes or fails.

    .venv/bin/python -m bench.mastodon_read [--posts 2000] [--dm-share 0.1]

The fake server runs in this process (its JSON encoding shares the CPU with the client), so
the figure is a floor for a real server's speed on this machine, good for before/after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from monitors.mastodon import MastodonAdapter, MastodonApi, make_client
from tests.fakes.mastodon_api import TOKEN, FakeMastodon


async def seed(server: FakeMastodon, posts: int, dm_share: float) -> None:
    customers = [server.account(f"customer{i}", domain="example.social") for i in range(50)]
    every = round(1 / dm_share) if dm_share > 0 else 0
    for i in range(posts):
        author = customers[i % len(customers)]
        if every and i % every == 0:
            server.dm(author, f"where is my parcel {i}? it was due on monday")
        else:
            server.mention(author, f"my order {i} arrived broken, the box was soaked")


async def read_all(adapter: MastodonAdapter) -> tuple[int, int]:
    """Reads every stream from before the burst to its end; returns (posts, requests)."""
    posts = requests = 0
    for stream in adapter.streams():
        cursor: str | None = "1"  # a cursor older than the burst: page forward through it
        while True:
            page = await adapter.read(stream, cursor)
            requests += 1
            posts += len(page.posts)
            cursor = page.cursor
            if not page.more:
                break
    return posts, requests


async def main(posts: int, dm_share: float) -> None:
    server = FakeMastodon()
    await server.start()
    try:
        await seed(server, posts, dm_share)
        adapter = MastodonAdapter(MastodonApi(make_client(server.base_url, TOKEN, timeout=20)))
        started = time.perf_counter()
        read, requests = await read_all(adapter)
        elapsed = time.perf_counter() - started
        await adapter.close()
    finally:
        await server.stop()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"mastodon read: {posts:,} notifications ({dm_share:.0%} direct), "
          f"streams {'+'.join(adapter.streams())}")
    print(f"  {read:,} posts in {elapsed:.1f} s over {requests} requests "
          f"({requests * adapter.page_size} notifications asked for): "
          f"{read / elapsed:,.0f} mentions/s | load average {load}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--dm-share", type=float, default=0.1)
    args = parser.parse_args()
    asyncio.run(main(args.posts, args.dm_share))
