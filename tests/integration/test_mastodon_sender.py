"""The Mastodon outbox sender: the worker delivers ticket notifications as direct messages and
public replies in threads, through the real Mastodon.py and the fake Mastodon server."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from monitors.mastodon import MastodonApi, make_client
from monitors.mastodon_sender import mastodon_sender
from monitors.types import PUBLIC_REPLY
from storage import outbox
from storage.clock import ManualClock
from storage.db import Store
from storage.dispatch import DispatchPolicy, PermanentFailure, RetryAfter, Sender, dispatch_once
from storage.models import ChannelIdentity, OutboxMessage, SocialPost
from storage.outbox import Delivery
from storage.tickets import move_ticket
from tests.fakes.mastodon_api import TOKEN, FakeMastodon
from tests.integration.helpers import chat_ticket, rules

POLICY = DispatchPolicy(max_attempts=3, backoff_seconds=10)
NUMBER = re.compile(r"CL-\d+")


@pytest.fixture
async def server() -> AsyncIterator[FakeMastodon]:
    fake = FakeMastodon()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def sender(server: FakeMastodon) -> Sender:
    return mastodon_sender(MastodonApi(make_client(server.base_url, TOKEN, timeout=5)))


def delivery(recipient: str | None, kind: str = "chat_reply", **payload: Any) -> Delivery:
    """An outbox row as the worker hands it over (each with its own key, as in the outbox)."""
    return Delivery(
        id=1, key=f"test:{kind}:{uuid.uuid4().hex}", channel="mastodon", recipient=recipient,
        identity_id=None, ticket_id=None, kind=kind, payload=payload, attempt=1,
    )


async def mastodon_customer(store: Store, account: dict[str, Any], clock: ManualClock) -> Any:
    from storage.tickets import identity_for

    async with store.transaction() as session:
        return await identity_for(
            session, channel="mastodon", external_id=account["id"], display_name="Mei",
            language="en", now=clock(),
        )


async def test_ticket_notifications_reach_the_customer_as_direct_messages(
    store: Store, server: FakeMastodon, sender: Sender
) -> None:
    clock = ManualClock()
    r = rules(clock)
    mei = server.account("mei", domain="other.social")
    who = await mastodon_customer(store, mei, clock)
    ticket = await chat_ticket(store, r, who, channel="mastodon")

    assert await dispatch_once(store, {"mastodon": sender}, POLICY, worker="w", clock=clock) == 1
    created = server.sent_to(mei)
    assert len(created) == 1
    assert created[0]["visibility"] == "direct"  # nobody else sees it
    assert server.text_of(created[0]).startswith("@mei@other.social ")
    assert f"CL-{ticket}" in server.text_of(created[0])

    async with store.transaction() as session:
        await move_ticket(session, r, ticket, "resolved", actor="agent:alice")
    await dispatch_once(store, {"mastodon": sender}, POLICY, worker="w", clock=clock)
    resolved = server.text_of(server.sent_to(mei)[-1])
    # No buttons on Mastodon: the 1-5 score is asked for in words the customer can type.
    assert "Reply: 1 / 2 / 3 / 4 / 5" in resolved
    async with store.read() as session:
        assert set((await session.scalars(select(OutboxMessage.status))).all()) == {"sent"}


async def test_a_public_reply_answers_in_the_thread_and_is_recorded(
    store: Store, server: FakeMastodon
) -> None:
    fan = server.account("fan", domain="elsewhere.example")
    mention = server.mention(fan, "Where is my refund?")
    async with store.transaction() as session:
        post = SocialPost(
            platform="mastodon", stream="mentions", external_id=mention["id"],
            author_id=fan["id"], text="Where is my refund?", posted_at=ManualClock()(),
            fetched_at=ManualClock()(), state="flagged", group_size=1,
        )
        session.add(post)
        await session.flush()
        post_id = post.id
    send = mastodon_sender(MastodonApi(make_client(server.base_url, TOKEN, timeout=5)), store)

    await send(delivery(None, PUBLIC_REPLY, post_id=post_id, in_reply_to=mention["id"],
                        text="Sorry! We have sent you a direct message.", platform="mastodon"))

    [status] = server.posted
    assert status["in_reply_to_id"] == mention["id"]
    assert status["visibility"] == "public"
    assert server.text_of(status) == (
        "@fan@elsewhere.example Sorry! We have sent you a direct message."
    )
    async with store.read() as session:
        stored = await session.get(SocialPost, post_id)
    assert stored is not None and stored.reply_external_id == status["id"]


async def test_a_reply_is_never_more_public_than_the_post(
    server: FakeMastodon, sender: Sender
) -> None:
    fan = server.account("fan")
    mention = server.mention(fan, "followers only", visibility="private")
    await sender(delivery(None, PUBLIC_REPLY, in_reply_to=mention["id"], text="Thanks"))
    assert server.posted[0]["visibility"] == "private"


async def test_a_retried_delivery_posts_once(server: FakeMastodon, sender: Sender) -> None:
    mei = server.account("mei")
    d = delivery(mei["id"], text="Your ticket is being looked at")
    await sender(d)
    await sender(d)  # the worker died before recording the first send
    assert len(server.sent_to(mei)) == 1


async def test_a_long_message_becomes_a_thread_within_the_limit(
    server: FakeMastodon, sender: Sender
) -> None:
    mei = server.account("mei")
    text = "\n".join(f"Line {i}: " + "details " * 8 for i in range(20))
    await sender(delivery(mei["id"], text=text))
    parts = server.sent_to(mei)
    assert len(parts) > 1
    assert all(len(server.text_of(p)) <= server.max_characters for p in parts)
    assert [p["in_reply_to_id"] for p in parts[1:]] == [p["id"] for p in parts[:-1]]
    said = " ".join(server.text_of(p).removeprefix("@mei ") for p in parts)
    assert said.split() == text.split()


async def test_replies_thread_onto_the_customers_message_even_when_it_is_gone(
    server: FakeMastodon, sender: Sender
) -> None:
    mei = server.account("mei")
    dm = server.dm(mei, "hello")
    await sender(delivery(mei["id"], text="Hi!", reply_to=dm["id"]))
    assert server.sent_to(mei)[-1]["in_reply_to_id"] == dm["id"]
    server.delete_status(dm)
    await sender(delivery(mei["id"], "chat_reply", text="Still here", reply_to=dm["id"]))
    assert server.text_of(server.sent_to(mei)[-1]).endswith("Still here")


async def test_rate_limit_retries_after_the_reset(server: FakeMastodon, sender: Sender) -> None:
    mei = server.account("mei")
    server.fail("/api/v1/statuses", 429, method="POST", reset_in=90)
    with pytest.raises(RetryAfter) as caught:
        await sender(delivery(mei["id"], text="hi"))
    assert 30 < caught.value.seconds <= 92  # the Date header has whole seconds


async def test_a_revoked_token_is_permanent(server: FakeMastodon, sender: Sender) -> None:
    mei = server.account("mei")
    server.revoke()
    with pytest.raises(PermanentFailure) as caught:
        await sender(delivery(mei["id"], text="hi"))
    assert not caught.value.unreachable  # the customer is fine; our token is not


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retried(
    server: FakeMastodon, sender: Sender, status: int
) -> None:
    mei = server.account("mei")
    server.fail("/api/v1/statuses", status, method="POST")
    with pytest.raises(Exception) as caught:
        await sender(delivery(mei["id"], text="hi"))
    assert not isinstance(caught.value, (PermanentFailure, RetryAfter))
    await sender(delivery(mei["id"], text="hi"))
    assert len(server.sent_to(mei)) == 1


async def test_a_deleted_account_is_marked_unreachable(
    store: Store, server: FakeMastodon, sender: Sender
) -> None:
    clock = ManualClock()
    r = rules(clock)
    gone = server.account("gone")
    who = await mastodon_customer(store, gone, clock)
    await chat_ticket(store, r, who, channel="mastodon")
    server.delete_account(gone)

    await dispatch_once(store, {"mastodon": sender}, POLICY, worker="w", clock=clock)

    async with store.read() as session:
        identity = await session.get(ChannelIdentity, who.id)
        row = (await session.scalars(select(OutboxMessage))).one()
    assert identity is not None and identity.reachable is False
    assert row.status == outbox.DEAD
    assert server.posted == []
