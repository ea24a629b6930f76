"""RasaInterpreter and FallbackInterpreter against a local server that speaks Rasa's /model/parse.

The fake answers like Rasa 3.6 does (intent, intent_ranking, entities with start/end/value),
including Rasa's habit of reading a leading "/" as an intent name, so the client's guard is
checked against that behaviour rather than against a mock. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from nlu.fallback import FallbackInterpreter
from nlu.rasa_client import MAX_CHARS, RasaInterpreter, RasaUnavailable
from nlu.types import Parse, Ranked, Sentiment


@dataclass
class FakeRasa:
    """A Rasa-shaped server whose behaviour a test switches: ok, error (500) or slow."""

    mode: str = "ok"
    delay: float = 0.0
    texts: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def answer(self, text: str) -> dict[str, Any]:
        if text.startswith("/"):
            # Rasa's RegexMessageHandler: "/name" is the intent `name` with certainty.
            name = text[1:].split("{")[0].strip()
            intent = {"name": name, "confidence": 1.0}
            return {"text": text, "intent": intent, "intent_ranking": [intent], "entities": []}
        lowered = text.lower()
        if "charged" in lowered or "扣款" in text:
            name = "complaint_billing"
        elif "parcel" in lowered or "快递" in text:
            name = "complaint_delivery"
        else:
            name = "greet"
        ranking = [{"name": name, "confidence": 0.9}, {"name": "praise", "confidence": 0.1}]
        entities = []
        at = text.find("123-4567")
        if at >= 0:
            entities.append({"entity": "order_id", "start": at, "end": at + 8,
                             "value": "123-4567", "extractor": "DIETClassifier"})
        at = text.find("kettle")
        if at >= 0:  # an entity only the model finds, so its offsets are the client's doing
            entities.append({"entity": "product", "start": at, "end": at + 6,
                             "value": "kettle", "extractor": "DIETClassifier"})
        return {"text": text, "intent": ranking[0], "intent_ranking": ranking,
                "entities": entities}

    async def parse(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.texts.append(body["text"])
        text = body["text"].strip()  # Rasa's UserMessage strips; offsets are into the rest
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if self.mode == "error":
                return web.json_response({"error": "boom"}, status=500)
            return web.json_response(self.answer(text))
        finally:
            self.in_flight -= 1


@dataclass
class Served:
    fake: FakeRasa
    url: str
    runner: web.AppRunner


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(fake: FakeRasa, port: int) -> web.AppRunner:
    app = web.Application()
    app.router.add_post("/model/parse", fake.parse)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


@pytest.fixture
async def rasa() -> AsyncIterator[Served]:
    fake = FakeRasa()
    port = free_port()
    runner = await serve(fake, port)
    served = Served(fake, f"http://127.0.0.1:{port}", runner)
    yield served
    await served.runner.cleanup()


class Embedded:
    """Stands in for the embedded backend: always answers, and counts what it was asked."""

    name = "embedded"

    def __init__(self) -> None:
        self.calls = 0

    async def parse(self, text: str) -> Parse:
        self.calls += 1
        intent = Ranked("complaint", 0.5)
        return Parse(text, "en", intent, (intent,), Ranked("other", 0.5),
                     Sentiment("neutral", 0.0), "P3")

    async def parse_many(self, texts: list[str]) -> list[Parse]:
        return [await self.parse(t) for t in texts]

    def health(self) -> dict[str, Any]:
        return {"backend": self.name, "status": "ok"}

    async def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- RasaInterpreter -------------------------------------------------------------------------


async def test_maps_rasa_answer_to_contract_parse(rasa: Served) -> None:
    client = RasaInterpreter(rasa.url)
    try:
        parse = await client.parse("I was charged twice for order 123-4567")
    finally:
        await client.close()
    data = parse.to_dict()
    assert set(data) >= {"text", "language", "intent", "intent_ranking", "category",
                         "sentiment", "urgency", "entities"}
    assert data["intent"]["name"] == "complaint"
    assert data["category"]["name"] == "billing"
    assert data["sentiment"]["label"] in {"negative", "neutral", "positive"}
    assert data["urgency"] in {"P1", "P2", "P3", "P4"}
    order = [e for e in data["entities"] if e["entity"] == "order_id"]
    assert order and order[0]["value"] == "123-4567"
    assert data["text"][order[0]["start"]:order[0]["end"]] == "123-4567"


async def test_leading_slash_is_not_read_as_an_intent_name(rasa: Served) -> None:
    client = RasaInterpreter(rasa.url)
    try:
        started = await client.parse("/start")
        forced = await client.parse("  /greet")
        order = await client.parse("/order 123-4567 charged twice for the kettle")
        padded = await client.parse("  \n charged twice for 123-4567, the kettle ")
    finally:
        await client.close()
    assert not any(t.startswith("/") for t in rasa.fake.texts)
    assert started.intent.name != "start"
    assert started.text == "/start"
    assert forced.text == "  /greet"
    # Offsets point into the customer's text, not the guarded text that was sent.
    for parse in (order, padded):
        for name, value in (("order_id", "123-4567"), ("product", "kettle")):
            ent = next(e for e in parse.entities if e.entity == name)
            assert parse.text[ent.start:ent.end] == value


async def test_empty_and_huge_texts_give_valid_bounded_parses(rasa: Served) -> None:
    client = RasaInterpreter(rasa.url)
    try:
        empty = await client.parse("")
        blank = await client.parse("   \n")
        huge = await client.parse("my parcel is late " * 10_000)
    finally:
        await client.close()
    for parse in (empty, blank, huge):
        assert isinstance(parse, Parse)
        assert parse.intent.name
    assert max(len(t) for t in rasa.fake.texts) <= MAX_CHARS + 1
    assert len(huge.text) <= MAX_CHARS


async def test_parse_many_keeps_order_and_bounds_concurrency(rasa: Served) -> None:
    rasa.fake.delay = 0.02
    client = RasaInterpreter(rasa.url)
    texts = [f"my parcel {i} never came" if i % 2 else f"charged twice #{i}" for i in range(40)]
    try:
        parses = await client.parse_many(texts)
    finally:
        await client.close()
    assert [p.text for p in parses] == texts
    assert [p.category.name if p.category else None for p in parses] == [
        "delivery" if i % 2 else "billing" for i in range(40)
    ]
    assert 1 < rasa.fake.max_in_flight <= 8


async def test_server_error_timeout_and_refusal_raise_unavailable(rasa: Served) -> None:
    rasa.fake.mode = "error"
    client = RasaInterpreter(rasa.url, timeout=0.3)
    try:
        with pytest.raises(RasaUnavailable, match="HTTP 500"):
            await client.parse("hello")
        assert client.health()["status"] == "degraded"
        rasa.fake.mode, rasa.fake.delay = "ok", 1.0
        with pytest.raises(RasaUnavailable, match="timeout"):
            await client.parse("hello")
        with pytest.raises(RasaUnavailable):
            await client.parse_many(["hello"] * 20)
    finally:
        await client.close()
    refused = RasaInterpreter(f"http://127.0.0.1:{free_port()}", timeout=1.0)
    try:
        with pytest.raises(RasaUnavailable):
            await refused.parse("hello")
    finally:
        await refused.close()


# --- FallbackInterpreter ---------------------------------------------------------------------


async def test_fallback_switches_once_and_recovers_after_retry_period(
    rasa: Served, caplog: pytest.LogCaptureFixture
) -> None:
    clock, embedded = Clock(), Embedded()
    nlu = FallbackInterpreter(RasaInterpreter(rasa.url, timeout=1.0), embedded,
                              retry_after=5.0, clock=clock)
    caplog.set_level(logging.INFO, logger="nlu.fallback")
    try:
        first = await nlu.parse("charged twice")
        assert first.category is not None and first.category.name == "billing"
        assert nlu.health() == {"backend": "rasa", "status": "ok"}
        assert embedded.calls == 0

        rasa.fake.mode = "error"
        for _ in range(5):
            parse = await nlu.parse("charged twice")
            assert parse.intent.name == "complaint"
        await nlu.parse_many(["a", "b", "c"])
        health = nlu.health()
        assert health["status"] == "degraded"
        assert health["backend"] == "rasa" and health["fallback"] == "embedded"
        assert "500" in health["reason"]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        # Within the retry period the broken primary is not asked again: the ok parse and the
        # one that failed are all it saw.
        assert len(rasa.fake.texts) == 2
        assert embedded.calls == 5 + 3

        rasa.fake.mode = "ok"
        await nlu.parse("still within the period")
        assert nlu.health()["status"] == "degraded"
        clock.now += 5.0
        parse = await nlu.parse("I was charged twice")
        assert parse.category is not None and parse.category.name == "billing"
        assert nlu.health() == {"backend": "rasa", "status": "ok"}
        infos = [r for r in caplog.records if r.levelno == logging.INFO and "back" in r.message]
        assert len(infos) == 1
    finally:
        await nlu.close()


async def test_fallback_when_server_goes_away_and_comes_back(rasa: Served) -> None:
    clock, embedded = Clock(), Embedded()
    port = int(rasa.url.rsplit(":", 1)[1])
    nlu = FallbackInterpreter(RasaInterpreter(rasa.url, timeout=1.0), embedded,
                              retry_after=1.0, clock=clock)
    try:
        first = (await nlu.parse_many(["charged twice"]))[0].category
        assert first is not None and first.name == "billing"
        await rasa.runner.cleanup()
        parses = await nlu.parse_many(["my parcel is late", "hi"])
        assert [p.text for p in parses] == ["my parcel is late", "hi"]
        assert nlu.health()["status"] == "degraded"
        assert embedded.calls == 2

        rasa.runner = await serve(rasa.fake, port)
        clock.now += 1.0
        parses = await nlu.parse_many(["my parcel is late"])
        assert parses[0].category is not None and parses[0].category.name == "delivery"
        assert nlu.health()["status"] == "ok"
    finally:
        await nlu.close()


async def test_only_one_probe_while_degraded(rasa: Served) -> None:
    clock, embedded = Clock(), Embedded()
    rasa.fake.mode = "error"
    nlu = FallbackInterpreter(RasaInterpreter(rasa.url), embedded, retry_after=5.0, clock=clock)
    try:
        await nlu.parse("x")
        clock.now += 5.0
        rasa.fake.delay = 0.1
        await asyncio.gather(*(nlu.parse("y") for _ in range(10)))
        # One probe after the period; the nine others went straight to the fallback.
        assert len(rasa.fake.texts) == 2
        assert embedded.calls == 11
    finally:
        await nlu.close()
