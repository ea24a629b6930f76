"""Entities, language, urgency, sentiment and the shared complete_parse, without a model."""

from __future__ import annotations

from itertools import pairwise

import pytest

from nlu.enrich import OOS_THRESHOLD, complete_parse, merge_ranking
from nlu.entities import regex_entities
from nlu.language import detect_language
from nlu.sentiment import sentiment
from nlu.types import Entity
from nlu.urgency import urgency


def found(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in regex_entities(text):
        # Offsets always slice the original text to what was matched.
        raw = text[e.start : e.end]
        assert raw.lstrip("#") == e.value or e.entity == "ticket_id", (raw, e)
        out.setdefault(e.entity, []).append(e.value)
    return out


@pytest.mark.parametrize(
    ("text", "entity", "value"),
    [
        ("where is my complaint CL-123?", "ticket_id", "CL-123"),
        ("我的投诉CL-123怎么样了", "ticket_id", "CL-123"),
        ("ticket cl-77 please", "ticket_id", "CL-77"),
        ("order 123-4567 never came", "order_id", "123-4567"),
        ("amazon style 112-1234567-1234567 here", "order_id", "112-1234567-1234567"),
        ("订单号：20231109001234 扣了两次", "order_id", "20231109001234"),
        ("order #884213 is late", "order_id", "884213"),
        ("I paid $49.99 for it", "amount", "$49.99"),
        ("退我¥200", "amount", "¥200"),
        ("多收了200元", "amount", "200元"),
        ("charged USD 1,299.00 today", "amount", "USD 1,299.00"),
        ("it cost 35 dollars", "amount", "35 dollars"),
        ("email me at jane.doe@example.co.uk", "email", "jane.doe@example.co.uk"),
        ("call me on 13800138000", "phone", "13800138000"),
        ("my number is +1 415-555-0134", "phone", "+1 415-555-0134"),
        ("订单123-4567扣了两次钱", "order_id", "123-4567"),
        ("电话13800138000联系我", "phone", "13800138000"),
        ("联系我abc.d@x.com谢谢", "email", "abc.d@x.com"),
        ("the air fryer melted", "product", "air fryer"),
        ("在万达店买的", "store", "万达店"),
    ],
)
def test_entities(text: str, entity: str, value: str) -> None:
    assert value in found(text).get(entity, []), regex_entities(text)


def test_contract_offsets() -> None:
    assert regex_entities("I was charged twice for order 123-4567") == [
        Entity("order_id", "123-4567", 30, 38)
    ]


def test_entities_do_not_overlap() -> None:
    text = "order 123-4567 cost $12.50, ticket CL-9, mail a@b.com, 我在朝阳门店"
    ents = regex_entities(text)
    for a, b in pairwise(ents):
        assert a.end <= b.start
    assert {e.entity for e in ents} >= {"order_id", "amount", "ticket_id", "email", "store"}


def test_no_entities_in_plain_words() -> None:
    assert regex_entities("that was great, thanks") == []
    assert found("I waited 20 minutes") == {}


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("hello", "en"),
        ("你好", "zh"),
        ("我的order到了吗", "zh"),
        ("退款refund还没到 CL-123", "zh"),
        ("my 快递 is late, where is it now?", "en"),
        ("12345 !!!", "en"),
        ("", "en"),
    ],
)
def test_language(text: str, lang: str) -> None:
    assert detect_language(text) == lang


