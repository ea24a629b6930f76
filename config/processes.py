"""Extra desk processes (CARELOOP_DESK_PROCESSES): copies of the `desk` role that answer the
same port, which every one of them binds with SO_REUSEPORT so the kernel spreads connections
over them. Python runs one core per process, and a chat at a few hundred messages a second
keeps one core busy; a second process halves the queue every reply waits in.

Nothing is shared in memory: each process has its own connections, NLU model and Telegram
client, and works on the one database, as `careloop run --role desk` processes behind a load
balancer do. The process that spawned them restarts one that dies and stops them all with it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

log = logging.getLogger("careloop.processes")

# A process that dies this soon after starting is failing to start (a bad setting, a port or
# database it cannot reach): wait longer before each new attempt rather than spin.
QUICK_DEATH_SECONDS = 30.0
MAX_RESTART_DELAY_SECONDS = 60.0


async def supervise(
    target: Callable[..., None],
    args: tuple[Any, ...],
    count: int,
    stop: asyncio.Event,
    *,
    grace_seconds: float,
    check_seconds: float = 0.5,
) -> None:
    """Keeps `count` processes running `target(*args)` until `stop`; then SIGTERM, and after
    `grace_seconds` (requests in flight finish) SIGKILL for any still running."""
    # spawn, not fork: a forked child would inherit this process's event loop, connections
    # and threads, none of which survive a fork.
    context = mp.get_context("spawn")
    children: list[BaseProcess] = []
    started: dict[int, float] = {}
    delay: dict[int, float] = {}

    def launch(slot: int) -> BaseProcess:
        child = context.Process(target=target, args=args, name=f"careloop-desk-{slot + 1}")
        child.start()
        started[slot] = time.monotonic()
        log.info("desk process %d started (pid %s)", slot + 1, child.pid)
        return child

    try:
        children = [launch(slot) for slot in range(count)]
        due: dict[int, float] = {}
        while not stop.is_set():
            now = time.monotonic()
            for slot, child in enumerate(children):
                if child.is_alive():
                    continue
                if slot not in due:
                    lived = now - started[slot]
                    quick = lived < QUICK_DEATH_SECONDS
                    delay[slot] = (
                        min(2 * delay.get(slot, 0.5), MAX_RESTART_DELAY_SECONDS) if quick
                        else 1.0
                    )
                    due[slot] = now + delay[slot]
                    log.warning(
                        "desk process %d (pid %s) exited with %s after %.0f s; another in %.0f s",
                        slot + 1, child.pid, child.exitcode, lived, delay[slot],
                    )
                elif now >= due[slot]:
                    del due[slot]
                    child.close()
                    children[slot] = launch(slot)
            try:
                await asyncio.wait_for(stop.wait(), check_seconds)
            except TimeoutError:
                pass
    finally:
        await asyncio.to_thread(_stop_all, children, grace_seconds)


def _stop_all(children: list[BaseProcess], grace_seconds: float) -> None:
    for child in children:
        if child.is_alive():
            child.terminate()  # SIGTERM: the child stops as `careloop run` does
    deadline = time.monotonic() + grace_seconds
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            log.warning("desk process %s did not stop in %.0f s; killing it", child.pid,
                        grace_seconds)
            child.kill()
            child.join(2)
