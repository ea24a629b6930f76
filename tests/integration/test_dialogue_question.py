"""A question the bot cannot answer itself goes straight to the team as a P4 ticket, in
the customer's language, with one confirmation."""

from __future__ import annotations

import re

import pytest

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
    answer = await chat.say(text)
    number = NUMBER.search(answer)
    assert number, answer
    assert topic in answer
    [ticket] = await shop.tickets()
    assert (ticket.kind, ticket.priority, ticket.category) == ("question", "P4", None)
    assert ticket.description == text
    # One confirmation: the reply the customer saw is the ticket's own confirmation row.
    assert await shop.count(OutboxMessage) == 1
