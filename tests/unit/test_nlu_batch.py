"""The batch parse (a monitor's page, an import, a spike) gives exactly what parsing the texts
one at a time gives, and its fast paths agree with the plain ones they replace."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest

from nlu import entities, urgency
from nlu.caseless import ascii_lowered, without_ignorecase
from nlu.embedded import EmbeddedInterpreter
from nlu.enrich import clean_for_model, merge_ranking, merge_rankings
from nlu.features import normalise


@pytest.fixture(scope="module")
def nlu(cache: Path) -> EmbeddedInterpreter:
    return EmbeddedInterpreter(preload=True)


EDGE_CASES = [
    "",
    " ",
    "\n\t ",
    "😡",
    "😡🤬👎🔥🔥",
    "/start",
    "/start@careloop_bot",
    "<script>alert('x')</script>",
    "'; DROP TABLE tickets; --",
    "<b>refund</b> &amp; order #12345",
    "x" * 100_000,
    "退款" * 50_000,
    "a" * 3 + " " * 5000 + "b",
    "我的订单123-4567扣了两次钱，¥200",
    "退款refund还没到 CL-123",
    "ＣＬ－１２３４ 全角的工单号",
    "İstanbul store, Kelvin \u212a, ſcam, STRASSE Straße, phone \u212aettle",
    "\x00\x01 binary \ud800 junk",
    "zero\u200bwidth\u200dchars",
    "ORDER 123-4567 WAS CHARGED TWICE!!! LAWYER",
    "my kid got sick after eating your yoghurt, going to the HOSPITAL",
    "充电宝充电的时候冒烟了，太危险了",
    "hi",
    "thanks, great service!",
    "email me at jane.doe@example.com or call +1 415 555 0100",
    "phone charger and coffee machine from the downtown store",
    "王府井店的电视坏了",
    "1234567890" * 10,
    "?!?!",
]

_OPENERS = ["", "@careloop ", "RT @shopper: ", "hey ", "嗨 ", "URGENT: "]
_BODIES = [
    "I was charged twice for order 123-4567",
    "where is my complaint CL-1042?",
    "the cashier was really rude to me today",
    "my parcel is 2 weeks late",
    "我的快递怎么还没到，都一个星期了",
    "订单显示已送达但是我根本没收到包裹",
    "app keeps crashing when I pay",
    "what's the weather like tomorrow",
    "love the new store layout, so bright",
    "转人工",
    "the baby formula was expired and my son threw up",
    "price went up 40% overnight, ridiculous",
    "不错，就是早餐少了点",
    "can I return a sofa after 30 days?",
    "the phone charger from the mall store melted",
    "我要投诉，态度太差了",
    "thank you so much, the refund arrived",
]
_CLOSERS = ["", " 😡", " 👍", " #fail", " https://t.co/abc123", "!!!", " 谢谢", " again?!", " ¥200"]


def varied_texts(n: int = 400, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    out = list(EDGE_CASES)
    while len(out) < n:
        text = rng.choice(_OPENERS) + rng.choice(_BODIES) + rng.choice(_CLOSERS)
        roll = rng.random()
        if roll < 0.1:
            text = text.upper()
        elif roll < 0.2:
            text = text.replace(" ", "  ")
        out.append(text)
    return out


async def test_parse_many_equals_parse_one_at_a_time(nlu: EmbeddedInterpreter) -> None:
    texts = varied_texts()
    many = await nlu.parse_many(texts)
    one_by_one = [await nlu.parse(t) for t in texts]
    assert many == one_by_one
    assert [p.text for p in many] == texts


async def test_order_duplicates_and_batch_size_change_nothing(nlu: EmbeddedInterpreter) -> None:
    texts = varied_texts(200, seed=11)
    reference = {t: p for t, p in zip(texts, await nlu.parse_many(texts), strict=True)}
    shuffled = texts * 2
    random.Random(3).shuffle(shuffled)
    assert await nlu.parse_many(shuffled) == [reference[t] for t in shuffled]
    assert await nlu.parse_many(shuffled[:5]) == [reference[t] for t in shuffled[:5]]
    assert await nlu.parse_many([]) == []


async def test_non_string_items_parse_like_their_str(nlu: EmbeddedInterpreter) -> None:
    odd: list[object] = [None, 12345, 1.5]
    many = await nlu.parse_many(odd)  # type: ignore[arg-type]
    assert [p.text for p in many] == ["None", "12345", "1.5"]
    assert many == [await nlu.parse(str(x)) for x in odd]


def test_batch_features_are_the_per_text_features(nlu: EmbeddedInterpreter) -> None:
    model = nlu.load()
    assert model is not None
    cleaned = [clean_for_model(t) for t in varied_texts(300, seed=5)]
    normalised = [normalise(t) for t in cleaned]
    for vectorizer in (model.char, model.word):
        matrix = vectorizer.transform_many(normalised)
        for i, text in enumerate(cleaned):
            columns, values = vectorizer.transform_one(text)
            got_columns, got_values = matrix.row(i)
            expected = dict(zip(columns.tolist(), values.tolist(), strict=True))
            got = dict(zip(got_columns.tolist(), got_values.tolist(), strict=True))
            assert got.keys() == expected.keys(), text
            assert np.allclose([got[k] for k in expected], list(expected.values()), atol=1e-12)


def test_batch_probabilities_are_the_per_text_probabilities(nlu: EmbeddedInterpreter) -> None:
    model = nlu.load()
    assert model is not None
    cleaned = [c for c in (clean_for_model(t) for t in varied_texts(300, seed=9)) if c.strip()]
    batch = model.probabilities_many(cleaned)
    reference = np.array([model.probabilities(t) for t in cleaned])
    assert np.allclose(batch, reference, rtol=0, atol=1e-12)
    assert np.allclose(batch.sum(axis=1), 1.0)


def test_vectorised_fold_is_merge_ranking(nlu: EmbeddedInterpreter) -> None:
    model = nlu.load()
    assert model is not None
    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet(np.full(len(model.classes), 0.3), size=300)
    probabilities[0] = 1.0 / len(model.classes)  # every class tied
    probabilities[1] = 0.0
    probabilities[1, 0] = 1.0
    folded = merge_rankings(model.classes, probabilities)
    for row, got in zip(probabilities, folded, strict=True):
        order = np.argsort(-row, kind="stable")
        assert got == merge_ranking([(model.classes[k], float(row[k])) for k in order])


def test_fold_with_several_classes_per_intent_falls_back_to_merge_ranking() -> None:
    classes = ["complaint_billing", "complaint", "complaint_other", "praise", "chitchat"]
    probabilities = np.array([[0.1, 0.2, 0.3, 0.15, 0.25], [0.5, 0.1, 0.1, 0.2, 0.1]])
    for row, got in zip(probabilities, merge_rankings(classes, probabilities), strict=True):
        order = np.argsort(-row, kind="stable")
        assert got == merge_ranking([(classes[k], float(row[k])) for k in order])


def test_ascii_lowered_only_when_lowering_keeps_offsets_and_meaning() -> None:
    assert ascii_lowered("Refund NOW 退款 😡") == "refund now 退款 😡"
    for text in ("İstanbul", "KELVIN \u212a", "ſcam", "Straße", "ΣΟΦΙΑ"):
        assert ascii_lowered(text) is None
    assert without_ignorecase(re.compile(r"(?<![A-Za-z])(?:hurt|\d+ times)", re.I)) is not None
    assert without_ignorecase(re.compile(r"[A-Z]{2}-\d", re.I)) is None
    assert without_ignorecase(re.compile(r"(?i)x|y")) is None
    assert without_ignorecase(re.compile(r"\x41", re.I)) is None


@pytest.mark.parametrize(
    "text",
    [
        "I got HURT by the glass in the jar",
        "Charged Me Twice and NEVER got a refund",
        "third time I call",
        "the doctor said it is an allergy",
        "ſcam, they took my money",  # the long s is an s only to IGNORECASE
        "the \u212aETTLE caught fire",  # Kelvin sign
        "退款还没到，第三次问了",
        "nothing to see here",
    ],
)
def test_fast_urgency_rules_match_the_ignorecase_rules(text: str) -> None:
    lowered = ascii_lowered(text)
    for pattern, fast in urgency._FAST.items():
        assert fast is not None
        if lowered is not None:
            assert (fast.search(lowered) is None) == (pattern.search(text) is None), pattern
    for intent in ("complaint", "question", "praise", "request_human", "suggestion"):
        assert urgency.urgency(text, intent) == reference_urgency(text, intent)


def reference_urgency(text: str, intent: str) -> str:
    """The urgency rules with the IGNORECASE patterns only."""
    calm = intent in urgency._CALM_INTENTS
    if not calm and urgency._P1.search(text):
        return "P1"
    if not calm and intent != "suggestion" and urgency._P2_MONEY.search(text):
        return "P2"
    if intent in ("complaint", "request_human") and urgency._P2_REPEAT.search(text):
        return "P2"
    return "P3" if intent == "complaint" else "P4"


@pytest.mark.parametrize(
    "text",
    [
        "my PHONE CHARGER from the Downtown Store broke",
        "phone chargers are sold out",  # a word boundary: no "phone charger"
        "the smartphone charger",
        "王府井店的电视坏了, and the TV at the mall store too",
        "\u212aelvin's phone charger",  # a cased non-ASCII letter: the IGNORECASE path
        "no products here",
    ],
)
def test_fast_lookups_match_the_ignorecase_lookups(text: str) -> None:
    entities.lookup_entities("warm up")  # loads the tables
    slow = [
        (name, m.group(0), m.start(), m.end())
        for name, pattern in entities._lookup_re.items()
        for m in pattern.finditer(text)
    ]
    fast = [(e.entity, e.value, e.start, e.end) for e in entities.lookup_entities(text)]
    assert fast == slow


def test_public_sparse_product_gives_the_same_numbers(
    nlu: EmbeddedInterpreter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The direct kernel call is an optimisation only: scipy's operator gives identical rows."""
    import nlu.features as features

    model = nlu.load()
    assert model is not None
    cleaned = [c for c in (clean_for_model(t) for t in varied_texts(100, seed=2)) if c.strip()]
    fast = model.probabilities_many(cleaned)
    monkeypatch.setattr(features, "_csr_matvecs", None)
    assert np.array_equal(model.probabilities_many(cleaned), fast)
