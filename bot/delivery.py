"""Channels tell the store which replies they sent inline, so the outbox worker skips them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from storage import outbox
from storage.clock import Clock, utc_now
from storage.db import Store

log = logging.getLogger("careloop.delivery")

# One UPDATE … WHERE id IN (…) per batch keeps the statement small on either database.
BATCH = 500


async def mark_delivered(store: Store, refs: list[int], *, clock: Clock = utc_now) -> None:
    """Marks these outbox rows sent (rows already sent or claimed by the worker stay as they
    are). Refs of None are ignored, so a channel can pass `[r.ref for r in replies]`."""
    ids = sorted({r for r in refs if r is not None})
    if not ids:
        return
    async with store.transaction() as session:
        now = clock()
        for i in range(0, len(ids), BATCH):
            await outbox.mark_delivered(session, ids[i:i + BATCH], now)


class DeliveryBatcher:
    """`mark_delivered` off the reply's path: ids are collected and written by one background
    task, a batch per UPDATE, at most `delay` seconds after they were sent.

    Safe because a chat reply's outbox row is due only after the dialogue's grace period (15 s
    by default): the worker cannot pick a row up before the batch marks it. If the process dies
    with ids still queued, the worker sends those replies after the grace period — the same
    outcome as a crash between sending and an inline mark. `close()` writes what is left."""

    def __init__(self, store: Store, *, delay: float = 0.2, clock: Clock = utc_now,
                 mark: Callable[..., Awaitable[None]] | None = None) -> None:
        self.store = store
        self.delay = delay
        self.clock = clock
        self._mark = mark or mark_delivered
        self._ids: list[int] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def __call__(self, _store: Store, refs: list[int]) -> None:
        """Same signature as `mark_delivered`; returns at once."""
        self._ids.extend(r for r in refs if r is not None)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._closing:
                await asyncio.sleep(self.delay)  # let the batch fill
            await self._flush()
            if self._closing and not self._ids:
                return

    async def _flush(self) -> None:
        ids, self._ids = self._ids, []
        if not ids:
            return
        try:
            await self._mark(self.store, ids, clock=self.clock)
        except Exception:
            log.exception("could not mark %d replies delivered; the outbox may resend them",
                          len(ids))

    async def close(self) -> None:
        self._closing = True
        task = self._task
        if task is not None and not task.done():
            self._wake.set()
            await task
        await self._flush()
