"""Merging two tickets of one customer, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from storage import tickets
from storage.db import Store
from storage.errors import Conflict, Invalid, NotFound
from storage.merge import merge_tickets
from storage.models import OutboxMessage
from storage.queries import ticket_detail
from tests.integration.helpers import agent, chat_customer, chat_ticket, rules


async def test_the_duplicate_is_closed_and_its_messages_show_on_the_target(store: Store) -> None:
    r = rules()
    alice = await agent(store)
    who = await chat_customer(store, r)
    keep = await chat_ticket(store, r, who)
    dup = await chat_ticket(store, r, who, description="Still no parcel!")
    async with store.transaction() as s:
        await tickets.add_customer_message(s, r, dup, "Order 123-4567, please hurry")
        await tickets.reply(s, r, dup, "Checking with the courier", public=False, agent=alice)
    async with store.transaction() as s:
        await merge_tickets(s, r, dup, keep, actor="agent:alice")

    async with store.read() as s:
        target, source = await ticket_detail(s, keep), await ticket_detail(s, dup)
        notes = (await s.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == "ticket_merged")
        )).all()
    assert (source.ticket.status, source.ticket.merged_into_id) == ("closed", keep)
    assert source.ticket.closed_at is not None
    assert [(e.type, e.from_value, e.to_value) for e in source.events][-1] == (
        "merged", "new", "closed")
    assert [e.type for e in target.events][-1] == "merged_from"
    assert target.merged_from == [dup]
    assert [m.text for m in target.messages] == [
        "Order 123-4567, please hurry", "Checking with the courier"]
    [note] = notes
    assert note.payload["number"] == f"CL-{keep}" and f"CL-{dup}" in note.payload["text"]
    assert note.identity_id == who.id and note.status == "pending"


async def test_another_customers_ticket_is_refused(store: Store) -> None:
    r = rules()
    mei = await chat_customer(store, r, "5001")
    tom = await chat_customer(store, r, "5002")
    meis, toms = await chat_ticket(store, r, mei), await chat_ticket(store, r, tom)
    async with store.transaction() as s:
        with pytest.raises(Invalid, match="different customers"):
            await merge_tickets(s, r, toms, meis, actor="agent:alice")
    async with store.read() as s:
        assert (await ticket_detail(s, toms)).ticket.status == "new"


async def test_self_merges_chains_and_unknown_tickets_are_refused(store: Store) -> None:
    r = rules()
    who = await chat_customer(store, r)
    a, b, c = [await chat_ticket(store, r, who) for _ in range(3)]
    async with store.transaction() as s:
        with pytest.raises(Invalid, match="itself"):
            await merge_tickets(s, r, a, a, actor="agent:alice")
        with pytest.raises(NotFound):
            await merge_tickets(s, r, a, 99_999, actor="agent:alice")
    async with store.transaction() as s:
        await merge_tickets(s, r, b, a, actor="agent:alice")
    async with store.transaction() as s:
        with pytest.raises(Conflict, match="already merged"):
            await merge_tickets(s, r, b, c, actor="agent:alice")
        with pytest.raises(Conflict, match="merge into that ticket instead"):
            await merge_tickets(s, r, c, b, actor="agent:alice")


async def test_two_agents_merging_the_same_pair_at_once_merge_it_once(store: Store) -> None:
    r = rules()
    who = await chat_customer(store, r)
    a, b = await chat_ticket(store, r, who), await chat_ticket(store, r, who)

    async def merge(source: int, target: int) -> str:
        try:
            async with store.transaction() as s:
                await merge_tickets(s, r, source, target, actor="agent:x")
            return "merged"
        except Conflict:
            return "refused"

    results = await asyncio.gather(merge(a, b), merge(b, a))
    assert sorted(results) == ["merged", "refused"]
    async with store.read() as s:
        da, db = await ticket_detail(s, a), await ticket_detail(s, b)
    assert sorted([da.ticket.merged_into_id is None, db.ticket.merged_into_id is None]) == [
        False, True]
