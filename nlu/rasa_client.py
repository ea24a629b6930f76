"""The Rasa backend: asks a `rasa run --enable-api` server and completes its answer.

Rasa only classifies (intent, with complaint categories as `complaint_<category>`) and extracts
model entities; language, sentiment, urgency, regex entities and the out_of_scope threshold
come from `nlu.enrich.complete_parse`, exactly as for the embedded backend, so both backends
return the same shape (CONTRACT §6).

A server that cannot answer (refused, timed out, 5xx, garbage) raises `RasaUnavailable`: the
caller (`nlu.fallback.FallbackInterpreter`) decides what to do instead. No text ever raises.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from nlu.types import Entity, Parse

# Customers paste whole e-mails; the intent is in the first few sentences and DIET's cost grows
# with the token count, so a bounded prefix keeps latency predictable.
MAX_CHARS = 4000

# Rasa reads text that starts with "/" as an intent name ("/greet" is forced to greet with
# confidence 1.0; "/start" is sanitised to "start"). A leading zero-width space is not
# whitespace to Python's str.strip() (which Rasa applies), so the slash no longer comes first,
# while the WhitespaceTokenizer drops it together with the slash: the model sees the same words.
_SLASH_GUARD = "\u200b"

# The few concurrent requests a batch keeps in flight: enough to hide round trips, not so
# many that a 2-core Rasa server just queues them.
DEFAULT_CONCURRENCY = 8


class RasaUnavailable(Exception):
    """The Rasa server gave no usable answer; `reason` says why, for health()."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def prepare_text(text: str) -> tuple[str, int]:
    """The text to send, and what to add to Rasa's offsets to point into `text` again.

    Rasa strips the text before parsing and reports entity offsets into the stripped text;
    stripping here makes that explicit, and the guard's length is taken off again.
    """
    stripped = text.strip()
    offset = len(text) - len(text.lstrip())
    if stripped.startswith("/"):
        return _SLASH_GUARD + stripped, offset - len(_SLASH_GUARD)
    return stripped, offset


def _ranking(answer: dict[str, Any]) -> list[tuple[str, float]]:
    ranking: list[tuple[str, float]] = []
    for item in answer.get("intent_ranking") or []:
        name = item.get("name")
        if isinstance(name, str) and name:
            ranking.append((name, float(item.get("confidence") or 0.0)))
    if not ranking:
        # A pipeline without a ranking (or with ranking_length 0) still names the intent.
        intent = answer.get("intent") or {}
        if isinstance(intent.get("name"), str) and intent["name"]:
            ranking.append((intent["name"], float(intent.get("confidence") or 0.0)))
    ranking.sort(key=lambda r: r[1], reverse=True)
    return ranking


def _entities(answer: dict[str, Any], text: str, offset: int) -> list[Entity]:
    """Rasa's entities with offsets into the customer's own text."""
    found: list[Entity] = []
    for item in answer.get("entities") or []:
        try:
            start, end = int(item["start"]) + offset, int(item["end"]) + offset
            name = str(item["entity"])
        except (KeyError, TypeError, ValueError):
            continue
        start, end = max(start, 0), min(end, len(text))
        if start >= end:
            continue
        value = item.get("value")
        # EntitySynonymMapper may replace the value; keep that normalised value as a string.
        found.append(Entity(name, text[start:end] if value is None else str(value), start, end))
    return found


def to_parse(text: str, answer: dict[str, Any], offset: int = 0) -> Parse:
    """Maps one /model/parse answer for `text`; `offset` comes from `prepare_text`."""
    from nlu.enrich import complete_parse  # late: enrich loads lexicons the client need not

    return complete_parse(text, _ranking(answer), _entities(answer, text, offset))


class RasaInterpreter:
    """Interpreter on a Rasa HTTP server; one aiohttp session, created on first use."""

    name = "rasa"

    def __init__(
        self, url: str, timeout: float = 2.0, concurrency: int = DEFAULT_CONCURRENCY
    ) -> None:
        self.url = url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None
        self._last_error: str | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                # Rasa's Sanic keeps connections alive; a pool the size of our fan-out reuses them.
                connector=aiohttp.TCPConnector(limit=self._concurrency * 2),
            )
        return self._session

    async def parse_raw(self, text: str) -> dict[str, Any]:
        """Rasa's own /model/parse answer for an already prepared text."""
        try:
            async with self._client().post(
                f"{self.url}/model/parse", json={"text": text}
            ) as resp:
                if resp.status != 200:
                    body = (await resp.text())[:200]
                    raise RasaUnavailable(f"HTTP {resp.status} from {self.url}: {body}")
                answer = await resp.json(content_type=None)
        except RasaUnavailable as e:
            self._last_error = e.reason
            raise
        except TimeoutError as e:
            self._last_error = f"timeout after {self._timeout.total}s at {self.url}"
            raise RasaUnavailable(self._last_error) from e
        except (aiohttp.ClientError, json.JSONDecodeError, UnicodeDecodeError) as e:
            self._last_error = f"{type(e).__name__} at {self.url}: {e}"
            raise RasaUnavailable(self._last_error) from e
        if not isinstance(answer, dict):
            self._last_error = f"unexpected answer from {self.url}"
            raise RasaUnavailable(self._last_error)
        self._last_error = None
        return answer

    async def parse(self, text: str) -> Parse:
        text = text if isinstance(text, str) else str(text)
        bounded = text[:MAX_CHARS]
        if not bounded.strip():
            # Nothing to classify; the model would only guess. Let enrich decide (out_of_scope).
            return to_parse(bounded, {})
        sent, offset = prepare_text(bounded)
        return to_parse(bounded, await self.parse_raw(sent), offset)

    async def parse_many(self, texts: list[str]) -> list[Parse]:
        gate = asyncio.Semaphore(self._concurrency)

        async def one(text: str) -> Parse:
            async with gate:
                return await self.parse(text)

        # A TaskGroup cancels the rest of the batch as soon as one request finds the server
        # down, instead of letting hundreds more time out one by one.
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(t)) for t in texts]
        except ExceptionGroup as failed:
            # Callers expect the one error a single parse raises, not a group of the same.
            raise failed.exceptions[0] from None
        return [t.result() for t in tasks]

    def health(self) -> dict[str, Any]:
        if self._last_error:
            return {"backend": self.name, "status": "degraded", "reason": self._last_error}
        return {"backend": self.name, "status": "ok"}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
