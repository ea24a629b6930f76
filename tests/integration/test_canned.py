"""Canned replies on SQLite and PostgreSQL: variables filled from the ticket, rules on names."""

from __future__ import annotations

import pytest

from storage import canned, tickets
from storage.clock import ManualClock
from storage.db import Store
from storage.errors import Conflict, Invalid
from storage.queries import ticket_detail
from tests.integration.helpers import agent, chat_customer, chat_ticket, rules


async def test_variables_are_filled_from_the_ticket_in_the_customers_language(
    store: Store,
) -> None:
    r = rules()
    alice = await agent(store)
    who = await chat_customer(store, r)
    en = await chat_ticket(store, r, who, order_number="123-4567")
    zh = await chat_ticket(store, r, who, language="zh")
    async with store.transaction() as s:
        await tickets.move_ticket(s, r, zh, "in_progress", actor="agent:alice")
        row = await canned.create_canned(
            s, name="Sorry", language=None, now=r.clock(),
            body="Dear {customer}, about {ticket} ({status}, order {order}): {agent} is on it.",
        )
    async with store.read() as s:
        d_en, d_zh = await ticket_detail(s, en), await ticket_detail(s, zh)
    text = canned.fill(row.body, canned.variables_for(d_en.ticket, d_en.customer, alice))
    assert text == (f"Dear Mei, about CL-{en} (new, order 123-4567): alice is on it.")
    text = canned.fill(row.body, canned.variables_for(d_zh.ticket, d_zh.customer, alice))
    assert f"CL-{zh} (处理中" in text


def test_braces_that_are_not_variables_stay_as_typed() -> None:
    assert canned.fill("{ticket} costs {5} {", {"ticket": "CL-1"}) == "CL-1 costs {5} {"


async def test_unknown_variables_duplicates_and_empty_bodies_are_refused(store: Store) -> None:
    now = ManualClock().now
    async with store.transaction() as s:
        with pytest.raises(Invalid, match=r"unknown variable \{custmer\}"):
            await canned.create_canned(s, name="Typo", body="Hi {custmer}", language=None,
                                       now=now)
        with pytest.raises(Invalid, match="empty"):
            await canned.create_canned(s, name="Blank", body="   ", language="en", now=now)
        await canned.create_canned(s, name="Thanks", body="Thank you!", language="en", now=now)
        with pytest.raises(Conflict, match="exists already"):
            await canned.create_canned(s, name="Thanks", body="Again", language="en", now=now)


async def test_admins_edit_and_delete_canned_replies(store: Store) -> None:
    now = ManualClock().now
    async with store.transaction() as s:
        first = await canned.create_canned(s, name="A", body="a", language="en", now=now)
        await canned.create_canned(s, name="B", body="b", language="zh", now=now)
        await canned.create_canned(s, name="C", body="c", language=None, now=now)
    async with store.transaction() as s:
        await canned.update_canned(s, first.id, name="A2", body="Hello {customer}",
                                   language="en")
    async with store.transaction() as s:
        replies = await canned.list_canned(s)
        assert [c.name for c in replies] == ["A2", "B", "C"]
        assert [c.name for c in canned.for_language(replies, "zh")] == ["B", "C"]
        assert [c.name for c in canned.for_language(replies, None)] == ["A2", "C"]
        await canned.delete_canned(s, first.id)
    async with store.read() as s:
        assert [c.name for c in await canned.list_canned(s)] == ["B", "C"]
