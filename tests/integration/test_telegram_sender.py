"""The outbox sender for Telegram through the outbox worker, against the fake Bot API: what an
operator sees in the outbox and on the customer's identity after each kind of answer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.telegram import TelegramChannel
from storage import outbox
from storage.clock import ManualClock
from storage.db import Store
from storage.dispatch import DispatchPolicy, dispatch_once
from storage.models import ChannelIdentity, OutboxMessage
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.telegram_harness import running_channel
from tests.fakes.telegram_updates import Customer
from tests.integration.helpers import chat_customer, rules

POLICY = DispatchPolicy(max_attempts=5, backoff_seconds=10, batch_size=200, concurrency=20)
mei = Customer(5001, "Mei", "en")


@pytest.fixture
async def channel(fake: FakeTelegram, store: Store) -> AsyncIterator[TelegramChannel]:
    async with running_channel(fake, store, "webhook") as ch:
        yield ch


async def queue_reply(store: Store, clock: ManualClock, external_id: str, text: str,
                      key: str) -> int:
    identity = await chat_customer(store, rules(clock), external_id=external_id)
    async with store.transaction() as session:
        row = outbox.enqueue(
            session, key=key, channel="telegram", identity_id=identity.id, ticket_id=None,
            kind="chat_reply", payload={"text": text, "language": "en"}, now=clock.now,
        )
        await session.flush()
        return row.id


async def row(store: Store, row_id: int) -> OutboxMessage:
    async with store.read() as s:
        found = await s.get(OutboxMessage, row_id)
        assert found is not None
        return found


async def reachable(store: Store, external_id: str) -> bool:
    async with store.read() as s:
        ident = (await s.scalars(select(ChannelIdentity).where(
            ChannelIdentity.external_id == external_id))).one()
        return ident.reachable


async def deliver(store: Store, channel: TelegramChannel, clock: ManualClock) -> int:
    return await dispatch_once(store, {"telegram": channel.sender}, POLICY, worker="w",
                               clock=clock)


async def test_an_agent_reply_reaches_the_customer_once(
    fake: FakeTelegram, store: Store, channel: TelegramChannel
) -> None:
    clock = ManualClock()
    fake.add_customer(mei)
    rid = await queue_reply(store, clock, "5001", "Your refund was approved.", "r1")
    assert await deliver(store, channel, clock) == 1
    assert await deliver(store, channel, clock) == 0
    assert fake.texts_to(mei.id) == ["Your refund was approved."]
    assert (await row(store, rid)).status == outbox.SENT


@pytest.mark.parametrize("description", [
    "Forbidden: bot was blocked by the user", "Forbidden: user is deactivated",
])
async def test_a_customer_who_blocked_the_bot_is_marked_unreachable(
    fake: FakeTelegram, store: Store, channel: TelegramChannel, description: str
) -> None:
    clock = ManualClock()
    fake.block(mei.id, description)
    rid = await queue_reply(store, clock, "5001", "Ticket CL-1 is resolved.", "r1")
    await deliver(store, channel, clock)
    dead = await row(store, rid)
    assert dead.status == outbox.DEAD and "Forbidden" in (dead.last_error or "")
    assert not await reachable(store, "5001")
    clock.advance(hours=2)
    assert await deliver(store, channel, clock) == 0  # never tried again
    assert len(fake.calls_of("sendMessage")) == 1


async def test_a_chat_telegram_does_not_know_is_unreachable(
    fake: FakeTelegram, store: Store, channel: TelegramChannel
) -> None:
    clock = ManualClock()
    rid = await queue_reply(store, clock, "999001", "Hello?", "r1")  # never wrote to the bot
    await deliver(store, channel, clock)
    assert (await row(store, rid)).status == outbox.DEAD
    assert not await reachable(store, "999001")


async def test_a_429_reschedules_after_retry_after(
    fake: FakeTelegram, store: Store, channel: TelegramChannel
) -> None:
    clock = ManualClock()
    fake.add_customer(mei)
    fake.fail("sendMessage", 429, retry_after=7)
    rid = await queue_reply(store, clock, "5001", "Status: in progress", "r1")
    await deliver(store, channel, clock)
    waiting = await row(store, rid)
    assert waiting.status == outbox.PENDING
    assert waiting.next_attempt_at is not None
    assert waiting.next_attempt_at.replace(tzinfo=None) == (
        clock.now + timedelta(seconds=7)).replace(tzinfo=None)
    clock.advance(seconds=6)
    assert await deliver(store, channel, clock) == 0  # not before Telegram allows
    clock.advance(seconds=2)
    assert await deliver(store, channel, clock) == 1
    assert fake.texts_to(mei.id) == ["Status: in progress"]
    assert await reachable(store, "5001")


@pytest.mark.parametrize("status", [500, 502])
async def test_server_errors_back_off_and_deliver_later(
    fake: FakeTelegram, store: Store, channel: TelegramChannel, status: int
) -> None:
    clock = ManualClock()
    fake.add_customer(mei)
    fake.fail("sendMessage", status, times=2)
    rid = await queue_reply(store, clock, "5001", "Your ticket was updated.", "r1")
    for _ in range(2):
        await deliver(store, channel, clock)
        waiting = await row(store, rid)
        assert waiting.status == outbox.PENDING and waiting.last_error
        clock.advance(minutes=5)
    await deliver(store, channel, clock)
    assert (await row(store, rid)).status == outbox.SENT
    assert fake.texts_to(mei.id) == ["Your ticket was updated."]  # once, not three times
    assert await reachable(store, "5001")


@pytest.mark.parametrize("status", [429, 500])
async def test_a_long_message_interrupted_midway_resumes_where_it_stopped(
    fake: FakeTelegram, store: Store, channel: TelegramChannel, status: int
) -> None:
    clock = ManualClock()
    fake.add_customer(mei)
    lines = [f"Line {n}: what the agent found about your parcel." for n in range(200)]
    rid = await queue_reply(store, clock, "5001", "\n".join(lines), "r1")
    fake.fail("sendMessage", status, retry_after=3, after=1)  # the second part is refused
    await deliver(store, channel, clock)
    cut = await row(store, rid)
    assert cut.status == outbox.PENDING and cut.parts_sent == 1
    assert len(fake.texts_to(mei.id)) == 1
    clock.advance(minutes=5)
    await deliver(store, channel, clock)
    parts = fake.texts_to(mei.id)
    assert "\n".join(parts) == "\n".join(lines)  # every line once, in order
    assert (await row(store, rid)).status == outbox.SENT


async def test_a_burst_is_held_to_thirty_messages_a_second(
    fake: FakeTelegram, store: Store, channel: TelegramChannel
) -> None:
    clock = ManualClock()
    customers = [Customer(6000 + i) for i in range(90)]
    for c in customers:
        fake.add_customer(c)
        await queue_reply(store, clock, str(c.id), "Our store hours changed.", f"n{c.id}")
    started = time.monotonic()
    assert await deliver(store, channel, clock) == 90
    elapsed = time.monotonic() - started
    assert elapsed >= 2.9  # 90 messages at 30/s

    sends = sorted(c.at for c in fake.calls_of("sendMessage"))
    window = [t for t in sends if sends[-1] - 1.0 <= t <= sends[-1]]
    assert len(window) <= 31
    assert all(len(fake.texts_to(c.id)) == 1 for c in customers)


async def test_blocking_the_bot_stops_messages_and_unblocking_resumes_them(
    fake: FakeTelegram, store: Store, channel: TelegramChannel
) -> None:
    clock = ManualClock()
    fake.add_customer(mei)
    await chat_customer(store, rules(clock), external_id="5001")
    # Telegram tells the bot at once (my_chat_member): nothing is even tried after that.
    await fake.wait_until_confirmed(fake.customer_blocks(mei))
    assert not await reachable(store, "5001")
    rid = await queue_reply(store, clock, "5001", "Ticket CL-1 is resolved.", "r1")
    await deliver(store, channel, clock)
    assert (await row(store, rid)).status == outbox.DEAD
    assert fake.calls_of("sendMessage") == []
    await fake.wait_until_confirmed(fake.customer_unblocks(mei))
    assert await reachable(store, "5001")
    rid = await queue_reply(store, clock, "5001", "Ticket CL-2 is resolved.", "r2")
    await deliver(store, channel, clock)
    assert fake.texts_to(mei.id) == ["Ticket CL-2 is resolved."]
    assert (await row(store, rid)).status == outbox.SENT
