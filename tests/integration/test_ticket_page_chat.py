"""The ticket page of a ticket opened from a chat (SQLite and PostgreSQL): what the customer
wrote during the intake is in its conversation, and a customer without a name is shown by
their channel identity (web chat visitor, Telegram name, @username on X)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage import review
from storage.db import Store
from storage.models import Agent, SocialPost
from tests.desk_helpers import add_agent, desk_client, login
from tests.integration.test_dialogue_support import FakeChat, Shop, joined, make_shop

NUMBER = re.compile(r"CL-\d+")


@pytest.fixture
async def shop(store: Store) -> Shop:
    return make_shop(store)


@pytest.fixture
async def desk(store: Store, shop: Shop) -> AsyncIterator[TestClient]:
    await add_agent(store, "alice")
    client = await desk_client(store, rules=shop.rules)
    await login(client, "alice")
    yield client
    await client.close()


async def _complain(chat: FakeChat, text: str) -> str:
    """A complaint through the real dialogue, to its confirmation (taking the suggested
    category, skipping photos); returns the ticket number."""
    replies = await chat.send(text)
    for _ in range(5):
        offered = [b.data for r in replies for row in r.buttons for b in row]
        found = NUMBER.search(joined(replies))
        if found and not any(d.startswith("confirm:") for d in offered):
            return found.group()
        pick = next((d for p in ("confirm:", "skip:", "cat:") for d in offered
                     if d.startswith(p)), None)
        assert pick, joined(replies)
        replies = await chat.send(button=pick)
    raise AssertionError(joined(chat.transcript))


def _conversation(html: str) -> str:
    return html.split('<ol class="conversation">', 1)[1].split("</ol>", 1)[0]


def _customer(html: str) -> str:
    found = re.search(r'<dd class="text customer">(.*?)</dd>', html, re.S)
    assert found, html
    return found.group(1).strip()


async def test_a_web_chat_ticket_shows_the_intake_and_names_the_visitor(
    shop: Shop, desk: TestClient
) -> None:
    visitor = shop.chat("visitor-1", channel="webchat", name=None)
    await visitor.say("hello")
    first = await _complain(visitor, "My parcel for order 123-4567 never arrived <b>help</b>")
    shop.clock.advance(hours=2)
    # What the visitor adds afterwards goes on the ticket; the next story is a new intake.
    await visitor.say("It was a birthday present")
    await visitor.say("/new")
    second = await _complain(visitor, "The kettle from order 555-0001 leaks water")

    html = await (await desk.get(f"/tickets/{first}")).text()
    conversation = _conversation(html)
    assert "No messages yet" not in conversation
    assert "hello" in conversation
    assert "never arrived &lt;b&gt;help&lt;/b&gt;" in conversation  # escaped like all text
    assert "kettle" not in conversation
    assert "chat before the ticket was opened" in conversation
    assert "[button" not in conversation  # presses mean nothing without the bot's question
    assert "birthday present" in conversation  # on the ticket itself, after the intake
    assert conversation.index("never arrived") < conversation.index("birthday present")
    assert _customer(html) == "web chat visitor"

    html = await (await desk.get(f"/tickets/{second}")).text()
    conversation = _conversation(html)
    assert "kettle" in conversation
    assert "never arrived" not in conversation and "hello" not in conversation
    assert "birthday" not in conversation

    listing = await (await desk.get("/tickets")).text()
    assert listing.count("web chat visitor") == 2


async def test_a_named_telegram_customer_keeps_their_name(shop: Shop, desk: TestClient) -> None:
    chat = shop.chat("7001", channel="telegram", name="Mei Chen")
    number = await _complain(chat, "My parcel for order 123-4567 never arrived")
    html = await (await desk.get(f"/tickets/{number}")).text()
    assert _customer(html) == "Mei Chen"
    assert "never arrived" in _conversation(html)


async def test_a_ticket_from_an_x_post_names_the_author_by_username(
    store: Store, shop: Shop, desk: TestClient
) -> None:
    async with store.transaction() as s:
        post = SocialPost(
            platform="x", stream="mentions", external_id="1801", url="https://x.com/dana_k/1801",
            author_id="9001", author_username="dana_k", author_name=None, author_followers=10,
            text="@shop my kettle sparked", language="en", posted_at=shop.clock(),
            fetched_at=shop.clock(), state="flagged", intent="complaint", priority="P1",
            category="product_safety",
        )
        s.add(post)
    async with store.read() as s:
        alice = await s.scalar(select(Agent).where(Agent.username == "alice"))
    assert alice is not None

    async def open_ticket(session: AsyncSession) -> int:
        assert alice is not None
        return await review.ticket_mention(session, shop.rules, post.id, agent=alice)

    ticket_id = await review.run(store, open_ticket, retry=True)
    html = await (await desk.get(f"/tickets/CL-{ticket_id}")).text()
    assert "@dana_k" in _customer(html)
    assert "No messages yet" in _conversation(html)
