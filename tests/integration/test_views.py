"""Ticket-list views on SQLite and PostgreSQL: mine, unassigned, breaching soon, breached, and
the views people save."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from storage import tickets, views
from storage.clock import ManualClock
from storage.db import Store
from storage.errors import Invalid, NotFound
from storage.queries import list_tickets
from storage.sla import SlaPolicy
from storage.tickets import TicketRules
from tests.integration.helpers import agent, chat_customer, chat_ticket, rules


async def _numbers(
    store: Store, r: TicketRules, query: str, agent_id: int, limit: int = 50
) -> list[int]:
    spec = views.parse_filters(dict(parse_qsl(query)))
    found: list[int] = []
    cursor = None
    async with store.read() as s:
        f = await views.resolve(s, spec, agent_id=agent_id, now=r.clock(), policy=r.sla)
        while True:
            rows, cursor = await list_tickets(s, f, limit=limit, cursor=cursor)
            found += [row.ticket.id for row in rows]
            if cursor is None:
                return found


async def test_mine_and_unassigned_show_open_work_only(store: Store) -> None:
    r = rules()
    alice = await agent(store, "alice")
    bob = await agent(store, "bob")
    who = await chat_customer(store, r)
    mine, bobs, nobodys, done = [await chat_ticket(store, r, who) for _ in range(4)]
    async with store.transaction() as s:
        for ticket_id, name in ((mine, "alice"), (bobs, "bob"), (done, "alice")):
            await tickets.assign(s, r, ticket_id, name, actor="agent:root")
        await tickets.move_ticket(s, r, done, "resolved", actor="agent:alice")
    assert await _numbers(store, r, "view=mine", alice.id) == [mine]
    assert await _numbers(store, r, "view=mine", bob.id) == [bobs]
    assert await _numbers(store, r, "view=unassigned", alice.id) == [nobodys]
    # A view's defaults give way to what the person adds: my resolved tickets.
    assert await _numbers(store, r, "view=mine&status=resolved", alice.id) == [done]


async def test_breached_and_breaching_soon_follow_the_clock(store: Store) -> None:
    clock = ManualClock()
    r = rules(clock)
    me = await agent(store)
    who = await chat_customer(store, r)
    safety = await chat_ticket(store, r, who, category="product_safety")  # P1: 15 min / 4 h
    parcel = await chat_ticket(store, r, who)  # P3: 4 h / 72 h
    answered = await chat_ticket(store, r, who)  # P3, first response given at once
    waiting = await chat_ticket(store, r, who, category="product_safety")
    async with store.transaction() as s:
        await tickets.move_ticket(s, r, answered, "acknowledged", actor="agent:alice")
        await tickets.move_ticket(s, r, waiting, "acknowledged", actor="agent:alice")
        await tickets.move_ticket(s, r, waiting, "waiting_customer", actor="agent:alice")

    # At once: the P1's first response is due within the hour, nothing has passed.
    assert await _numbers(store, r, "view=breaching_soon", me.id) == [safety]
    assert await _numbers(store, r, "view=breached", me.id) == []

    clock.advance(minutes=20)  # the P1's 15-minute first response has passed
    assert await _numbers(store, r, "view=breached", me.id) == [safety]
    assert await _numbers(store, r, "view=breaching_soon", me.id) == []

    clock.advance(hours=2, minutes=50)  # 3 h 10 min: the P3's first response is 50 min away
    assert await _numbers(store, r, "view=breaching_soon", me.id) == [parcel]
    # The clock stops while waiting on the customer: that P1 is in neither list.
    clock.advance(hours=5)
    assert await _numbers(store, r, "view=breached", me.id) == [safety, parcel]
    assert waiting not in await _numbers(store, r, "sla=soon", me.id)


async def test_the_reminder_fraction_widens_breaching_soon(store: Store) -> None:
    clock = ManualClock()
    r = TicketRules(sla=SlaPolicy(remind_at_fraction=0.5), clock=clock)
    me = await agent(store)
    who = await chat_customer(store, r)
    parcel = await chat_ticket(store, r, who)  # P3: 72 h to resolve
    async with store.transaction() as s:
        await tickets.move_ticket(s, r, parcel, "in_progress", actor="agent:alice")
    clock.advance(hours=35)
    assert await _numbers(store, r, "sla=soon", me.id) == []
    clock.advance(hours=2)  # 37 h gone: past half the window, 35 h still left
    assert await _numbers(store, r, "sla=soon", me.id) == [parcel]


async def test_a_deadline_view_pages_in_urgency_order_without_gaps(store: Store) -> None:
    clock = ManualClock()
    r = rules(clock)
    me = await agent(store)
    who = await chat_customer(store, r)
    made = []
    for n in range(7):
        made.append(await chat_ticket(store, r, who, category="product_safety" if n % 3 else None))
        clock.advance(minutes=1)
    clock.advance(hours=80)
    one_go = await _numbers(store, r, "view=breached", me.id)
    paged = await _numbers(store, r, "view=breached", me.id, limit=2)
    assert paged == one_go and sorted(one_go) == sorted(made)
    p1 = [t for n, t in enumerate(made) if n % 3]
    assert one_go[: len(p1)] == p1  # P1 before P3, each by its deadline


async def test_bad_filters_are_refused_in_words() -> None:
    with pytest.raises(Invalid, match="status: unknown value 'open'"):
        views.parse_filters({"status": "open"})
    with pytest.raises(Invalid, match="view: unknown view"):
        views.parse_filters({"view": "everything"})
    with pytest.raises(Invalid, match="sla"):
        views.parse_filters({"sla": "late"})


async def test_an_sla_view_of_closed_tickets_explains_itself(store: Store) -> None:
    me = await agent(store)
    spec = views.parse_filters({"sla": "breached", "status": "closed"})
    async with store.read() as s:
        with pytest.raises(Invalid, match="running SLA clock"):
            await views.resolve(s, spec, agent_id=me.id, now=ManualClock().now,
                                policy=SlaPolicy())


async def test_saved_views_are_personal_or_shared(store: Store) -> None:
    now = ManualClock().now
    alice = await agent(store, "alice")
    bob = await agent(store, "bob")
    root = await agent(store, "root", role="admin")
    async with store.transaction() as s:
        mine = await views.save_view(s, alice, "My P1s", "?priority=P1&assignee=me&cursor=x",
                                     shared=False, now=now)
        await views.save_view(s, bob, "Bob's", "channel=phone", shared=False, now=now)
        team = await views.save_view(s, alice, "Safety", "category=product_safety&sla=soon",
                                     shared=True, now=now)
    # Only known filters are kept, in a canonical order.
    assert mine.query == "priority=P1&assignee=me"
    async with store.read() as s:
        assert [v.name for v in await views.list_views(s, alice.id)] == ["My P1s", "Safety"]
        assert [v.name for v in await views.list_views(s, bob.id)] == ["Bob's", "Safety"]
    async with store.transaction() as s:  # saving a name again replaces its filters
        again = await views.save_view(s, alice, "My P1s", "priority=P1,P2", shared=False,
                                      now=now)
    assert again.id == mine.id and again.query == "priority=P1%2CP2"
    # The team's view is not one agent's to rewrite (not even its author's); an admin's.
    for who in (bob, alice):
        with pytest.raises(views.Forbidden, match="only an admin"):
            async with store.transaction() as s:
                await views.save_view(s, who, "Safety", "channel=x", shared=True, now=now)
    async with store.transaction() as s:
        changed = await views.save_view(s, root, "Safety", "category=product_safety",
                                        shared=True, now=now)
    assert changed.id == team.id and changed.query == "category=product_safety"
    async with store.transaction() as s:
        with pytest.raises(NotFound):
            await views.delete_view(s, bob, mine.id)
        with pytest.raises(views.Forbidden):
            await views.delete_view(s, bob, team.id)
    async with store.transaction() as s:
        await views.delete_view(s, root, team.id)
        await views.delete_view(s, alice, mine.id)
    async with store.read() as s:
        assert await views.list_views(s, alice.id) == []


async def test_a_view_needs_a_name_and_a_filter(store: Store) -> None:
    alice = await agent(store)
    now = ManualClock().now
    async with store.transaction() as s:
        with pytest.raises(Invalid, match="name"):
            await views.save_view(s, alice, "  ", "priority=P1", shared=False, now=now)
        with pytest.raises(Invalid, match="at least one filter"):
            await views.save_view(s, alice, "Empty", "cursor=abc", shared=False, now=now)
        with pytest.raises(Invalid, match="priority"):
            await views.save_view(s, alice, "Bad", "priority=P9", shared=False, now=now)
