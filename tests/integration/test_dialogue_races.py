"""Optimistic turns on PostgreSQL (bot/flows/turn.py): a turn reads its conversation without a
lock and writes everything in one statement that checks what it read. These tests make the
check fail — another event of the same customer, or the desk moving the ticket, in between —
and look at what the customer and the team would see: every message answered once and stored
once, the ticket's status respected."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, func, select

from storage import conversations
from storage.db import create_store
from storage.models import Conversation, Message, OutboxMessage, TicketEvent
from storage.tickets import move_ticket
from tests.conftest import _truncate
from tests.integration.test_dialogue_support import FakeChat, Shop, make_shop

NUMBER = re.compile(r"CL-\d+")


@pytest.fixture
async def shop(pg_database: str) -> AsyncIterator[Shop]:
    store = create_store(pg_database)
    await _truncate(store)
    yield make_shop(store)
    await store.close()


async def _with_ticket(shop: Shop) -> tuple[FakeChat, int]:
    chat = shop.chat()
    await chat.say("My parcel for order 123-4567 never arrived")
    await chat.say("skip")
    assert NUMBER.search(await chat.say("yes"))
    [ticket] = await shop.tickets()
    return chat, ticket.id


async def _on_ticket(shop: Shop, ticket_id: int) -> list[str]:
    async with shop.store.read() as s:
        return list((await s.scalars(
            select(Message.text).where(Message.ticket_id == ticket_id, Message.direction == "in")
            .order_by(Message.id)
        )).all())


async def _events(shop: Shop, ticket_id: int) -> int:
    async with shop.store.read() as s:
        return int(await s.scalar(select(func.count()).select_from(TicketEvent).where(
            TicketEvent.ticket_id == ticket_id, TicketEvent.type == "customer_message")) or 0)


async def test_a_burst_from_one_customer_is_stored_once_and_answered_once(shop: Shop) -> None:
    chat, ticket_id = await _with_ticket(shop)
    async with shop.store.read() as s:
        version = int(await s.scalar(select(Conversation.version)) or 0)
        replies = int(await s.scalar(select(func.count()).select_from(OutboxMessage)) or 0)
    events = await _events(shop, ticket_id)
    texts = [f"one more detail, number {n}" for n in range(6)]
    # Six events at once: all read the same version, one write wins, the others find the
    # version moved and run again (locked, so they queue instead of racing again).
    results = await asyncio.gather(*(chat.send(t, ref=f"burst-{n}") for n, t in
                                     enumerate(texts)))
    assert all(len(r) == 1 and f"CL-{ticket_id}" in r[0].text for r in results)
    stored = await _on_ticket(shop, ticket_id)
    assert sorted(t for t in stored if t.startswith("one more")) == sorted(texts)
    assert await _events(shop, ticket_id) == events + 6
    async with shop.store.read() as s:
        assert await s.scalar(select(Conversation.version)) == version + 6
        assert await s.scalar(select(func.count()).select_from(OutboxMessage)) == replies + 6


async def test_the_desk_moving_the_ticket_mid_turn_is_respected(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat, ticket_id = await _with_ticket(shop)
    async with shop.store.transaction() as s:
        await move_ticket(s, shop.rules, ticket_id, "acknowledged", actor="agent:alice")
    real = conversations.write_turn_pg
    raced = []

    async def desk_moves_first(*args: Any, **kw: Any) -> list[int]:
        if not raced:
            # After the turn read the ticket as acknowledged, an agent asks the customer a
            # question: the ticket now waits for them.
            raced.append(True)
            async with shop.store.transaction() as s:
                await move_ticket(s, shop.rules, ticket_id, "waiting_customer",
                                  actor="agent:alice")
        return await real(*args, **kw)

    monkeypatch.setattr(conversations, "write_turn_pg", desk_moves_first)
    answer = await chat.say("It was a blue box, left at the back door")
    assert raced and f"CL-{ticket_id}" in answer
    [ticket] = await shop.tickets()
    # The customer answered the agent's question: the ticket moves on, as it would have had
    # the agent been a moment earlier; and the message is on the ticket exactly once.
    assert ticket.status == "in_progress"
    stored = await _on_ticket(shop, ticket_id)
    assert stored.count("It was a blue box, left at the back door") == 1


async def test_a_write_that_fails_leaves_nothing_behind(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat, ticket_id = await _with_ticket(shop)
    before = await _on_ticket(shop, ticket_id)
    async with shop.store.read() as s:
        version = await s.scalar(select(Conversation.version))
        replies = await s.scalar(select(func.count()).select_from(OutboxMessage))

    async def conversation_moved(conn: Any, conversation: Any, **kw: Any) -> list[int]:
        conversation.version -= 1  # as if another event had written after our read
        try:
            return await real(conn, conversation, **kw)
        finally:
            conversation.version += 1

    real = conversations.write_turn_pg
    monkeypatch.setattr(conversations, "write_turn_pg", conversation_moved)
    with pytest.raises(conversations.TurnRaced):
        await chat.say("this one is lost in a race every time")
    # Nothing of the failed turn was written: no message, no reply, no state change.
    assert await _on_ticket(shop, ticket_id) == before
    async with shop.store.read() as s:
        assert await s.scalar(select(Conversation.version)) == version
        assert await s.scalar(select(func.count()).select_from(OutboxMessage)) == replies


async def test_the_database_dropping_its_connections_loses_no_message(
    shop: Shop, pg_database: str
) -> None:
    import asyncpg

    chat, ticket_id = await _with_ticket(shop)
    # Every pooled connection is cut, as by a database restart or failover.
    admin = await asyncpg.connect(pg_database.replace("postgresql+asyncpg", "postgresql"))
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    # The platform redelivers an event whose webhook failed. The dialogue recovers at once,
    # and the event is stored once and answered once, whichever attempt wrote it (a write can
    # commit just before its connection dies: then the redelivery is a duplicate, and the
    # outbox worker sends the reply that was written).
    for _ in range(3):
        try:
            await chat.send("the courier called me just now", ref="after-cut")
            break
        except Exception:
            continue
    else:
        pytest.fail("the dialogue never recovered from losing its connections")
    assert (await _on_ticket(shop, ticket_id)).count("the courier called me just now") == 1
    async with shop.store.read() as s:
        answers = list((await s.scalars(select(OutboxMessage.payload).where(
            OutboxMessage.key.like("%:after-cut:%")))).all())
    assert len(answers) == 1 and f"CL-{ticket_id}" in answers[0]["text"]


async def test_a_crowd_writing_at_once_is_served_from_the_pool_without_new_connections(
    shop: Shop,
) -> None:
    # Opening a connection beyond the pool costs ~50 ms, and such a connection is closed again
    # when it comes back: the chat's turns in flight must fit the pool that stays open.
    opened = 0

    def on_connect(*_a: Any) -> None:
        nonlocal opened
        opened += 1

    event.listen(shop.store.engine.sync_engine, "connect", on_connect)
    try:
        chats = [shop.chat(customer=str(9000 + n)) for n in range(48)]
        for text in ("hello", "My parcel for order 123-4567 never arrived", "skip"):
            answers = await asyncio.gather(*(c.say(text) for c in chats))
            assert all(answers)
    finally:
        event.remove(shop.store.engine.sync_engine, "connect", on_connect)
    assert opened <= shop.store.engine.pool.size()  # type: ignore[attr-defined]


async def test_a_confirm_that_loses_its_race_leaves_no_ticket_and_the_retry_makes_one(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = shop.chat()
    await chat.say("My parcel for order 123-4567 never arrived")
    await chat.say("skip")
    real = conversations.write_turn_pg
    seen: list[int] = []

    async def another_event_wrote_first(conn: Any, conversation: Any, **kw: Any) -> list[int]:
        if not seen:
            # The optimistic confirm has inserted its ticket and confirmation in its
            # transaction; the version it read is stale: all of it must roll back.
            seen.append(len(await shop.tickets()))
            conversation.version -= 1
            try:
                return await real(conn, conversation, **kw)
            finally:
                conversation.version += 1
        return await real(conn, conversation, **kw)

    monkeypatch.setattr(conversations, "write_turn_pg", another_event_wrote_first)
    answer = await chat.say("yes")
    [ticket] = await shop.tickets()  # the retry made it: one ticket, not two
    assert seen == [0] and f"CL-{ticket.id}" in answer
    async with shop.store.read() as s:
        confirmations = await s.scalar(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.kind == "ticket_created"))
    assert confirmations == 1
