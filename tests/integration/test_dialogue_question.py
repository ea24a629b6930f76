"""A question the bot cannot answer itself goes to the team as a P4 ticket, in the customer's
language: nothing is asked, the summary comes at once, and confirming it gives the number."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from storage.db import Store
from storage.models import OutboxMessage
from tests.integration.test_dialogue_support import Shop, make_shop

NUMBER = re.compile(r"CL-\d+")


@pytest.fixture
def shop(store: Store) -> Shop:
    return make_shop(store)


@pytest.mark.parametrize(
    ("text", "hint", "topic"),
    [
        ("How do I change the delivery address on my order?", "en", "question"),
        ("你们的发票怎么开？我需要公司抬头的发票", "zh", "咨询"),
    ],
)
async def test_a_question_becomes_a_question_ticket_for_the_team(
    shop: Shop, text: str, hint: str, topic: str
) -> None:
    chat = shop.chat(hint=hint)
    summary = await chat.say(text)
    assert topic in summary and text in summary and not NUMBER.search(summary)
    assert await shop.tickets() == []  # nothing is created before the customer confirms
    answer = await chat.press(chat.button("confirm:"))
    number = NUMBER.search(answer)
    assert number, answer
    assert topic in answer
    [ticket] = await shop.tickets()
    assert (ticket.kind, ticket.priority, ticket.category) == ("question", "P4", None)
    assert ticket.description == text
    async with shop.store.read() as session:
        kinds = list((await session.scalars(select(OutboxMessage.kind))).all())
    assert kinds.count("ticket_created") == 1  # one confirmation
