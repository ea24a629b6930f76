"""What platforms and people really do: duplicates, double presses, old buttons, restarts,
floods, stickers, and writing after the ticket exists."""

from __future__ import annotations

import asyncio
import re

import pytest
from sqlalchemy import select

from bot.delivery import mark_delivered
from storage.db import Store
from storage.models import Message, OutboxMessage, Ticket
from storage.tickets import move_ticket
from tests.integration.test_dialogue_support import Shop, make_shop


@pytest.fixture
def shop(store: Store) -> Shop:
    return make_shop(store)

NUMBER = re.compile(r"CL-\d+")


async def test_a_duplicate_event_gets_no_second_reply_and_no_second_ticket(shop: Shop) -> None:
    chat = shop.chat()
    await chat.send("You should open earlier on Sundays", ref="u1")
    first = await chat.send("yes", ref="u2")
    outbox_rows = await shop.count(OutboxMessage)
    assert await chat.send("yes", ref="u2") == []  # the platform delivered it again
    assert await chat.send("You should open earlier on Sundays", ref="u1") == []
    assert NUMBER.search(first[0].text)
    assert len(await shop.tickets()) == 1
    assert await shop.count(OutboxMessage) == outbox_rows


async def test_concurrent_duplicates_are_handled_once(shop: Shop) -> None:
    chat = shop.chat()
    await chat.say("You should open earlier on Sundays")
    results = await asyncio.gather(*(chat.send("yes", ref="same") for _ in range(5)))
    assert sum(1 for r in results if r) == 1
    assert len(await shop.tickets()) == 1


async def test_confirm_pressed_twice_creates_one_ticket(shop: Shop) -> None:
    chat = shop.chat()
    await chat.say("You should open earlier on Sundays")
    confirm = chat.button("confirm:")
    first = await chat.press(confirm)
    second = await chat.press(confirm)
    number = NUMBER.search(first)
    assert number and number.group() in second and "already" in second
    assert len(await shop.tickets()) == 1


async def test_a_stale_summary_button_creates_nothing(shop: Shop) -> None:
    chat = shop.chat()
    await chat.say("You should open earlier on Sundays")
    old_confirm = chat.button("confirm:")
    await chat.say("/new")
    answer = await chat.press(old_confirm)
    assert "earlier conversation" in answer
    assert await shop.tickets() == []
    # An old skip of the current flow is answered, and the open question repeated.
    await chat.say("The milk I bought was spoiled and my child got sick")
    answer = await chat.press("skip:2:describe")
    assert "already answered" in answer
    assert await shop.tickets() == []
    assert "earlier conversation" in await chat.press("csat:12345:5")


async def test_a_restart_mid_conversation_carries_on(shop: Shop) -> None:
    chat = shop.chat()
    await chat.say("My parcel for order 123-4567 never arrived")
    # The process restarts: a fresh dialogue over the same store knows where we were.
    restarted = shop.restart().chat()
    assert "123-4567" in await restarted.say("skip")
    confirmation = await restarted.say("yes")
    assert NUMBER.search(confirmation)
    assert len(await shop.tickets()) == 1


async def test_two_processes_share_one_conversation(shop: Shop) -> None:
    other = make_shop(shop.store, shop.clock)
    a, b = shop.chat(), other.chat()
    await a.say("My parcel for order 123-4567 never arrived")
    assert "123-4567" in await b.say("skip")
    await a.say("yes")
    assert len(await shop.tickets()) == 1


async def test_text_after_creation_is_added_to_the_ticket(shop: Shop) -> None:
    chat = shop.chat()
    await chat.say("My parcel for order 123-4567 never arrived")
    await chat.say("skip")
    await chat.say("yes")
    [ticket] = await shop.tickets()
    async with shop.store.transaction() as s:
        await move_ticket(s, shop.rules, ticket.id, "acknowledged", actor="agent:alice")
        await move_ticket(s, shop.rules, ticket.id, "waiting_customer", actor="agent:alice")
    answer = await chat.say("The courier said it was left with a neighbour")
    assert f"CL-{ticket.id}" in answer
    [ticket] = await shop.tickets()
    assert ticket.status == "in_progress"  # the customer answered: the ticket moves again
    async with shop.store.read() as s:
        texts = list((await s.scalars(
            select(Message.text).where(Message.ticket_id == ticket.id))).all())
    assert "The courier said it was left with a neighbour" in texts


async def test_unsupported_content_is_answered_politely(shop: Shop) -> None:
    chat = shop.chat()
    assert "in words" in await chat.send_text_of(unsupported="sticker")
    await chat.say("You should open earlier on Sundays")
    reply = await chat.send_text_of(unsupported="voice")
    assert "voice" in reply and "Shall I create" in reply  # and the open question again


async def test_a_flood_is_throttled_without_losing_a_word(shop: Shop) -> None:
    chat = shop.chat(seconds_between=0)
    answered = 0
    for i in range(30):
        replies = await chat.send(f"hello number {i}")
        answered += bool(replies)
    assert answered <= 10
    async with shop.store.read() as s:
        stored = list((await s.scalars(select(Message.text))).all())
    assert len(stored) == 30
    shop.clock.advance(seconds=11)
    assert await chat.say("/status")  # the window passed: answered again


async def test_delivered_replies_are_not_sent_again_by_the_worker(shop: Shop) -> None:
    chat = shop.chat()
    replies = await chat.send("/start")
    await mark_delivered(shop.store, [r.ref for r in replies if r.ref is not None])
    async with shop.store.read() as s:
        statuses = set((await s.scalars(select(OutboxMessage.status))).all())
    assert statuses == {"sent"}


async def test_a_ticket_of_a_closed_conversation_does_not_swallow_new_complaints(
    shop: Shop,
) -> None:
    chat = shop.chat()
    await chat.say("You should open earlier on Sundays")
    await chat.say("yes")
    [ticket] = await shop.tickets()
    async with shop.store.transaction() as s:
        await move_ticket(s, shop.rules, ticket.id, "resolved", actor="agent:alice")
        await move_ticket(s, shop.rules, ticket.id, "closed", actor="agent:alice")
    assert "Shall I create" in await chat.say("Please add more parking spaces")
    async with shop.store.read() as s:
        assert (await s.get(Ticket, ticket.id)) is not None


async def test_a_new_customers_first_messages_at_once_make_one_customer(shop: Shop) -> None:
    chat = shop.chat(customer="new-at-once")
    results = await asyncio.gather(*(chat.send("/start") for _ in range(4)))
    assert all(results)  # every event answered (a lost race is simply retried)
    from storage.models import ChannelIdentity, Conversation

    assert await shop.count(ChannelIdentity) == 1 and await shop.count(Conversation) == 1


async def test_a_customer_who_writes_again_can_be_written_to_again(shop: Shop) -> None:
    from storage.models import ChannelIdentity
    from storage.outbox import set_reachable

    chat = shop.chat()
    await chat.say("hello")
    async with shop.store.transaction() as s:  # they had blocked the bot
        assert await set_reachable(s, reachable=False, reason="blocked the bot",
                                   channel="telegram", external_id="5001") == 1
    await chat.say("hello again")  # and now they are back
    async with shop.store.read() as s:
        identity = (await s.scalars(select(ChannelIdentity))).one()
    assert identity.reachable and identity.unreachable_reason is None
