"""The X outbox sender through the outbox worker, against the fake X API: what the customer
gets on X, and what an operator sees in the outbox and on the customer's identity after each
kind of answer. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, update

from monitors.types import PUBLIC_REPLY
from monitors.x import Credentials, XAdapter
from monitors.x_sender import MAX_DM_CHARS, make_x_sender
from storage import outbox
from storage.clock import ManualClock
from storage.db import Store
from storage.dispatch import DispatchPolicy, Sender, dispatch_once
from storage.models import ChannelIdentity, OutboxMessage
from storage.tickets import identity_for
from tests.fakes.x_api import FakeX, User, running_fake

POLICY = DispatchPolicy(max_attempts=5, backoff_seconds=10, batch_size=50, concurrency=5)


@pytest.fixture
async def fake() -> AsyncIterator[FakeX]:
    async with running_fake() as server:
        yield server


@pytest.fixture
async def adapter(fake: FakeX) -> AsyncIterator[XAdapter]:
    c = fake.credentials
    x = XAdapter(Credentials(None, c.consumer_key, c.consumer_secret, c.access_token,
                             c.access_token_secret), api_base=fake.api_base)
    yield x
    await x.close()


class Replied:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    async def __call__(self, post_id: int, reply_id: str) -> None:
        self.calls.append((post_id, reply_id))


async def queue(store: Store, clock: ManualClock, customer: User | None, kind: str,
                payload: dict[str, Any], key: str) -> int:
    async with store.transaction() as session:
        identity_id = None
        if customer is not None:
            identity = await identity_for(
                session, channel="x", external_id=customer.id, display_name=customer.name,
                language="en", now=clock.now)
            identity_id = identity.id
        row = outbox.enqueue(session, key=key, channel="x", identity_id=identity_id,
                             ticket_id=None, kind=kind, payload=payload, now=clock.now)
        await session.flush()
        return row.id


async def row(store: Store, row_id: int) -> OutboxMessage:
    async with store.read() as s:
        found = await s.get(OutboxMessage, row_id)
        assert found is not None
        return found


async def reachable(store: Store, customer: User) -> bool:
    async with store.read() as s:
        ident = (await s.scalars(select(ChannelIdentity).where(
            ChannelIdentity.channel == "x", ChannelIdentity.external_id == customer.id))).one()
        return ident.reachable


async def deliver(store: Store, sender: Sender, clock: ManualClock) -> int:
    return await dispatch_once(store, {"x": sender}, POLICY, worker="w", clock=clock)


async def test_a_ticket_notification_reaches_the_customer_by_dm_once(
        fake: FakeX, store: Store, adapter: XAdapter) -> None:
    clock = ManualClock()
    nora = fake.add_user("nora")
    rid = await queue(store, clock, nora, "status_changed", {
        "number": "CL-42", "status": "in_progress", "from": "new", "language": "en",
    }, "s1")
    sender = make_x_sender(adapter)
    assert await deliver(store, sender, clock) == 1
    assert await deliver(store, sender, clock) == 0
    [dm] = fake.sent_dms(nora)
    assert "CL-42" in dm.text
    assert (await row(store, rid)).status == outbox.SENT


async def test_choices_are_written_out_in_a_dm(
        fake: FakeX, store: Store, adapter: XAdapter) -> None:
    clock = ManualClock()
    olga = fake.add_user("olga")
    await queue(store, clock, olga, "chat_reply", {
        "text": "How did we do?", "language": "en",
        "buttons": [[{"label": str(n), "data": f"csat:{n}"} for n in range(1, 6)]],
    }, "c1")
    await deliver(store, make_x_sender(adapter), clock)
    [dm] = fake.sent_dms(olga)
    assert dm.text.startswith("How did we do?") and "1 / 2 / 3 / 4 / 5" in dm.text


async def test_a_public_reply_goes_into_the_thread(
        fake: FakeX, store: Store, adapter: XAdapter) -> None:
    clock = ManualClock()
    paul = fake.add_user("paul")
    mention = fake.mention(paul, "my order is late")
    replied = Replied()
    rid = await queue(store, clock, None, PUBLIC_REPLY, {
        "post_id": 7, "in_reply_to": mention.id, "text": "@paul sorry! Check your DMs.",
        "platform": "x",
    }, "p1")
    await deliver(store, make_x_sender(adapter, on_replied=replied), clock)
    [reply] = fake.sent_tweets()
    assert reply.replied_to == mention.id and reply.text == "@paul sorry! Check your DMs."
    assert replied.calls == [(7, reply.id)]
    assert (await row(store, rid)).status == outbox.SENT
    # The worker died after X took the reply, before recording it: the row is claimed again
    # (its second attempt), X refuses the duplicate, and the row counts as sent.
    async with store.transaction() as session:
        await session.execute(update(OutboxMessage).where(OutboxMessage.id == rid).values(
            status=outbox.PENDING, sent_at=None))
    await deliver(store, make_x_sender(adapter), clock)
    assert (await row(store, rid)).status == outbox.SENT and len(fake.sent_tweets()) == 1
    # The same text for another post, first attempt: X refuses it and nothing was posted.
    # It must not count as sent (the desk would show a reply nobody can see).
    other = fake.mention(fake.add_user("rita"), "my order is late too")
    rid2 = await queue(store, clock, None, PUBLIC_REPLY, {
        "post_id": 8, "in_reply_to": other.id, "text": "@paul sorry! Check your DMs.",
        "platform": "x",
    }, "p2")
    await deliver(store, make_x_sender(adapter), clock)
    failed = await row(store, rid2)
    assert failed.status != outbox.SENT and "duplicate" in (failed.last_error or "")
    assert len(fake.sent_tweets()) == 1


async def test_429_retries_at_the_reset_and_sends_nothing_before(
        fake: FakeX, store: Store, adapter: XAdapter) -> None:
    clock = ManualClock()
    quinn = fake.add_user("quinn")
    rid = await queue(store, clock, quinn, "chat_reply", {"text": "hello", "language": "en"},
                      "r1")
    fake.fail("dm_send", 429, reset_in=300)
    sender = make_x_sender(adapter)
    await deliver(store, sender, clock)
    retry = await row(store, rid)
    assert retry.status == outbox.PENDING and fake.sent_dms(quinn) == []
    due = retry.next_attempt_at
    due = due if due.tzinfo else due.replace(tzinfo=UTC)
    assert 295 <= (due - clock.now).total_seconds() <= 302
    # The worker comes back early (another row became due): no request goes to X.
    calls = len(fake.requests_to("dm_send"))
    await queue(store, clock, quinn, "chat_reply", {"text": "second", "language": "en"}, "r2")
    await deliver(store, sender, clock)
    assert len(fake.requests_to("dm_send")) == calls


async def test_a_customer_who_does_not_accept_dms_is_marked_unreachable(
        fake: FakeX, store: Store, adapter: XAdapter) -> None:
    clock = ManualClock()
    rosa = fake.add_user("rosa")
    fake.refuse_dms(rosa)
    rid = await queue(store, clock, rosa, "chat_reply", {"text": "hi", "language": "en"}, "u1")
    await deliver(store, make_x_sender(adapter), clock)
    assert (await row(store, rid)).status == outbox.DEAD
    assert not await reachable(store, rosa)


async def test_a_revoked_token_is_a_permanent_failure_not_an_unreachable_customer(
        fake: FakeX, store: Store, adapter: XAdapter) -> None:
    clock = ManualClock()
    sam = fake.add_user("sam")
    fake.revoke()
    rid = await queue(store, clock, sam, "chat_reply", {"text": "hi", "language": "en"}, "v1")
    await deliver(store, make_x_sender(adapter), clock)
    dead = await row(store, rid)
    assert dead.status == outbox.DEAD and "401" in (dead.last_error or "")
    assert await reachable(store, sam)


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_back_off_and_deliver_later(
        fake: FakeX, store: Store, adapter: XAdapter, status: int) -> None:
    clock = ManualClock(datetime.now(UTC))
    tom = fake.add_user("tom")
    rid = await queue(store, clock, tom, "chat_reply", {"text": "hi", "language": "en"}, "b1")
    fake.fail("dm_send", status)
    sender = make_x_sender(adapter)
    await deliver(store, sender, clock)
    assert (await row(store, rid)).status == outbox.PENDING and fake.sent_dms(tom) == []
    clock.advance(minutes=1)
    await deliver(store, sender, clock)
    assert (await row(store, rid)).status == outbox.SENT and len(fake.sent_dms(tom)) == 1


async def test_a_long_dm_cut_short_by_a_server_error_resumes_after_the_parts_x_has(
        fake: FakeX, store: Store, adapter: XAdapter) -> None:
    # Three DMs' worth of text; X takes the first and fails the second. X's DM endpoint has
    # no idempotency key: only the row's record of parts sent keeps the first from repeating.
    clock = ManualClock(datetime.now(UTC))
    ada = fake.add_user("ada")
    text = " ".join(f"word{n}" for n in range(4000))
    assert len(text) > 2 * MAX_DM_CHARS
    rid = await queue(store, clock, ada, "chat_reply", {"text": text, "language": "en"}, "l1")
    fake.fail("dm_send", 503, after=1)
    sender = make_x_sender(adapter)
    await deliver(store, sender, clock)
    cut = await row(store, rid)
    assert cut.status == outbox.PENDING and cut.parts_sent == 1
    clock.advance(minutes=1)
    await deliver(store, sender, clock)
    assert "".join(dm.text for dm in fake.sent_dms(ada)) == text  # each part once, in order
    assert (await row(store, rid)).status == outbox.SENT
