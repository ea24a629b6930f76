"""The embedded NLU as a user of the bot or the desk notices it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from nlu.embedded import EmbeddedInterpreter, load_or_train
from nlu.factory import make_interpreter
from nlu.training_data import load_training_data
from nlu.types import CATEGORIES, INTENTS, Interpreter, Parse


@pytest.fixture(scope="module")
def nlu(cache: Path) -> EmbeddedInterpreter:
    return EmbeddedInterpreter(preload=True)


TRAINING_TEXTS = {e.text.lower() for e in load_training_data().examples}


def unseen(text: str) -> str:
    assert text.lower() not in TRAINING_TEXTS, f"{text!r} is a training example"
    return text


def assert_valid(p: Parse) -> None:
    d = p.to_dict()
    assert set(d) == {
        "text", "language", "intent", "intent_ranking", "category", "sentiment", "urgency",
        "entities",
    }
    assert d["intent"]["name"] in INTENTS
    assert 0.0 <= d["intent"]["confidence"] <= 1.0
    assert d["language"] in ("en", "zh")
    assert (d["category"] is None) == (d["intent"]["name"] != "complaint")
    if d["category"]:
        assert d["category"]["name"] in CATEGORIES
    assert d["sentiment"]["label"] in ("negative", "neutral", "positive")
    assert -1.0 <= d["sentiment"]["score"] <= 1.0
    assert d["urgency"] in ("P1", "P2", "P3", "P4")
    for r in d["intent_ranking"]:
        assert r["name"] in INTENTS
    for e in d["entities"]:
        assert 0 <= e["start"] < e["end"] <= len(p.text)


def test_is_an_interpreter(nlu: EmbeddedInterpreter) -> None:
    assert isinstance(nlu, Interpreter)
    assert nlu.name == "embedded"
    assert nlu.health()["status"] == "ok"


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("I got billed two times for the same headset, please sort it out", "billing"),
        ("my parcel still hasn't turned up and it's been three weeks", "delivery"),
        ("the girl at the till was incredibly rude and ignored my question", "service_attitude"),
        ("the toaster I bought sparked and caught fire in my kitchen", "product_safety"),
        ("the app freezes every time I try to pay, can't checkout", "website_app"),
        ("they won't take back my unopened blender even with a receipt", "returns"),
        ("the trousers tore at the seam after wearing them once", "product_quality"),
        ("我买的洗衣机送了十天还没到", "delivery"),
        ("同一笔订单被扣了两次款", "billing"),
        ("收银员态度特别差，还骂人", "service_attitude"),
        ("网站登录不上去，一直提示错误", "website_app"),
        ("店里地上全是垃圾，厕所也很脏", "store_environment"),
    ],
)
async def test_complaints_and_their_category(
    nlu: EmbeddedInterpreter, text: str, category: str
) -> None:
    p = await nlu.parse(unseen(text))
    assert_valid(p)
    assert p.intent.name == "complaint", p.to_dict()
    assert p.category is not None and p.category.name == category, p.to_dict()


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("hello there, is someone available?", "greet"),
        ("你好呀，请问客服在吗", "greet"),
        ("ok thanks, bye for now", "goodbye"),
        ("yes that's right, go ahead", "affirm"),
        ("no, that's not what I meant", "deny"),
        ("your staff were brilliant today, thank you so much!", "praise"),
        ("店员特别热情，给你们点赞", "praise"),
        ("it would be nice if you sold bigger sizes online", "suggestion"),
        ("建议晚上多开一个收银台", "suggestion"),
        ("any news on my ticket CL-5512?", "check_status"),
        ("我的工单CL-808处理得怎么样了", "check_status"),
        ("please put me through to a real person", "request_human"),
        ("我不想和机器人聊，帮我转人工客服", "request_human"),
    ],
)
async def test_other_intents(nlu: EmbeddedInterpreter, text: str, intent: str) -> None:
    p = await nlu.parse(unseen(text))
    assert_valid(p)
    assert p.intent.name == intent, p.to_dict()
    assert p.category is None


@pytest.mark.parametrize(
    "text",
    [
        "what's the capital of Portugal",
        "can you recommend a good pasta recipe for dinner",
        "how do I increase my credit card limit",
        "book me a train to Edinburgh on Friday",
        "明天上海天气怎么样",
        "帮我订一张去成都的火车票",
    ],
)
async def test_off_topic_is_out_of_scope(nlu: EmbeddedInterpreter, text: str) -> None:
    p = await nlu.parse(unseen(text))
    assert_valid(p)
    assert p.intent.name == "out_of_scope", p.to_dict()
    assert p.urgency == "P4"


async def test_contract_example(nlu: EmbeddedInterpreter) -> None:
    p = await nlu.parse("I was charged twice for order 123-4567")
    d = p.to_dict()
    assert d["language"] == "en"
    assert d["intent"]["name"] == "complaint"
    assert d["category"]["name"] == "billing"
    assert d["sentiment"]["label"] == "negative"
    assert d["urgency"] == "P2"
    assert {"entity": "order_id", "value": "123-4567", "start": 30, "end": 38} in d["entities"]


@pytest.mark.parametrize(
    ("text", "sign"),
    [
        ("absolutely love the new store, staff are amazing 😍", 1),
        ("worst shopping experience ever, totally useless support 😡", -1),
        ("东西质量很好，非常满意", 1),
        ("太差了，再也不来了", -1),
        ("服务不好，态度也不热情", -1),
    ],
)
async def test_sentiment_sign(nlu: EmbeddedInterpreter, text: str, sign: int) -> None:
    p = await nlu.parse(text)
    assert p.sentiment.score * sign > 0, p.to_dict()
    assert p.sentiment.label == ("positive" if sign > 0 else "negative")


@pytest.mark.parametrize(
    ("text", "urgency"),
    [
        ("my son burned his hand on your kettle, we went to the ER", "P1"),
        ("if you don't refund me I'm calling my lawyer and will sue", "P1"),
        ("孩子吃了你们的饼干过敏住院了", "P1"),
        ("再不处理我就去12315投诉你们", "P1"),
        ("你们不退款我就起诉", "P1"),
        ("you charged me twice and my refund never arrived", "P2"),
        ("扣了两次钱，到现在都没退", "P2"),
        ("this is the third time I'm writing about the broken zipper", "P2"),
        ("the shelves in the store were messy", "P3"),
        ("thanks, lovely service", "P4"),
    ],
)
async def test_urgency(nlu: EmbeddedInterpreter, text: str, urgency: str) -> None:
    p = await nlu.parse(text)
    assert p.urgency == urgency, p.to_dict()


BAD_INPUTS = [
    "",
    " ",
    "\n\t\n",
    "a" * 100_000,
    ("my order 123-4567 " + "blah " * 30_000)[:100_000],
    "\x00\x01\x02\xff\ufffd binary \x7f",
    "".join(chr(c) for c in range(0, 0x300, 3)),
    "😀😀😀🔥🔥",
    "\u202e\u200b\u200d‮ العربية שלום \u200f",
    "'; DROP TABLE tickets; --",
    "<script>alert('x')</script><b>hi</b>",
    "/start",
    "/status CL-12",
    "/",
    "\ud800 lone surrogate",
    "CL-" + "9" * 5000,
    "$" * 5000,
    "¥" + "1" * 3000 + "元",
]


@pytest.mark.parametrize("text", BAD_INPUTS, ids=range(len(BAD_INPUTS)))
async def test_hostile_input_always_gives_a_valid_parse_quickly(
    nlu: EmbeddedInterpreter, text: str
) -> None:
    start = time.perf_counter()
    p = await nlu.parse(text)
    assert time.perf_counter() - start < 0.5
    assert p.text == text
    assert_valid(p)
    p.to_dict()


async def test_long_text_keeps_entity_offsets_valid(nlu: EmbeddedInterpreter) -> None:
    # Past the 2,000 characters the classifier reads, entities still point into the original.
    text = "x " * 3_000 + "refund for order 555-1234567 please"
    p = await nlu.parse(text)
    order = [e for e in p.entities if e.entity == "order_id"]
    assert order and text[order[0].start : order[0].end] == "555-1234567"


async def test_empty_is_out_of_scope(nlu: EmbeddedInterpreter) -> None:
    p = await nlu.parse("")
    assert p.intent.name == "out_of_scope"
    assert p.entities == ()


async def test_parse_many_matches_parse(nlu: EmbeddedInterpreter) -> None:
    texts = ["hi", "我要投诉", "where is CL-1?", ""]
    many = await nlu.parse_many(texts)
    assert [p.to_dict() for p in many] == [(await nlu.parse(t)).to_dict() for t in texts]


def test_cache_is_reused_not_retrained(cache: Path, nlu: EmbeddedInterpreter) -> None:
    files = list(cache.glob("embedded-*.npz"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    start = time.perf_counter()
    _, info = load_or_train()
    elapsed = time.perf_counter() - start
    assert info["source"] == "cache"
    assert elapsed < 1.0
    assert files[0].stat().st_mtime_ns == mtime
    assert EmbeddedInterpreter(preload=True).health()["source"] == "cache"


def test_corrupt_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_NLU_CACHE", str(tmp_path))
    _, first = load_or_train()
    assert first["source"] == "trained"
    assert first["train_seconds"] < 10
    Path(first["cache_path"]).write_bytes(b"not a model")
    _, again = load_or_train()
    assert again["source"] == "trained"
    _, third = load_or_train()
    assert third["source"] == "cache"


def test_factory() -> None:
    assert isinstance(make_interpreter("embedded"), EmbeddedInterpreter)
    with pytest.raises(ValueError, match="unknown NLU backend"):
        make_interpreter("watson")


@pytest.mark.parametrize(
    "text",
    [
        "hey, could I get my parcel sent to my office instead?",
        "do you take afterpay at the checkout",
        "where do I grab a PDF of my receipt from last week",
        "how do I stop getting your marketing emails",
        "is the garden centre open late on thursdays?",
        "请问可以开公司抬头的发票吗",
        "收货地址填错了，还没发货能改吗",
        "你们周六几点关门",
        "想问下支持云闪付吗",
    ],
)
async def test_retail_questions_are_questions_not_complaints(
    nlu: EmbeddedInterpreter, text: str
) -> None:
    p = await nlu.parse(unseen(text))
    assert_valid(p)
    assert p.intent.name == "question", p.to_dict()
    assert p.category is None
    assert p.urgency == "P4"
