"""Satisfaction after resolution, and how status changes and agent replies read."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.channel import Reply
from bot.notifications import render
from storage import outbox
from storage.db import Store
from storage.models import Survey
from storage.tickets import move_ticket, reply
from tests.integration.helpers import agent
from tests.integration.test_dialogue_support import FakeChat, Shop, make_shop


@pytest.fixture
def shop(store: Store) -> Shop:
    return make_shop(store)


async def _ticket(chat: FakeChat, shop: Shop) -> int:
    await chat.say("You should open earlier on Sundays")
    await chat.say("yes")
    return (await shop.tickets())[-1].id


async def _notifications(shop: Shop) -> list[Reply]:
    """What the outbox worker would send now (past the grace period), rendered."""
    shop.clock.advance(seconds=30)
    async with shop.store.transaction() as s:
        due = await outbox.claim(s, channels=["telegram"], worker="test", now=shop.clock(),
                                 limit=100, postgres=shop.store.is_postgres)
    return [r for d in due for r in render(d, now=shop.clock())]


async def _resolve(shop: Shop, ticket_id: int) -> None:
    async with shop.store.transaction() as s:
        await move_ticket(s, shop.rules, ticket_id, "in_progress", actor="agent:alice")
        await move_ticket(s, shop.rules, ticket_id, "resolved", actor="agent:alice")


async def test_resolution_asks_for_a_score_and_a_five_is_thanked(shop: Shop) -> None:
    chat = shop.chat()
    ticket_id = await _ticket(chat, shop)
    await _resolve(shop, ticket_id)
    sent = await _notifications(shop)
    progress, resolved = sent[-2], sent[-1]
    assert "in progress" in progress.text and "within" in progress.text
    assert "resolved" in resolved.text
    assert [b.label for b in resolved.buttons[0]] == ["1", "2", "3", "4", "5"]
    answer = await chat.press(resolved.buttons[0][4].data)
    assert "5/5" in answer and "Skip" in answer
    assert "passed your comment" in await chat.say("Lovely, thanks")
    async with shop.store.read() as s:
        survey = (await s.scalars(select(Survey))).one()
    assert survey.score == 5 and survey.comment == "Lovely, thanks"
    [ticket] = await shop.tickets()
    assert ticket.status == "resolved" and ticket.csat == 5
    assert "already rated" in await chat.press(resolved.buttons[0][4].data)


async def test_a_two_reopens_and_a_person_follows_up(shop: Shop) -> None:
    chat = shop.chat()
    ticket_id = await _ticket(chat, shop)
    await _resolve(shop, ticket_id)
    await _notifications(shop)  # the resolution and its survey went out
    answer = await chat.press(f"csat:{ticket_id}:2")
    assert "reopened" in answer and "person" in answer
    # The chat said so already: the reopen sends no second "in progress again" message
    # (what is due now is only the chat's own answer, kept for the worker after a crash).
    later = await _notifications(shop)
    assert [r.text for r in later] == [answer]
    assert "Thanks for your feedback" in await chat.press(chat.button("cskip:"))
    [ticket] = await shop.tickets()
    assert ticket.status == "in_progress" and ticket.csat == 2
    # Pressed again: no second survey, no second reopen.
    assert "already rated" in await chat.press(f"csat:{ticket_id}:2")
    async with shop.store.read() as s:
        assert len((await s.scalars(select(Survey))).all()) == 1


async def test_a_score_after_closure_is_still_recorded_and_digits_work_without_buttons(
    shop: Shop,
) -> None:
    chat = shop.chat(channel="x")
    ticket_id = await _ticket(chat, shop)
    await _resolve(shop, ticket_id)
    async with shop.store.transaction() as s:
        await move_ticket(s, shop.rules, ticket_id, "closed", actor="agent:alice")
    answer = await chat.say("4")  # an X direct message: no keyboard, just the digit
    assert "4/5" in answer
    assert "No problem" in await chat.say("skip")
    [ticket] = await shop.tickets()
    assert ticket.csat == 4 and ticket.status == "closed"


async def test_notifications_in_chinese_with_status_words(shop: Shop) -> None:
    chat = shop.chat(customer="8008")
    await chat.say("建议周末延长营业时间")
    await chat.say("是")
    ticket_id = (await shop.tickets())[-1].id
    await _resolve(shop, ticket_id)
    sent = await _notifications(shop)
    assert "处理中" in sent[-2].text and "天内" in sent[-2].text
    assert "已解决" in sent[-1].text and len(sent[-1].buttons[0]) == 5
    answer = await chat.press(f"csat:{ticket_id}:5")
    assert "5/5" in answer and "跳过" in answer


async def test_an_agent_reply_reaches_the_customer_in_their_words(shop: Shop) -> None:
    chat = shop.chat()
    ticket_id = await _ticket(chat, shop)
    alice = await agent(shop.store)
    async with shop.store.transaction() as s:
        await reply(s, shop.rules, ticket_id, "We'll open at 8 from March.", public=True,
                    agent=alice)
    sent = await _notifications(shop)
    assert "We'll open at 8 from March." in sent[-1].text and f"CL-{ticket_id}" in sent[-1].text


async def test_the_confirmation_renders_the_same_for_the_worker(shop: Shop) -> None:
    chat = shop.chat()
    await chat.say("You should open earlier on Sundays")
    [confirmation] = await chat.send("yes")
    async with shop.store.read() as s:
        row = await s.get(outbox.OutboxMessage, confirmation.ref)
        assert row is not None
    delivery = outbox.Delivery(id=row.id, key=row.key, channel=row.channel, recipient="5001",
                               identity_id=row.identity_id, ticket_id=row.ticket_id,
                               kind=row.kind, payload=row.payload, attempt=1)
    [again] = render(delivery, now=shop.clock())  # the moment the dialogue answered
    assert again.text == confirmation.text and again.ref == confirmation.ref
