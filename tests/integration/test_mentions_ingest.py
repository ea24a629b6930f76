"""storage/mentions.ingest on SQLite and PostgreSQL: idempotency, one transaction with the
cursor, grouping of near-duplicates, a 10,000-post burst."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from monitors.triage import Triage, TriageRules
from monitors.types import Author, Post
from nlu.embedded import EmbeddedInterpreter
from storage.db import Store
from storage.mentions import (
    CursorAdvance,
    Grouping,
    IngestResult,
    LeaseLost,
    NewMention,
    StreamKey,
    ensure_stream,
    ingest,
)
from storage.models import MonitorCursor, SocialPost

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
GROUPING = Grouping(window=timedelta(hours=24), flag_size=5)
KEY = StreamKey("x", "42", "mentions")


def mention(n: int, text: str = "a distinct post", **kw: Any) -> NewMention:
    fields: dict[str, Any] = {
        "platform": "x", "stream": "mentions", "external_id": str(n), "text": text,
        "posted_at": NOW + timedelta(seconds=n), "state": "flagged", "intent": "complaint",
        "priority": "P3", "fingerprint": f"fp-{n}", "author_username": f"user{n}",
    }
    return NewMention(**(fields | kw))


async def write(
    store: Store, batch: list[NewMention], cursor: CursorAdvance | None = None,
    grouping: Grouping = GROUPING,
) -> IngestResult:
    async with store.transaction() as session:
        return await ingest(session, batch, cursor=cursor, grouping=grouping, now=NOW)


async def posts(store: Store) -> dict[str, SocialPost]:
    async with store.read() as session:
        rows = (await session.scalars(select(SocialPost))).all()
    return {p.external_id: p for p in rows}


async def cursor_row(store: Store) -> MonitorCursor | None:
    async with store.read() as session:
        return await session.scalar(select(MonitorCursor).where(MonitorCursor.stream == "mentions"))


async def leased_stream(store: Store, owner: str = "proc-a") -> None:
    async with store.transaction() as session:
        await ensure_stream(session, KEY, NOW)
        await session.execute(
            update(MonitorCursor).values(lease_owner=owner, lease_until=NOW + timedelta(minutes=3))
        )


async def test_reading_the_same_page_twice_adds_nothing(store: Store) -> None:
    batch = [mention(i) for i in range(1, 6)] + [mention(9, fingerprint="viral")] * 2
    first = await write(store, batch)
    assert first.inserted == 6 and first.duplicates == 1
    again = await write(store, batch)
    assert again.inserted == 0 and again.duplicates == 7
    assert len(await posts(store)) == 6


async def test_posts_and_cursor_commit_together(store: Store) -> None:
    await leased_stream(store)
    advance = CursorAdvance(KEY, cursor="100", reads=3, month="2026-01", owner="proc-a")
    result = await write(store, [mention(1), mention(2)], advance)
    assert result.inserted == 2
    row = await cursor_row(store)
    assert row is not None and row.cursor == "100" and row.reads_count == 3

    # A crash after the posts were written but before the commit: neither posts nor cursor.
    with pytest.raises(RuntimeError):
        async with store.transaction() as session:
            await ingest(
                session, [mention(3), mention(4)],
                cursor=CursorAdvance(KEY, cursor="200", reads=2, month="2026-01", owner="proc-a"),
                grouping=GROUPING, now=NOW,
            )
            raise RuntimeError("process killed")
    assert set(await posts(store)) == {"1", "2"}
    row = await cursor_row(store)
    assert row is not None and row.cursor == "100" and row.reads_count == 3

    # Re-reading from the stored cursor then writes them exactly once.
    await write(store, [mention(3), mention(4)],
                CursorAdvance(KEY, cursor="200", reads=2, month="2026-01", owner="proc-a"))
    assert set(await posts(store)) == {"1", "2", "3", "4"}


async def test_a_lost_lease_writes_nothing(store: Store) -> None:
    await leased_stream(store, owner="proc-b")
    with pytest.raises(LeaseLost):
        await write(store, [mention(1)],
                    CursorAdvance(KEY, cursor="100", reads=1, month="2026-01", owner="proc-a"))
    assert await posts(store) == {}
    row = await cursor_row(store)
    assert row is not None and row.cursor is None


async def test_reads_are_counted_per_month(store: Store) -> None:
    await leased_stream(store)
    for month, reads in (("2026-01", 40), ("2026-01", 60), ("2026-02", 7)):
        await write(store, [], CursorAdvance(KEY, cursor="1", reads=reads, month=month,
                                             owner="proc-a"))
        row = await cursor_row(store)
        assert row is not None and row.reads_month == month
    assert row is not None and row.reads_count == 7


async def test_copies_are_one_review_item_that_keeps_growing(store: Store) -> None:
    viral = "viral-fp"
    batch = [mention(i, "my milk was sour", fingerprint=viral, priority="P3") for i in range(1, 4)]
    batch.append(mention(50, "something else"))
    await write(store, batch)
    rows = await posts(store)
    leader = rows["1"]
    assert leader.group_id is None and leader.group_size == 3
    assert rows["2"].group_id == leader.id and rows["3"].group_id == leader.id
    assert rows["50"].group_id is None and rows["50"].group_size == 1

    # Later batches join the stored leader; at five people the complaint becomes P2.
    await write(store, [mention(i, "my milk was sour", fingerprint=viral) for i in (4, 5, 6)])
    rows = await posts(store)
    assert rows["1"].group_size == 6 and rows["1"].priority == "P2"
    assert all(rows[str(i)].group_id == leader.id for i in (4, 5, 6))
    assert rows["1"].state == "flagged"

    # Re-reading members adds nothing and does not inflate the count.
    await write(store, [mention(i, "my milk was sour", fingerprint=viral) for i in (2, 5, 6)])
    assert (await posts(store))["1"].group_size == 6


async def test_a_copy_outside_the_window_starts_a_new_group(store: Store) -> None:
    await write(store, [mention(1, fingerprint="fp"), mention(2, fingerprint="fp")])
    late = mention(3, fingerprint="fp", posted_at=NOW + timedelta(days=3))
    await write(store, [late])
    rows = await posts(store)
    assert rows["2"].group_id == rows["1"].id
    assert rows["3"].group_id is None and rows["1"].group_size == 2


async def test_a_growing_group_flags_noise_but_not_praise_nor_a_persons_decision(
    store: Store,
) -> None:
    noise = [mention(i, "is the app down?", fingerprint="down", state="ignored",
                     intent="out_of_scope", priority="P4") for i in range(1, 4)]
    praise = [mention(i, "love you acme", fingerprint="love", state="ignored", intent="praise",
                      priority="P4") for i in range(11, 14)]
    handled = [mention(i, "rude staff", fingerprint="rude") for i in range(21, 23)]
    await write(store, noise + praise + handled)
    async with store.transaction() as session:
        await session.execute(
            update(SocialPost).where(SocialPost.external_id == "21").values(state="dismissed")
        )
    rows = await posts(store)
    assert rows["1"].state == "ignored"

    more_noise = [mention(i, "is the app down?", fingerprint="down", state="ignored",
                          intent="out_of_scope", priority="P4") for i in range(4, 7)]
    more_praise = [mention(i, "love you acme", fingerprint="love", state="ignored",
                           intent="praise", priority="P4") for i in range(14, 17)]
    more_handled = [mention(i, "rude staff", fingerprint="rude") for i in range(23, 28)]
    await write(store, more_noise + more_praise + more_handled)
    rows = await posts(store)
    assert rows["1"].state == "flagged" and rows["1"].group_size == 6
    assert rows["1"].priority == "P4"  # not a complaint: flagged for a look, not urgent
    assert rows["11"].state == "ignored" and rows["11"].group_size == 6
    assert rows["21"].state == "dismissed" and rows["21"].group_size == 7


async def test_a_big_group_in_one_batch_is_flagged_at_once(store: Store) -> None:
    batch = [mention(i, "is the app down?", fingerprint="down", state="ignored",
                     intent="out_of_scope", priority="P4") for i in range(1, 8)]
    result = await write(store, batch)
    rows = await posts(store)
    assert rows["1"].state == "flagged" and rows["1"].group_size == 7
    assert result.flagged == 1 and result.grouped == 6


async def test_direct_messages_are_never_grouped(store: Store) -> None:
    dms = [mention(i, "where is my order", fingerprint="same", stream="dms", state="new")
           for i in range(1, 4)]
    result = await write(store, dms)
    rows = await posts(store)
    assert all(r.group_id is None and r.group_size == 1 for r in rows.values())
    assert sorted(result.direct_ids) == sorted(r.id for r in rows.values())
    again = await write(store, dms)
    assert again.direct_ids == []


async def test_a_ten_thousand_post_burst(store: Store) -> None:
    """A viral complaint retweeted thousands of times among ordinary posts, through the real
    parse and triage: every post is stored once, the copies are one growing review item."""
    triage = Triage(EmbeddedInterpreter(), TriageRules(reach_threshold=10_000))
    viral = "@acme your store sold me rotten chicken, my kids are sick!"
    burst: list[Post] = []
    for i in range(10_000):
        word = "".join(chr(ord("a") + int(d)) for d in str(i))  # digits are not words
        text = f"RT @fan{i % 97}: {viral}" if i % 4 else f"@acme is {word} open on sunday"
        burst.append(Post(
            platform="x", stream="mentions", external_id=str(10**6 + i), text=text,
            author=Author(id=f"a{i}", username=f"fan{i}", followers=i % 500),
            posted_at=NOW + timedelta(milliseconds=i),
        ))
    for start in range(0, len(burst), 2_500):
        rows = await triage.mentions(burst[start : start + 2_500])
        await write(store, rows)
    async with store.read() as session:
        total = await session.scalar(select(func.count()).select_from(SocialPost))
        leaders = (await session.execute(
            select(SocialPost.text, SocialPost.group_size, SocialPost.state,
                   SocialPost.priority)
            .where(SocialPost.group_id.is_(None)).order_by(SocialPost.group_size.desc())
        )).all()
    assert total == 10_000
    text, size, state, level = leaders[0]
    assert viral in text and size == 7_500 and state == "flagged" and level in ("P1", "P2")
    assert triage.parsed < 2_600  # the retweets were parsed once
