"""Status questions, /human, /cancel and /lang, as the customer sees them."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from storage.conversations import hand_back
from storage.db import Store
from storage.models import Message, OutboxMessage, TicketEvent
from storage.tickets import move_ticket
from tests.integration.test_dialogue_support import FakeChat, Shop, make_shop


@pytest.fixture
def shop(store: Store) -> Shop:
    return make_shop(store)

NUMBER = re.compile(r"CL-\d+")


async def _suggest(chat: FakeChat, text: str = "You should open earlier on Sundays") -> str:
    await chat.say(text)
    confirmation = await chat.say("yes")
    found = NUMBER.search(confirmation)
    assert found, confirmation
    return found.group()


async def test_status_without_tickets_and_with_several(shop: Shop) -> None:
    chat = shop.chat()
    assert "no open tickets" in await chat.say("/status")
    first = await _suggest(chat)
    await chat.say("/new")
    second = await _suggest(chat, "Please add more parking spaces")
    listing = await chat.say("/status")
    assert first in listing and second in listing and "new" in listing


async def test_status_of_one_ticket_in_words_en_and_zh(shop: Shop) -> None:
    chat = shop.chat()
    number = await _suggest(chat)
    [ticket] = await shop.tickets()
    async with shop.store.transaction() as s:
        await move_ticket(s, shop.rules, ticket.id, "in_progress", actor="agent:alice")
    assert f"{number}" in (answer := await chat.say(f"/status {number}"))
    assert "in progress" in answer
    assert "in progress" in await chat.say(f"where is my complaint {number}?")
    await chat.say("/lang zh")
    answer = await chat.say(f"我的投诉{number}怎么样了")
    assert number in answer and "处理中" in answer


async def test_a_status_question_at_what_happened_is_answered_and_the_question_asked_again(
    shop: Shop,
) -> None:
    chat = shop.chat()
    number = await _suggest(chat)
    assert "What happened" in await chat.press("menu:complaint")
    answer = await chat.say(f"where is my complaint {number}?")
    assert number in answer and "new" in answer and "What happened" in answer
    # The new report is still open, and its description is what comes next.
    reply = await chat.say("The fridge at the entrance smells of fish")
    assert "What happened" not in reply
    for _ in range(5):
        if chat.buttons() and chat.buttons()[0].startswith("cat:"):
            reply = await chat.press(chat.button("cat:"))
        elif skips := [d for d in chat.buttons() if d.startswith("skip:")]:
            reply = await chat.press(skips[0])
    assert "fridge" in reply and "where is my complaint" not in reply  # the summary


async def test_someone_elses_number_reads_exactly_like_an_unknown_one(shop: Shop) -> None:
    owner = shop.chat(customer="1")
    theirs = await _suggest(owner)
    stranger = shop.chat(customer="2")
    unknown = "CL-999999"
    for ask in ("/status {n}", "where is my complaint {n}?"):
        about_theirs = await stranger.say(ask.format(n=theirs))
        about_unknown = await stranger.say(ask.format(n=unknown))
        assert about_theirs.replace(theirs, "#") == about_unknown.replace(unknown, "#")
        assert "new" not in about_theirs.replace("/new", "")  # nothing about the real ticket


async def test_human_hand_off_records_silently_until_handed_back(shop: Shop) -> None:
    chat = shop.chat()
    number = await _suggest(chat)
    answer = await chat.say("/human")
    assert number in answer and "person" in answer
    [ticket] = await shop.tickets()
    assert ticket.needs_human
    # The bot keeps quiet; the person sees every word on the ticket.
    assert await chat.send("Hello? Is anyone there?") == []
    assert await chat.send("I'm still waiting") == []
    async with shop.store.read() as s:
        texts = list((await s.scalars(
            select(Message.text).where(Message.ticket_id == ticket.id))).all())
        events = list((await s.scalars(
            select(TicketEvent.type).where(TicketEvent.ticket_id == ticket.id))).all())
    assert "Hello? Is anyone there?" in texts and "I'm still waiting" in texts
    assert "needs_human" in events
    assert number in await chat.say("/status")  # commands still work
    async with shop.store.transaction() as s:
        assert await hand_back(s, ticket.id, actor="agent:alice", now=shop.clock())
    async with shop.store.read() as s:
        told = (await s.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == "handed_back"))).one()
    assert told.payload["number"] == number
    assert "added that to" in await chat.say("Thanks, one more thing")
    [ticket] = await shop.tickets()
    assert not ticket.needs_human


async def test_human_without_a_ticket_opens_one_for_a_person(shop: Shop) -> None:
    chat = shop.chat()
    answer = await chat.say("I want to talk to a human")
    number = NUMBER.search(answer)
    assert number and "person" in answer
    [ticket] = await shop.tickets()
    assert ticket.needs_human and ticket.kind == "question"
    assert "person" in await chat.say("/human")  # already with a person: said so, no new one
    assert len(await shop.tickets()) == 1
    # Told once: "a person will take over CL-n" is the confirmation, no second message.
    async with shop.store.read() as s:
        kinds = list((await s.scalars(select(OutboxMessage.kind).where(
            OutboxMessage.ticket_id == ticket.id))).all())
    assert "ticket_created" not in kinds


async def test_human_mid_intake_keeps_what_was_said(shop: Shop) -> None:
    chat = shop.chat()
    await chat.say("My parcel for order 123-4567 never arrived")
    answer = await chat.say("/human")
    assert NUMBER.search(answer)
    [ticket] = await shop.tickets()
    assert ticket.needs_human and ticket.order_number == "123-4567"


async def test_cancel_abandons_the_flow(shop: Shop) -> None:
    chat = shop.chat()
    await chat.say("You should open earlier on Sundays")
    confirm = chat.button("confirm:")
    assert "cancelled" in await chat.say("/cancel")
    assert "earlier conversation" in await chat.press(confirm)
    assert await shop.tickets() == []
    assert "nothing to cancel" in (await chat.say("/cancel")).lower()


async def test_lang_switches_and_sticks(shop: Shop) -> None:
    chat = shop.chat()
    assert "中文" in await chat.say("/lang zh")
    assert "工单" in await chat.say("/status")
    # Fixed by /lang: an English sentence does not switch back on its own.
    assert "建议" in await chat.say("You should open earlier on Sundays")
    assert "English" in await chat.say("/lang en")
    assert "Shall I create" in await chat.say("Please open earlier on Sundays")
    assert "English" in await chat.say("/lang") or chat.buttons() == ["lang:en", "lang:zh"]


async def test_language_follows_the_customer(shop: Shop) -> None:
    chat = shop.chat(hint="zh-hans")
    assert "您好" in await chat.say("/start")  # the platform's hint before they write
    english = shop.chat(customer="77", hint="zh-hans")
    assert "Shall I create" in await english.say("You should open earlier on Sundays")
