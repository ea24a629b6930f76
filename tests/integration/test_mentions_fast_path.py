"""storage/mentions.ingest's bulk path (COPY / executemany after reading the stored keys)
stores exactly what the general INSERT .. ON CONFLICT path stores, and falls back to it when
another process stored a post after the look-up; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import aliased

import storage.mentions as mentions
from monitors.fingerprint import _bands, _bands_many
from storage.db import Store
from storage.mentions import (
    CursorAdvance,
    Grouping,
    IngestResult,
    NewMention,
    StreamKey,
    ensure_stream,
    ingest,
)
from storage.models import MonitorCursor, SocialPost

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
GROUPING = Grouping(window=timedelta(hours=24), flag_size=5)


def mention(side: str, n: int, fp: str | None, **kw: Any) -> NewMention:
    fields: dict[str, Any] = {
        "platform": "x", "stream": "mentions", "external_id": f"{side}{n}",
        "text": f"post {n}", "posted_at": NOW + timedelta(minutes=n), "state": "ignored",
        "intent": "complaint", "priority": "P3", "sentiment_score": 0.25,
        "fingerprint": f"{side}-{fp}" if fp else None, "raw": {"n": n} if n % 3 else None,
    }
    return NewMention(**(fields | kw))


def rounds(side: str) -> list[list[NewMention]]:
    """Batches that take every turn: new groups, members of stored leaders, re-reads of
    leaders and of members, a leader re-read with new members, direct messages, a copy
    outside the window, duplicates within a batch, posts without words."""
    viral = [mention(side, i, "viral") for i in range(1, 4)]
    first = [*viral, mention(side, 10, "other"), mention(side, 11, None),
             mention(side, 12, "dm", stream="dms", state="new"), viral[0]]
    second = [mention(side, i, "viral") for i in range(4, 7)] + [
        viral[1], mention(side, 13, "other"), mention(side, 14, "fresh"),
        mention(side, 15, "fresh", state="flagged"), mention(side, 12, "dm", stream="dms"),
    ]
    third = [mention(side, 14, "fresh"), mention(side, 16, "fresh"), mention(side, 17, "fresh"),
             mention(side, 18, "fresh"), mention(side, 19, "fresh"),
             mention(side, 20, "viral", posted_at=NOW + timedelta(days=3)),
             mention(side, 21, "viral", posted_at=NOW + timedelta(days=3, minutes=1))]
    return [first, second, third]


async def stored(store: Store, side: str) -> list[tuple[Any, ...]]:
    leader = aliased(SocialPost)
    async with store.read() as session:
        rows = (await session.execute(
            select(SocialPost.external_id, leader.external_id, SocialPost.group_size,
                   SocialPost.state, SocialPost.priority, SocialPost.raw,
                   SocialPost.sentiment_score, SocialPost.posted_at, SocialPost.fetched_at)
            .outerjoin(leader, leader.id == SocialPost.group_id)
            .where(SocialPost.external_id.like(f"{side}%"))
            .order_by(SocialPost.external_id)
        )).all()
    return [(e[1:], (le or "")[1:], *rest) for e, le, *rest in rows]


def counts(r: IngestResult) -> tuple[int, int, int, int, int]:
    return r.inserted, r.duplicates, r.grouped, r.flagged, len(r.direct_ids)


async def test_the_bulk_path_stores_what_the_general_path_stores(store: Store) -> None:
    for bulk, general in zip(rounds("a"), rounds("b"), strict=True):
        async with store.transaction() as session:
            fast = await ingest(session, bulk, cursor=None, grouping=GROUPING, now=NOW)
        async with store.transaction() as session:
            batch = sorted(mentions._unique(general), key=lambda m: m.posted_at)
            slow = await mentions._ingest_on_conflict(
                session, batch, GROUPING, NOW,
                IngestResult(duplicates=len(general) - len(batch)),
            )
        assert counts(fast) == counts(slow)
    got = await stored(store, "a")
    assert got == await stored(store, "b")
    by_id = {row[0]: row for row in got}
    assert by_id["1"][2] == 6 and by_id["1"][3] == "flagged" and by_id["1"][4] == "P2"
    assert by_id["14"][2] == 6 and by_id["20"][1] == "" and by_id["21"][1] == "20"


async def test_a_post_stored_by_another_process_meanwhile_falls_back(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = StreamKey("x", "42", "mentions")
    async with store.transaction() as session:
        await ensure_stream(session, key, NOW)
        await ingest(session, [mention("c", 1, "viral"), mention("c", 2, "viral")],
                     cursor=None, grouping=GROUPING, now=NOW)

    async def looked_too_early(session: Any, batch: Any) -> dict[Any, Any]:
        return {}  # as if the look-up ran before the other process committed

    monkeypatch.setattr(mentions, "_stored_keys", looked_too_early)
    batch = [mention("c", i, "viral") for i in (2, 3, 4)]
    async with store.transaction() as session:
        result = await ingest(session, batch, grouping=GROUPING, now=NOW,
                              cursor=CursorAdvance(key, cursor="77", reads=3, month="2026-01"))
    assert (result.inserted, result.duplicates, result.grouped) == (2, 1, 2)
    rows = await stored(store, "c")
    assert [(r[0], r[1], r[2]) for r in rows] == [("1", "", 4), ("2", "1", 1), ("3", "1", 1),
                                                  ("4", "1", 1)]
    async with store.read() as session:
        cursor = await session.scalar(select(MonitorCursor.cursor))
    assert cursor == "77"  # the cursor went with the posts, in the same transaction


def test_the_batch_minhash_equals_the_per_text_one() -> None:
    texts = [frozenset(f"w{(i * 7 + j * 13) % 97}" for j in range(i % 15 + 1)) for i in range(300)]
    texts.append(frozenset({"单", "个", "字"}))
    assert _bands_many(texts) == [_bands(t) for t in texts]
