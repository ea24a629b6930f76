"""Direct messages through the chat dialogue: a whole Mastodon conversation over the fake server
(adapter → store → dialogue → outbox → sender), crash safety, and X direct messages."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.channel import Button, Inbound, Reply
from bot.dialogue import make_dialogue
from monitors.direct import direct_text, handle_direct_messages, inbound_of, pending_direct_messages
from monitors.mastodon import MastodonAdapter, MastodonApi, make_client
from monitors.mastodon_sender import mastodon_sender
from monitors.types import DIRECT, Post
from storage.clock import ManualClock
from storage.db import Store
from storage.dispatch import DispatchPolicy, dispatch_once
from storage.mentions import Grouping, NewMention, ingest
from storage.models import OutboxMessage, SocialPost, Ticket
from storage.sla import SlaPolicy
from storage.tickets import TicketRules
from tests.fakes.mastodon_api import TOKEN, FakeMastodon
from tests.integration.test_dialogue_support import shared_interpreter

NUMBER = re.compile(r"CL-\d+")
POLICY = DispatchPolicy(max_attempts=3, backoff_seconds=10)


@pytest.fixture
async def server() -> AsyncIterator[FakeMastodon]:
    fake = FakeMastodon()
    await fake.start()
    yield fake
    await fake.stop()


async def store_posts(store: Store, posts: Sequence[Post], clock: ManualClock) -> None:
    """What the monitors core does with a page of direct messages: stored as `new`."""
    async with store.transaction() as session:
        await ingest(session, [
            NewMention(
                platform=p.platform, stream=p.stream, external_id=p.external_id, text=p.text,
                posted_at=p.posted_at, state="new", url=p.url, author_id=p.author.id,
                author_username=p.author.username, author_name=p.author.name,
                author_followers=p.author.followers, raw=p.raw,
            )
            for p in posts
        ], cursor=None, grouping=Grouping(), now=clock())


class MastodonCustomer:
    """A customer writing to the shop by Mastodon direct message, and the whole loop behind it:
    the monitor reads, the bot answers, the worker delivers."""

    def __init__(self, store: Store, server: FakeMastodon, clock: ManualClock) -> None:
        self.store, self.server, self.clock = store, server, clock
        self.account = server.account("mei", domain="other.social", display_name="Mei")
        rules = TicketRules(sla=SlaPolicy(), clock=clock)
        self.dialogue = make_dialogue(store, rules, shared_interpreter())
        api = MastodonApi(make_client(server.base_url, TOKEN, timeout=5))
        self.adapter = MastodonAdapter(api)
        self.send = mastodon_sender(api)
        self.cursor: str | None = None
        self.dms: list[dict[str, Any]] = []

    async def write(self, text: str) -> None:
        ours = self.server.sent_to(self.account)
        self.dms.append(self.server.dm(
            self.account, text, in_reply_to=ours[-1]["id"] if ours else None
        ))
        page = await self.adapter.read(DIRECT, self.cursor)
        self.cursor = page.cursor
        await store_posts(self.store, page.posts, self.clock)

    async def say(self, text: str) -> str:
        before = len(self.server.sent_to(self.account))
        await self.write(text)
        await handle_direct_messages(self.store, self.dialogue, clock=self.clock)
        await dispatch_once(self.store, {"mastodon": self.send}, POLICY, worker="w",
                            clock=self.clock)
        return "\n".join(
            self.server.text_of(s) for s in self.server.sent_to(self.account)[before:]
        )


async def post_states(store: Store) -> list[tuple[str, int | None, str | None]]:
    async with store.read() as session:
        rows = await session.execute(
            select(SocialPost.state, SocialPost.ticket_id, SocialPost.handled_by)
            .order_by(SocialPost.id)
        )
        return [tuple(r) for r in rows.all()]  # type: ignore[misc]


async def test_a_mastodon_complaint_by_direct_message_ends_with_the_ticket_number(
    store: Store, server: FakeMastodon
) -> None:
    mei = MastodonCustomer(store, server, ManualClock(datetime.now(UTC)))

    first = await mei.say("My parcel for order 123-4567 never arrived")
    assert "photo" in first.lower() and "Reply: skip" in first  # no button to press
    summary = await mei.say("skip")
    assert "123-4567" in summary and "Reply: yes" in summary
    confirmation = await mei.say("yes")

    number = NUMBER.search(confirmation)
    assert number, confirmation
    async with store.read() as session:
        ticket = (await session.scalars(select(Ticket))).one()
    assert f"CL-{ticket.id}" == number.group(0)
    assert ticket.channel == "mastodon" and ticket.category == "delivery"
    # Every answer was a direct message in the customer's thread, addressed to them alone.
    ours = server.sent_to(mei.account)
    assert {s["visibility"] for s in ours} == {"direct"}
    assert all(server.text_of(s).startswith("@mei@other.social ") for s in ours)
    assert ours[-1]["in_reply_to_id"] == mei.dms[-1]["id"]
    assert await post_states(store) == [
        ("ignored", None, "bot"), ("ignored", None, "bot"), ("ticketed", ticket.id, "bot"),
    ]
    # What the customer writes next goes on the ticket.
    more = await mei.say("The courier said it was delivered to a neighbour")
    assert f"CL-{ticket.id}" in more
    assert (await post_states(store))[-1] == ("ticketed", ticket.id, "bot")


async def test_a_chinese_conversation_confirms_with_shi(
    store: Store, server: FakeMastodon
) -> None:
    mei = MastodonCustomer(store, server, ManualClock(datetime.now(UTC)))
    first = await mei.say("我的包裹一直没有送到，订单号123-4567")
    assert "回复：跳过" in first
    summary = await mei.say("跳过")
    assert "回复：是" in summary
    confirmation = await mei.say("是")
    assert NUMBER.search(confirmation), confirmation


async def test_a_crash_after_the_dialogue_neither_loses_nor_doubles_a_reply(
    store: Store, server: FakeMastodon
) -> None:
    clock = ManualClock(datetime.now(UTC))
    mei = MastodonCustomer(store, server, clock)
    await mei.say("My parcel for order 123-4567 never arrived")
    await mei.say("skip")
    await mei.write("yes")
    # The process answered the "yes" and died before marking the post.
    [pending] = await pending_direct_messages(store, limit=10)
    inbound = inbound_of(pending)
    assert inbound is not None
    await mei.dialogue(inbound)
    async with store.read() as session:
        rows_before = await session.scalar(select(func.count(OutboxMessage.id)))

    # On restart the post is handled again: nothing new is said, the post is marked.
    assert await handle_direct_messages(store, mei.dialogue, clock=clock) == 1
    assert await handle_direct_messages(store, mei.dialogue, clock=clock) == 0
    async with store.read() as session:
        assert await session.scalar(select(func.count(OutboxMessage.id))) == rows_before
        ticket_id = await session.scalar(select(Ticket.id))
    assert (await post_states(store))[-1] == ("ticketed", ticket_id, "bot")

    # The worker delivers what the crash left (after the dialogue's grace), exactly once.
    clock.advance(minutes=1)
    before = len(server.sent_to(mei.account))
    await dispatch_once(store, {"mastodon": mei.send}, POLICY, worker="w", clock=clock)
    await dispatch_once(store, {"mastodon": mei.send}, POLICY, worker="w", clock=clock)
    sent = [server.text_of(s) for s in server.sent_to(mei.account)[before:]]
    assert len(sent) == 1 and f"CL-{ticket_id}" in sent[0]


async def test_a_failing_dialogue_keeps_the_customers_messages_for_later(
    store: Store, server: FakeMastodon
) -> None:
    clock = ManualClock(datetime.now(UTC))
    mei = MastodonCustomer(store, server, clock)
    await mei.write("hello")
    await mei.write("do you deliver on Sundays?")

    async def broken(inbound: Inbound) -> list[Reply]:
        raise RuntimeError("database went away")

    assert await handle_direct_messages(store, broken, clock=clock) == 0
    assert [s for s, _, _ in await post_states(store)] == ["new", "new"]
    assert await handle_direct_messages(store, mei.dialogue, clock=clock) == 2
    await mei.write("yes")  # confirms the summary of the question
    assert await handle_direct_messages(store, mei.dialogue, clock=clock) == 1
    assert [(s, by) for s, _, by in await post_states(store)] == [
        ("ignored", "bot"), ("ignored", "bot"), ("ticketed", "bot"),  # a question ticket
    ]


async def test_x_direct_messages_run_the_same_dialogue(store: Store) -> None:
    clock = ManualClock(datetime.now(UTC))
    dialogue = make_dialogue(store, TicketRules(sla=SlaPolicy(), clock=clock),
                             shared_interpreter())
    for n, text in enumerate(["My parcel for order 123-4567 never arrived", "skip", "yes"]):
        async with store.transaction() as session:
            await ingest(session, [NewMention(
                platform="x", stream="dms", external_id=f"dm-{n}", text=text,
                posted_at=clock(), state="new", author_id="4242", author_username="mei",
            )], cursor=None, grouping=Grouping(), now=clock())
        await handle_direct_messages(store, dialogue, clock=clock)
    async with store.read() as session:
        ticket = (await session.scalars(select(Ticket))).one()
        rows = (await session.scalars(
            select(OutboxMessage).where(OutboxMessage.ticket_id == ticket.id)
        )).all()
    assert ticket.channel == "x"
    assert [r.channel for r in rows] == ["x"]
    assert rows[0].payload["reply_to"] == "dm-2"  # due now, for the X sender to deliver


def test_buttons_become_words_to_reply_with() -> None:
    reply = Reply(text="Shall I create it?", buttons=(
        (Button("✅ Confirm", "confirm:3"), Button("✏️ Edit", "edit:3")),
    ))
    assert direct_text(reply, "en") == "Shall I create it?\n\nReply: yes / no"
    menu = Reply(text="Hi", buttons=(
        (Button("Report a problem", "menu:complaint"),),
        (Button("Suggest", "menu:suggestion"), Button("Praise", "menu:praise")),
        (Button("My tickets", "menu:status"), Button("Person", "menu:human")),
    ))
    assert direct_text(menu, "zh").endswith("回复：/new / /status / /human")
    assert direct_text(Reply(text="plain"), "en") == "plain"


async def test_the_poll_loop_reads_stores_and_answers_mastodon_direct_messages(
    store: Store, server: FakeMastodon
) -> None:
    import random

    from monitors.direct import direct_messages_hook
    from monitors.poll import Monitor, PollPolicy
    from monitors.triage import Triage, TriageRules

    clock = ManualClock(datetime.now(UTC))
    mei = MastodonCustomer(store, server, clock)
    fan = server.account("fan", followers=50_000)
    server.mention(fan, "Your checkout page keeps crashing, I was charged twice!")
    dm = server.dm(mei.account, "My parcel for order 123-4567 never arrived")
    monitor = Monitor(
        store=store, adapter=mei.adapter, triage=Triage(shared_interpreter(), TriageRules()),
        grouping=Grouping(), policy=PollPolicy(), owner="proc-a", clock=clock,
        rng=random.Random(7),
        on_direct_messages=direct_messages_hook(store, mei.dialogue, clock=clock),
    )

    await monitor.poll_all()
    await dispatch_once(store, {"mastodon": mei.send}, POLICY, worker="w", clock=clock)

    async with store.read() as session:
        posts = {p.stream: p for p in (await session.scalars(select(SocialPost))).all()}
    assert posts["mentions"].state == "flagged" and posts["mentions"].author_followers == 50_000
    assert posts["dms"].state == "ignored" and posts["dms"].handled_by == "bot"
    [answer] = server.sent_to(mei.account)
    assert answer["in_reply_to_id"] == dm["id"] and "Reply: skip" in server.text_of(answer)
