"""The ticket list: every filter combination pages through exactly the matching tickets, most
urgent first, with no repeats and no gaps (also when several statuses are asked for)."""

from __future__ import annotations

import random

from storage import tickets
from storage.db import Store
from storage.lifecycle import format_number
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


async def test_lists_of_one_shape_each_find_their_own_tickets(store: Store) -> None:
    """The list statement is built once per shape of filter: a second list of the same shape
    with other values (categories, search words, a ticket number) finds its own tickets."""
    r = rules()
    who = await chat_customer(store, r)
    billing = await chat_ticket(store, r, who, category="billing", description="Refund twice")
    delivery = await chat_ticket(store, r, who, category="delivery", description="Parcel lost")
    discount = await chat_ticket(store, r, who, category="billing", description="50% off_code")

    async def numbers(f: TicketFilter) -> list[int]:
        return sorted(t[2] for t in await _walk(store, f, 1))

    for _ in range(2):  # the second round runs on the statements the first one built
        assert await numbers(TicketFilter(categories=["billing"])) == [billing, discount]
        assert await numbers(TicketFilter(categories=["delivery"])) == [delivery]
        both = ["new", "resolved"]
        assert await numbers(TicketFilter(statuses=both, categories=["delivery"])) == [delivery]
        assert await numbers(TicketFilter(statuses=both, categories=["billing"])) == [
            billing, discount,
        ]
        assert await numbers(TicketFilter(q="refund")) == [billing]
        assert await numbers(TicketFilter(q="parcel")) == [delivery]
        assert await numbers(TicketFilter(q="%")) == [discount]  # a percent sign, not "any"
        assert await numbers(TicketFilter(q="f_c")) == [discount]
        assert await numbers(TicketFilter(q=format_number(delivery))) == [delivery]
        assert await numbers(TicketFilter(q=format_number(billing))) == [billing]
