"""Batched ticket intake: concurrent creates share one transaction.

Each caller awaits its own ticket number, which it gets only after the transaction holding its
ticket, the `created` event and the confirmation's outbox row has committed. Under load many
tickets share one commit (one fsync, a handful of statements) instead of paying for one each;
with a single caller a batch is just that caller's ticket, so nothing waits on a timer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError

from storage.db import Store
from storage.errors import StoreError
from storage.models import OutboxMessage, Ticket, TicketEvent
from storage.tickets import NewTicket, TicketRules, created_payload, ticket_row, validate_new

log = logging.getLogger("careloop.intake")
TICKETS = cast(Table, Ticket.__table__)
EVENTS = cast(Table, TicketEvent.__table__)
OUTBOX = cast(Table, OutboxMessage.__table__)


@dataclass(frozen=True, slots=True)
class Created:
    id: int
    created: bool  # False when an intake_key had already made this ticket


@dataclass
class _Job:
    new: NewTicket
    done: asyncio.Future[Created]


class TicketIntake:
    """Start with `start()`, stop with `close()`; `create()` may be called from any task."""

    def __init__(
        self, store: Store, rules: TicketRules, *, max_batch: int = 256, writers: int | None = None
    ) -> None:
        self._store = store
        self._rules = rules
        self._max_batch = max_batch
        # SQLite has one writer at a time anyway; PostgreSQL overlaps commits of a few batches.
        self._writers = writers or (4 if store.is_postgres else 1)
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._writer()) for _ in range(self._writers)]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.done.done():
                job.done.set_exception(RuntimeError("intake closed"))

    async def create(self, new: NewTicket) -> Created:
        validate_new(new)  # bad input fails here, alone, before it can share a batch
        if not self._tasks:
            self.start()
        job = _Job(new, asyncio.get_running_loop().create_future())
        await self._queue.put(job)
        return await job.done

    async def _writer(self) -> None:
        while True:
            jobs = [await self._queue.get()]
            while len(jobs) < self._max_batch and not self._queue.empty():
                jobs.append(self._queue.get_nowait())
            try:
                results = await write_batch(self._store, self._rules, [j.new for j in jobs])
            except (IntegrityError, StoreError):
                # One bad ticket (a customer deleted meanwhile, a key raced) must not sink the
                # others: write them one by one so only the bad one fails.
                for job in jobs:
                    await self._one(job)
                continue
            except Exception as exc:  # the database is gone: every caller hears of it
                for job in jobs:
                    if not job.done.done():
                        job.done.set_exception(exc)
                continue
            for job, result in zip(jobs, results, strict=True):
                if not job.done.done():
                    job.done.set_result(result)

    async def _one(self, job: _Job) -> None:
        try:
            [result] = await write_batch(self._store, self._rules, [job.new])
        except Exception as exc:
            if not job.done.done():
                job.done.set_exception(exc)
        else:
            if not job.done.done():
                job.done.set_result(result)


async def write_batch(store: Store, rules: TicketRules, batch: list[NewTicket]) -> list[Created]:
    """Tickets, their `created` events and confirmations in one transaction, a statement each."""
    now = rules.clock()
    rows = [ticket_row(rules, new, now) for new in batch]
    async with store.transaction() as session:
        keys = {r["intake_key"] for r in rows if r["intake_key"]}
        by_key: dict[str, int] = {}
        if keys:
            found = await session.execute(
                select(Ticket.intake_key, Ticket.id).where(Ticket.intake_key.in_(keys))
            )
            by_key = {k: i for k, i in found.all() if k is not None}
        fresh: list[int] = []  # positions in `rows` that make a new ticket
        claimed: set[str] = set()
        for n, r in enumerate(rows):
            key = r["intake_key"]
            if key and (key in by_key or key in claimed):
                continue
            if key:
                claimed.add(key)
            fresh.append(n)
        new_ids: dict[int, int] = {}
        if fresh:
            # Core inserts on the tables: the ORM's bulk path costs about 3x per row here.
            ids = (
                await session.scalars(
                    insert(TICKETS).returning(TICKETS.c.id, sort_by_parameter_order=True),
                    [rows[n] for n in fresh],
                )
            ).all()
            new_ids = dict(zip(fresh, ids, strict=True))
            event_ids = (
                await session.scalars(
                    insert(EVENTS).returning(EVENTS.c.id, sort_by_parameter_order=True),
                    [
                        {"ticket_id": new_ids[n], "at": now, "type": "created",
                         "actor": batch[n].actor, "to_value": "new"}
                        for n in fresh
                    ],
                )
            ).all()
            messages = [
                {
                    "key": f"event:{event_id}", "channel": rows[n]["channel"],
                    "identity_id": rows[n]["identity_id"], "ticket_id": new_ids[n],
                    "kind": "ticket_created", "payload": created_payload(rows[n], new_ids[n]),
                    "status": "pending", "attempts": 0, "next_attempt_at": now,
                    "created_at": now,
                }
                for n, event_id in zip(fresh, event_ids, strict=True)
                if rows[n]["identity_id"] is not None
            ]
            if messages:
                await session.execute(insert(OUTBOX), messages)
            for n, ticket_id in new_ids.items():
                if rows[n]["intake_key"]:
                    by_key[rows[n]["intake_key"]] = ticket_id
    return [
        Created(new_ids[n], created=True) if n in new_ids
        else Created(by_key[rows[n]["intake_key"]], created=False)
        for n in range(len(rows))
    ]
