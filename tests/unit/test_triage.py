"""Triage rules, near-duplicate fingerprints and parse reuse (no database)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from monitors.fingerprint import NearDuplicates, fingerprint, words
from monitors.triage import Triage, TriageRules, priority, review_state
from monitors.types import DIRECT, MENTIONS, Author, Post
from nlu.embedded import EmbeddedInterpreter
from nlu.types import Parse, Ranked, Sentiment

RULES = TriageRules(reach_threshold=10_000)
AT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def post(text: str, *, followers: int | None = 12, stream: str = MENTIONS, n: int = 1) -> Post:
    return Post(
        platform="x", stream=stream, external_id=str(n), text=text,
        author=Author(id=f"u{n}", username=f"user{n}", followers=followers), posted_at=AT,
    )


def parse(intent: str, label: str = "neutral", urgency: str = "P4") -> Parse:
    return Parse(
        text="", language="en", intent=Ranked(intent, 0.9), intent_ranking=(Ranked(intent, 0.9),),
        category=Ranked("delivery", 0.8) if intent == "complaint" else None,
        sentiment=Sentiment(label, -0.5 if label == "negative" else 0.0), urgency=urgency,
    )


@pytest.mark.parametrize(
    ("intent", "label", "urgency", "followers", "state"),
    [
        ("complaint", "neutral", "P3", 10, "flagged"),
        ("out_of_scope", "negative", "P4", 10, "flagged"),
        ("check_status", "neutral", "P1", 10, "flagged"),
        ("suggestion", "neutral", "P2", 10, "flagged"),
        ("praise", "positive", "P4", 10, "ignored"),
        ("out_of_scope", "neutral", "P4", 10, "ignored"),
        ("out_of_scope", "neutral", "P4", None, "ignored"),  # no metrics: no reach
        ("out_of_scope", "neutral", "P4", 10_000, "flagged"),
        ("praise", "positive", "P4", 250_000, "flagged"),
    ],
)
def test_review_state_rules(
    intent: str, label: str, urgency: str, followers: int | None, state: str
) -> None:
    got = review_state(post("x", followers=followers), parse(intent, label, urgency), RULES)
    assert got == state


def test_direct_messages_stay_new_for_the_dialogue() -> None:
    p = post("my parcel is lost", stream=DIRECT)
    assert review_state(p, parse("complaint", "negative", "P3"), RULES) == "new"


def test_a_complaint_from_a_wide_reaching_author_is_at_least_p2() -> None:
    assert priority(post("x", followers=50_000), parse("complaint", urgency="P3"), RULES) == "P2"
    assert priority(post("x", followers=50_000), parse("complaint", urgency="P1"), RULES) == "P1"
    assert priority(post("x", followers=50), parse("complaint", urgency="P3"), RULES) == "P3"
    assert priority(post("x", followers=50_000), parse("praise"), RULES) == "P4"


def test_copies_share_a_fingerprint_and_other_complaints_do_not() -> None:
    original = "@acme my milk was SOUR again, bought it yesterday at store 12!! 😡"
    copies = [
        "RT @ann: @acme my milk was SOUR again, bought it yesterday at store 12!! 😡",
        "@acme @helpdesk My milk was sour again. Bought it yesterday at store 44 https://t.co/abc",
        "my milk was sour again bought it yesterday at store",
    ]
    fp = fingerprint(original)
    assert fp is not None
    for copy in copies:
        assert fingerprint(copy) == fp, copy
    assert fingerprint("@acme my parcel never arrived, order 123-4567") != fp
    # Only handles, links and emoji: nothing to group on.
    assert fingerprint("@acme 😡😡 https://t.co/x") is None
    assert fingerprint("") is None


def test_chinese_copies_share_a_fingerprint() -> None:
    a = fingerprint("@acme 我的订单123还没到，太慢了！")
    assert a is not None
    assert fingerprint("RT @li: @acme 我的订单456还没到 太慢了") == a
    assert fingerprint("@acme 牛奶是坏的") != a


def test_near_duplicates_join_the_first_similar_text() -> None:
    near = NearDuplicates(threshold=0.8)
    first = "the milk i bought at your downtown store was sour and smelled awful"
    similar = "the milk i bought at your downtown store was sour and smelled really awful"
    other = "your website checkout keeps failing when i pay with a credit card"
    fa, fb, fc = (fingerprint(t) for t in (first, similar, other))
    assert fa and fb and fc and fa != fb
    assert near.canonical(fa, words(first)) == fa
    assert near.canonical(fb, words(similar)) == fa
    assert near.canonical(fc, words(other)) == fc
    # Short texts only group exactly: "help" and "help now" are not one complaint.
    assert near.canonical("h1", words("help me")) == "h1"
    assert near.canonical("h2", words("help me now")) == "h2"


def test_near_duplicate_memory_is_bounded() -> None:
    near = NearDuplicates(max_entries=100)
    for i in range(500):
        w = "".join(chr(ord("a") + int(d)) for d in str(i))  # digits are not words
        text = f"complaint number {w} about word{w} and thing{w} at place{w} today"
        fp = fingerprint(text)
        assert fp is not None
        near.canonical(fp, words(text))
    assert len(near) == 100


@pytest.fixture(scope="module")
def interpreter(cache: Path) -> Iterator[EmbeddedInterpreter]:
    yield EmbeddedInterpreter(preload=True)


class Counting:
    """Wraps the real interpreter to count the texts it is asked to parse."""

    name = "counting"

    def __init__(self, inner: EmbeddedInterpreter) -> None:
        self.inner = inner
        self.texts: list[str] = []

    async def parse(self, text: str) -> Parse:
        self.texts.append(text)
        return await self.inner.parse(text)

    async def parse_many(self, texts: list[str]) -> list[Parse]:
        self.texts.extend(texts)
        return await self.inner.parse_many(texts)

    def health(self) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        return None


async def test_triage_with_the_real_nlu(interpreter: EmbeddedInterpreter) -> None:
    nlu = Counting(interpreter)
    triage = Triage(nlu, RULES)
    posts = [
        post("@acme I was charged twice for order 123-4567, refund me now", n=1),
        post("@acme thank you, the staff at your store were wonderful!", n=2),
        post("@acme thank you, the staff at your store were wonderful!", n=3, followers=90_000),
        post("RT @bob: @acme I was charged twice for order 123-4567, refund me now", n=4),
        post("@acme where is my parcel", n=5, stream=DIRECT),
    ]
    rows = await triage.mentions(posts)
    by_id = {r.external_id: r for r in rows}
    assert by_id["1"].state == "flagged" and by_id["1"].intent == "complaint"
    assert by_id["1"].category == "billing"
    assert by_id["2"].state == "ignored" and by_id["2"].intent == "praise"
    assert by_id["3"].state == "flagged"  # the same praise from a wide-reaching author
    assert by_id["4"].fingerprint == by_id["1"].fingerprint
    assert by_id["4"].state == "flagged"
    assert by_id["5"].state == "new"
    assert by_id["1"].language == "en" and by_id["1"].sentiment_label is not None
    # One parse per distinct text: the retweet and the repeated praise were not parsed again.
    assert len(nlu.texts) == 3
    await triage.mentions(
        [post("RT @eve: @acme I was charged TWICE for order 999-0000, refund me now!!", n=6)]
    )
    assert len(nlu.texts) == 3  # the group's parse is reused in later batches too
