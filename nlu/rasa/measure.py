"""Speed and memory of a running Rasa server through careloop's client (prints figures).

    .venv/bin/python nlu/rasa/measure.py [--url http://127.0.0.1:5005] [--n 300] [--batch 1000]

Latency: one request at a time through RasaInterpreter.parse (HTTP round trip plus
complete_parse), p50/p99. Throughput: RasaInterpreter.parse_many (8 in flight). Memory: VmRSS of
the process listening on the URL's port (Linux /proc), i.e. the `rasa run` server itself.
Quality on the dev sets is bench/nlu.py's job (it measures Rasa too when the server answers).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from nlu.rasa_client import RasaInterpreter

TEXTS = [
    "I was charged twice for order 123-4567",
    "where is my complaint CL-1042?",
    "the cashier was really rude to me today",
    "my parcel is 2 weeks late",
    "我的快递怎么还没到，都一个星期了",
    "充电宝充电的时候冒烟了，太危险了",
    "hi",
    "thanks, great service!",
    "转人工",
    "app keeps crashing when I pay",
]


def listening_pid(port: int) -> int | None:
    """The pid owning a listening TCP socket on `port` (reads /proc; no psutil needed)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(url: str, n: int, batch: int) -> None:
    client = RasaInterpreter(url, timeout=30.0)
    try:
        for text in TEXTS:  # warm-up: first requests trace TensorFlow graphs
            await client.parse(text)
        latencies = []
        for i in range(n):
            t = time.perf_counter()
            await client.parse(TEXTS[i % len(TEXTS)])
            latencies.append((time.perf_counter() - t) * 1000)
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
        print(f"latency ms (sequential, n={n}): p50 {statistics.median(latencies):.1f}  "
              f"p99 {p99:.1f}  mean {statistics.fmean(latencies):.1f}")
        texts = [TEXTS[i % len(TEXTS)] + f" #{i}" for i in range(batch)]
        t = time.perf_counter()
        await client.parse_many(texts)
        elapsed = time.perf_counter() - t
        print(f"throughput (parse_many, 8 in flight, n={batch}): {batch / elapsed:.0f} texts/s")
    finally:
        await client.close()
    pid = listening_pid(urlparse(url).port or 80)
    if pid:
        print(f"rasa server pid {pid}: RSS {rss_mb(pid):.0f} MB")
    else:
        print("rasa server process not found on this machine: RSS not measured")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", default=os.environ.get("CARELOOP_RASA_URL", "http://127.0.0.1:5005"))
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    asyncio.run(measure(args.url, args.n, args.batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
