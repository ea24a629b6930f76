"""The review queue in the store: order, filters, paging, groups, and each action (SQLite and
PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import count
from typing import Any

import pytest
from sqlalchemy import func, select

from storage import review
from storage.clock import ManualClock
from storage.db import Store
from storage.errors import Conflict, IllegalMove, Invalid, NotFound, StoreError
from storage.models import Agent, OutboxMessage, SocialPost, Ticket, TicketEvent
from storage.review import MentionFilter
from storage.tickets import TicketRules
from tests.integration.helpers import agent as make_agent
from tests.integration.helpers import rules as make_rules

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
_ids = count(1)


async def add_post(store: Store, **kw: Any) -> int:
    n = next(_ids)
    fields: dict[str, Any] = {
        "platform": "x",
        "stream": "mentions",
        "external_id": f"17{n:08d}",
        "url": f"https://x.com/someone/status/17{n:08d}",
        "author_id": f"90{n}",
        "author_username": f"user{n}",
        "author_name": f"User {n}",
        "author_followers": 10,
        "text": f"@shop my order never came ({n})",
        "language": "en",
        "posted_at": T0 + timedelta(minutes=n),
        "fetched_at": T0 + timedelta(minutes=n, seconds=5),
        "state": "flagged",
        "intent": "complaint",
        "priority": "P3",
        "category": "delivery",
        "sentiment_label": "negative",
        "sentiment_score": -0.6,
    } | kw
    async with store.transaction() as session:
        post = SocialPost(**fields)
        session.add(post)
        await session.flush()
        return post.id


async def queue(store: Store, limit: int = 50, **kw: Any) -> list[int]:
    async with store.read() as session:
        rows, _ = await review.list_mentions(session, MentionFilter(**kw), limit=limit, cursor=None)
    return [r.post.id for r in rows]


async def post_of(store: Store, post_id: int) -> SocialPost:
    async with store.read() as session:
        got = await session.get(SocialPost, post_id)
        assert got is not None
        return got


@pytest.fixture
def rules() -> TicketRules:
    return make_rules(ManualClock(T0 + timedelta(hours=1)))


@pytest.fixture
async def alice(store: Store) -> Agent:
    return await make_agent(store, "alice")


async def test_flagged_first_then_priority_reach_and_newest(store: Store) -> None:
    new_p1 = await add_post(store, state="new", priority="P1", author_followers=10**6)
    p3_small = await add_post(store, priority="P3", author_followers=5)
    p1_small = await add_post(store, priority="P1", author_followers=5)
    p3_big = await add_post(store, priority="P3", author_followers=50_000)
    p3_small_newer = await add_post(store, priority="P3", author_followers=5)
    p3_unknown = await add_post(store, priority="P3", author_followers=None)
    p2 = await add_post(store, priority="P2", author_followers=1)
    ignored = await add_post(store, state="ignored", priority="P4", intent="praise")
    no_priority = await add_post(store, priority=None)
    assert await queue(store) == [
        p1_small, p2, p3_big, p3_small_newer, p3_small, p3_unknown, no_priority,
        new_p1, ignored,
    ]
    assert await queue(store, states=["flagged"]) == [
        p1_small, p2, p3_big, p3_small_newer, p3_small, p3_unknown, no_priority,
    ]


async def test_a_group_is_one_item_with_its_count_and_dms_are_not_review_items(
    store: Store,
) -> None:
    leader = await add_post(store, group_size=3)
    members = [await add_post(store, group_id=leader) for _ in range(2)]
    await add_post(store, stream="dms", priority="P1")
    assert await queue(store) == [leader]
    async with store.read() as session:
        rows, _ = await review.list_mentions(session, MentionFilter(), limit=10, cursor=None)
        detail = await review.mention_detail(session, leader)
    assert rows[0].post.group_size == 3
    assert [m.id for m in detail.members] == members


async def test_filters(store: Store) -> None:
    x_en = await add_post(store, platform="x", language="en", category="delivery")
    masto_zh = await add_post(
        store, platform="mastodon", language="zh", category="billing", priority="P2",
        text="我被多收了钱", posted_at=T0 + timedelta(days=2),
    )
    praise = await add_post(store, state="ignored", intent="praise", priority="P4",
                            category=None)
    assert await queue(store, platforms=["mastodon"]) == [masto_zh]
    assert await queue(store, languages=["en"]) == [x_en, praise]
    assert await queue(store, categories=["delivery"]) == [x_en]
    assert await queue(store, priorities=["P4"]) == [praise]
    assert await queue(store, states=["ignored"]) == [praise]
    assert await queue(store, since=T0 + timedelta(days=1)) == [masto_zh]
    assert await queue(store, until=T0 + timedelta(days=1)) == [x_en, praise]


async def test_keyset_pages_cover_the_queue_once_in_order(store: Store) -> None:
    for i in range(23):
        await add_post(
            store,
            state=("flagged", "new", "dismissed")[i % 3],
            priority=("P1", "P2", "P3", None)[i % 4],
            author_followers=(None, 7, 7, 1000)[i % 4] if i % 5 else 7,
        )
    everything = await queue(store, limit=100)
    assert len(everything) == 23
    seen: list[int] = []
    cursor = None
    async with store.read() as session:
        while True:
            rows, cursor = await review.list_mentions(
                session, MentionFilter(), limit=4, cursor=cursor
            )
            seen += [r.post.id for r in rows]
            if cursor is None:
                break
    assert seen == everything


async def test_a_bad_cursor_is_refused(store: Store) -> None:
    async with store.read() as session:
        with pytest.raises(Invalid):
            await review.list_mentions(session, MentionFilter(), limit=5, cursor="garbage")


async def test_ticket_opens_one_ticket_for_the_group(
    store: Store, rules: TicketRules, alice: Agent
) -> None:
    leader = await add_post(store, priority="P2", category="delivery", group_size=2,
                            author_id="4242", author_username="mei")
    member = await add_post(store, group_id=leader)
    async with store.transaction() as session:
        ticket_id = await review.ticket_mention(session, rules, leader, agent=alice)
    async with store.read() as session:
        ticket = await session.get(Ticket, ticket_id)
        assert ticket is not None
        assert (ticket.channel, ticket.kind, ticket.priority, ticket.category) == (
            "x", "complaint", "P2", "delivery"
        )
        assert ticket.description.startswith("@shop my order never came")
        events = (await session.scalars(
            select(TicketEvent).where(TicketEvent.ticket_id == ticket_id)
        )).all()
        source = [e for e in events if e.type == "source"]
        assert source and source[0].data and source[0].data["post_id"] == leader
    for post_id in (leader, member):
        post = await post_of(store, post_id)
        assert (post.state, post.ticket_id, post.handled_by) == (
            "ticketed", ticket_id, "agent:alice"
        )
        assert post.handled_at is not None
    # The same author again is the same customer.
    other = await add_post(store, author_id="4242", author_username="mei")
    async with store.transaction() as session:
        second = await review.ticket_mention(session, rules, other, agent=alice)
    async with store.read() as session:
        a, b = await session.get(Ticket, ticket_id), await session.get(Ticket, second)
        assert a and b and a.customer_id == b.customer_id and a.id != b.id


async def test_praise_becomes_a_praise_ticket_without_category(
    store: Store, rules: TicketRules, alice: Agent
) -> None:
    post = await add_post(store, state="ignored", intent="praise", priority="P4",
                          category="other")
    async with store.transaction() as session:
        ticket_id = await review.ticket_mention(session, rules, post, agent=alice)
    async with store.read() as session:
        ticket = await session.get(Ticket, ticket_id)
        assert ticket and (ticket.kind, ticket.category, ticket.priority) == (
            "praise", None, "P4"
        )


async def test_dismiss_and_illegal_moves(store: Store, rules: TicketRules, alice: Agent) -> None:
    post = await add_post(store)
    async with store.transaction() as session:
        await review.dismiss_mention(session, rules, post, agent=alice)
    assert (await post_of(store, post)).state == "dismissed"
    with pytest.raises(IllegalMove):
        async with store.transaction() as session:
            await review.dismiss_mention(session, rules, post, agent=alice)
    # Changing one's mind: a dismissed mention can still become a ticket; then nothing undoes it.
    async with store.transaction() as session:
        await review.ticket_mention(session, rules, post, agent=alice)
    for act in (review.dismiss_mention, review.ticket_mention):
        with pytest.raises(IllegalMove) as err:
            async with store.transaction() as session:
                await act(session, rules, post, agent=alice)
        assert err.value.status == 409
    with pytest.raises(NotFound):
        async with store.transaction() as session:
            await review.dismiss_mention(session, rules, 999_999, agent=alice)


async def _outbox(store: Store) -> list[OutboxMessage]:
    async with store.read() as session:
        return list((await session.scalars(select(OutboxMessage))).all())


async def test_reply_writes_exactly_one_outbox_row(
    store: Store, rules: TicketRules, alice: Agent
) -> None:
    post = await add_post(store, external_id="1800000000000000001")
    assert await _outbox(store) == []  # nothing goes out before a person sends
    async with store.transaction() as session:
        await review.reply_mention(
            session, rules, post, "  @user Sorry! Please DM us your order number.  ", agent=alice
        )
    with pytest.raises(IllegalMove):
        async with store.transaction() as session:
            await review.reply_mention(session, rules, post, "again", agent=alice)
    rows = await _outbox(store)
    assert len(rows) == 1
    row = rows[0]
    assert (row.key, row.channel, row.kind, row.status) == (
        f"reply:{post}", "x", "public_reply", "pending"
    )
    assert row.payload == {
        "post_id": post, "in_reply_to": "1800000000000000001",
        "text": "@user Sorry! Please DM us your order number.", "platform": "x",
    }
    got = await post_of(store, post)
    assert (got.state, got.reply_text, got.handled_by) == (
        "replied", "@user Sorry! Please DM us your order number.", "agent:alice"
    )


async def test_a_reply_to_the_leader_leaves_its_members_and_one_member_can_be_answered(
    store: Store, rules: TicketRules, alice: Agent
) -> None:
    leader = await add_post(store, group_size=3, external_id="1800000000000000010")
    members = [await add_post(store, group_id=leader, external_id=f"18000000000000000{n}")
               for n in (11, 12)]
    async with store.transaction() as session:
        await review.reply_mention(session, rules, leader, "@all We are on it.", agent=alice)
    # One reply in the thread, not one per copy (X forbids automated replies reaching many users).
    assert [(r.key, r.payload["in_reply_to"]) for r in await _outbox(store)] == [
        (f"reply:{leader}", "1800000000000000010")]
    assert [(await post_of(store, m)).state for m in members] == ["flagged", "flagged"]
    async with store.transaction() as session:
        await review.reply_mention(session, rules, members[1], "@u Sorry, DM us.", agent=alice)
    rows = sorted(await _outbox(store), key=lambda r: r.id)
    assert [(r.key, r.payload["in_reply_to"]) for r in rows][1:] == [
        (f"reply:{members[1]}", "1800000000000000012")]
    assert (await post_of(store, members[1])).state == "replied"


async def test_the_auto_ticket_rule_tickets_urgent_mentions_nobody_decided_on_once(
    store: Store, rules: TicketRules, alice: Agent
) -> None:
    urgent = await add_post(store, priority="P1", category="product_safety", group_size=2,
                            text="@shop your baby formula made my son sick")
    copy = await add_post(store, priority="P1", group_id=urgent)
    ordinary = await add_post(store, priority="P3")
    dismissed = await add_post(store, priority="P1", state="dismissed")
    imported = await add_post(store, priority="P1", platform="import")
    old = await add_post(store, priority="P1",
                         fetched_at=rules.clock() - timedelta(days=2))
    decided = await add_post(store, priority="P1")
    async with store.transaction() as session:  # a person was first
        await review.ticket_mention(session, rules, decided, agent=alice)

    opened = await review.auto_ticket(store, rules, ["P1"])
    assert await review.auto_ticket(store, rules, ["P1"]) == []  # once

    assert len(opened) == 1
    async with store.read() as session:
        ticket = await session.get(Ticket, opened[0])
        assert ticket is not None
        source = (await session.scalars(select(TicketEvent).where(
            TicketEvent.ticket_id == ticket.id, TicketEvent.type == "source"))).one()
    assert (ticket.priority, ticket.category, ticket.channel) == ("P1", "product_safety", "x")
    assert source.actor == "rule:auto_ticket"
    for post_id in (urgent, copy):
        got = await post_of(store, post_id)
        assert (got.state, got.ticket_id, got.handled_by) == (
            "ticketed", ticket.id, "rule:auto_ticket")
    for post_id, state in ((ordinary, "flagged"), (dismissed, "dismissed"),
                           (imported, "flagged"), (old, "flagged")):
        assert (await post_of(store, post_id)).state == state
    assert (await post_of(store, decided)).handled_by == "agent:alice"
    assert await review.auto_ticket(store, rules, []) == []  # the rule off


async def test_reply_checks_text_and_platform(
    store: Store, rules: TicketRules, alice: Agent
) -> None:
    x_post = await add_post(store)
    imported = await add_post(store, platform="import", stream="import")
    ticketed = await add_post(store)
    for post_id, text in ((x_post, "  "), (x_post, "a" * 281), (x_post, "好" * 141),
                          (imported, "hello")):
        with pytest.raises(Invalid):
            async with store.transaction() as session:
                await review.reply_mention(session, rules, post_id, text, agent=alice)
    async with store.transaction() as session:
        await review.reply_mention(session, rules, x_post, "好" * 140, agent=alice)
    # A ticketed mention can still be answered in public, and stays ticketed.
    async with store.transaction() as session:
        await review.ticket_mention(session, rules, ticketed, agent=alice)
    async with store.transaction() as session:
        await review.reply_mention(session, rules, ticketed, "We opened a ticket", agent=alice)
    got = await post_of(store, ticketed)
    assert (got.state, got.reply_text) == ("ticketed", "We opened a ticket")
    assert len(await _outbox(store)) >= 2


async def test_assign(store: Store, rules: TicketRules, alice: Agent) -> None:
    bob = await make_agent(store, "bob")
    post = await add_post(store)
    async with store.transaction() as session:
        await review.assign_mention(session, rules, post, "bob", agent=alice)
    got = await post_of(store, post)
    assert (got.assignee_id, got.state) == (bob.id, "flagged")
    assert await queue(store, assignee_id=bob.id) == [post]
    with pytest.raises(Invalid):
        async with store.transaction() as session:
            await review.assign_mention(session, rules, post, "nobody", agent=alice)
    async with store.transaction() as session:
        await review.assign_mention(session, rules, post, None, agent=alice)
    assert (await post_of(store, post)).assignee_id is None


async def test_a_stale_version_is_a_conflict(
    store: Store, rules: TicketRules, alice: Agent
) -> None:
    post = await add_post(store)
    seen = (await post_of(store, post)).version
    async with store.transaction() as session:
        await review.assign_mention(session, rules, post, "alice", agent=alice)
    with pytest.raises(Conflict):
        async with store.transaction() as session:
            await review.dismiss_mention(session, rules, post, agent=alice,
                                         expected_version=seen)
    assert (await post_of(store, post)).state == "flagged"


async def test_concurrent_actions_on_one_post_lose_no_change(
    store: Store, rules: TicketRules, alice: Agent
) -> None:
    bob = await make_agent(store, "bob")
    for _ in range(3):
        post = await add_post(store)
        outcomes = await asyncio.gather(
            review.run(store, partial(review.ticket_mention, rules=rules, post_id=post,
                                      agent=alice)),
            review.run(store, partial(review.ticket_mention, rules=rules, post_id=post,
                                      agent=bob)),
            review.run(store, partial(review.dismiss_mention, rules=rules, post_id=post,
                                      agent=bob)),
            review.run(store, partial(review.assign_mention, rules=rules, post_id=post,
                                      username="bob", agent=alice)),
            return_exceptions=True,
        )
        ok = [not isinstance(o, BaseException) for o in outcomes]
        for o in outcomes:
            assert not isinstance(o, BaseException) or (
                isinstance(o, StoreError) and o.status == 409
            ), o
        assert ok[0] != ok[1]  # two people pressing "Create ticket": one ticket
        got = await post_of(store, post)
        # Whoever came first, a ticket was opened and nothing moves a ticketed post back.
        assert got.state == "ticketed"
        assert got.handled_by == ("agent:alice" if ok[0] else "agent:bob")
        assert ok[3] and got.assignee_id == bob.id  # retried past the conflict, not lost
        async with store.read() as session:
            tickets = await session.scalar(select(func.count()).select_from(Ticket).where(
                Ticket.intake_key == f"mention:{post}"))
        assert tickets == 1


async def test_bulk_reports_each_post(store: Store, rules: TicketRules, alice: Agent) -> None:
    a, b = await add_post(store), await add_post(store)
    async with store.transaction() as session:
        await review.dismiss_mention(session, rules, b, agent=alice)
    outcomes = await review.bulk(store, rules, [a, b, 999_999], "ticket", agent=alice)
    assert [(o.id, o.ok, o.code) for o in outcomes] == [
        (a, True, None), (b, True, None), (999_999, False, "not_found"),
    ]
    assert outcomes[0].ticket and outcomes[0].ticket.startswith("CL-")
    again = await review.bulk(store, rules, [a, b], "dismiss", agent=alice)
    assert [(o.ok, o.code) for o in again] == [(False, "illegal_move")] * 2
    with pytest.raises(Invalid):
        await review.bulk(store, rules, [a], "explode", agent=alice)
