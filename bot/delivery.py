"""Channels tell the store which replies they sent inline, so the outbox worker skips them."""

from __future__ import annotations

from storage import outbox
from storage.clock import Clock, utc_now
from storage.db import Store

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