@pytest.mark.parametrize(
    ("text", "intent", "category", "level"),
    [
        ("the heater caught fire", "complaint", "product_quality", "P1"),
        ("anything", "complaint", "product_safety", "P1"),
        ("I will take legal action", "complaint", "other", "P1"),
        ("充电器冒烟了", "complaint", "product_quality", "P1"),
        ("我要去消协投诉", "complaint", "other", "P1"),
        ("double charged on my card", "complaint", "billing", "P2"),
        ("重复扣款", "complaint", "billing", "P2"),
        ("第三次联系你们了", "complaint", "delivery", "P2"),
        ("I've already called twice, this is the third time", "request_human", None, "P2"),
        ("late parcel", "complaint", "delivery", "P3"),
        ("the fire deals were great 🔥", "praise", None, "P4"),
        ("add a dark mode", "suggestion", None, "P4"),
        ("hi", "greet", None, "P4"),
    ],
)
def test_urgency_rules(text: str, intent: str, category: str | None, level: str) -> None:
    assert urgency(text, intent, category) == level


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("great service, thank you!", "positive"),
        ("this is terrible", "negative"),
        ("where is my order", "neutral"),
        ("不错", "positive"),
        ("不好", "negative"),
        ("质量不差", "positive"),
        ("价格有点贵，但是服务很好", "positive"),
        ("房间挺大的，就是太吵了，睡不着，很失望", "negative"),
        ("我的投诉CL-123怎么样了", "neutral"),
        ("好评好评 👍", "positive"),
        # 就是/只是 bring a minor reservation, not the verdict
        ("东西很好用，就是包装简单了点", "positive"),
        # a clause opening with 但是 outweighs the one before
        ("外观还行。但是用了两天就坏了，太失望", "negative"),
        # the summing-up clause carries the verdict
        ("发货有点慢，客服回得也慢，总体来说还是很满意", "positive"),
        # a wish is not a fact
        ("质量很好，如果再便宜点就完美了", "positive"),
        # 竟然/居然: the surprise is bad news in a review
        ("等了一个小时竟然没人接待", "negative"),
        # a shop's reply is not the customer's voice
        ("质量太差，一洗就掉色。掌柜回复：感谢您的支持，欢迎再次光临", "negative"),
    ],
)
def test_sentiment_labels(text: str, label: str) -> None:
    assert sentiment(text).label == label


def test_merge_ranking_folds_complaint_categories() -> None:
    ranked, category = merge_ranking(
        [("complaint_billing", 0.5), ("complaint_delivery", 0.3), ("praise", 0.2)]
    )
    assert ranked[0].name == "complaint"
    assert ranked[0].confidence == pytest.approx(0.5)  # the best category, not the sum
    assert category is not None and category.name == "billing"
    assert category.confidence == pytest.approx(0.5 / 0.8)


def test_merge_ranking_spread_complaint_mass_does_not_beat_one_clear_intent() -> None:
    ranked, _ = merge_ranking(
        [("question", 0.34)] + [(f"complaint_{c}", 0.06) for c in ("billing", "other",
         "delivery", "returns", "pricing", "website_app")] + [("out_of_scope", 0.3)]
    )
    assert ranked[0].name == "question"
    assert [r.name for r in ranked].count("complaint") == 1


def test_complete_parse_threshold_and_category() -> None:
    weak = complete_parse("hmm", [("praise", OOS_THRESHOLD / 2), ("greet", 0.1)])
    assert weak.intent.name == "out_of_scope"
    assert weak.category is None
    sure = complete_parse("charged twice", [("complaint_billing", 0.9), ("greet", 0.1)])
    assert sure.intent.name == "complaint"
    assert sure.category is not None and sure.category.name == "billing"
    plain = complete_parse("thanks", [("praise", 0.9), ("complaint_billing", 0.1)])
    assert plain.category is None


def test_complete_parse_tolerates_odd_rankings() -> None:
    p = complete_parse("x", [("made_up_intent", 0.9), ("complaint_unknown", float("nan"))])
    assert p.intent.name == "out_of_scope"
    assert complete_parse("x", []).intent.name == "out_of_scope"


def test_complete_parse_merges_model_entities() -> None:
    text = "order 123-4567 for my new laptop"
    model = [
        Entity("order_id", "123-45", 6, 12),  # clipped by a learned tagger: the rule wins
        Entity("product", "new laptop", 22, 32),  # the model's product wins over the lookup
        Entity("store", "nowhere", 500, 507),  # outside the text: dropped
    ]
    p = complete_parse(text, [("complaint_other", 0.9)], model)
    assert [(e.entity, e.value) for e in p.entities] == [
        ("order_id", "123-4567"),
        ("product", "new laptop"),
    ]
