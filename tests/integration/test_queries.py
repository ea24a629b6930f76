"""The ticket list: every filter combination pages through exactly the matching tickets, most
urgent first, with no repeats and no gaps (also when several statuses are asked for)."""

from __future__ import annotations

import random

from storage import tickets
from storage.db import Store
from storage.queries import TicketFilter, list_tickets
from tests.integration.helpers import chat_customer, chat_ticket, rules


async def _walk(store: Store, f: TicketFilter, limit: int) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    cursor = None
    while True:
        async with store.read() as s:
            rows, cursor = await list_tickets(s, f, limit=limit, cursor=cursor)
        out += [(r.ticket.priority, r.ticket.resolution_due.isoformat(), r.ticket.id) for r in rows]
        if cursor is None:
            return out


async def test_multi_status_lists_page_like_one_ordered_list(store: Store) -> None:
    r = rules()
    who = await chat_customer(store, r)
    rng = random.Random(3)
    statuses: dict[int, str] = {}
    for _ in range(45):
        number = await chat_ticket(store, r, who, priority=rng.choice(["P1", "P2", "P3", "P4"]),
                                   category=rng.choice(["delivery", "billing"]))
        target = rng.choice(["new", "acknowledged", "in_progress", "resolved"])
        if target != "new":
            async with store.transaction() as s:
                await tickets.move_ticket(s, r, number, target, actor="agent:a")
        statuses[number] = target
    for wanted in (["new", "in_progress"], ["resolved", "new", "acknowledged"], ["in_progress"]):
        for limit in (1, 4, 50):
            got = await _walk(store, TicketFilter(statuses=wanted), limit)
            expected_ids = {n for n, st in statuses.items() if st in wanted}
            assert got == sorted(got)  # (priority, deadline, number): most urgent first
            assert {g[2] for g in got} == expected_ids and len(got) == len(expected_ids)
    billing_new = await _walk(
        store, TicketFilter(statuses=["new", "resolved"], categories=["billing"]), 3
    )
    async with store.read() as s:
        rows, _ = await list_tickets(s, TicketFilter(categories=["billing"]), limit=100,
                                     cursor=None)
    expected = sorted(
        (row.ticket.priority, row.ticket.resolution_due.isoformat(), row.ticket.id)
        for row in rows if statuses[row.ticket.id] in ("new", "resolved")
    )
    assert billing_new == expected
