"""An interpreter that prefers one backend (Rasa) and falls back to another (embedded).

Rasa runs as a separate process that can be restarting, retraining or gone; a customer's message
must still be understood. So any failure of the primary switches to the fallback, says so once
in the log and in health(), and the primary is probed again every `retry_after` seconds, so the
service recovers without anyone restarting it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from nlu.types import Interpreter, Parse

log = logging.getLogger(__name__)

T = TypeVar("T")


class FallbackInterpreter:
    """Interpreter protocol over a primary and a fallback interpreter."""

    def __init__(
        self,
        primary: Interpreter,
        fallback: Interpreter,
        retry_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.name = primary.name
        self._retry_after = retry_after
        self._clock = clock
        self._reason: str | None = None  # set while degraded
        self._retry_at = 0.0

    @property
    def degraded(self) -> bool:
        return self._reason is not None

    def _should_try_primary(self) -> bool:
        if self._reason is None:
            return True
        now = self._clock()
        if now < self._retry_at:
            return False
        # One probe per period: concurrent callers keep using the fallback instead of all
        # waiting for the same timeout against a server that is probably still down.
        self._retry_at = now + self._retry_after
        return True

    def _primary_failed(self, error: Exception) -> None:
        reason = getattr(error, "reason", None) or f"{type(error).__name__}: {error}"
        self._retry_at = self._clock() + self._retry_after
        if self._reason is None:
            log.warning(
                "NLU backend %s unavailable (%s); using %s, retrying every %.0fs",
                self.primary.name, reason, self.fallback.name, self._retry_after,
            )
        self._reason = reason

    def _primary_answered(self) -> None:
        if self._reason is not None:
            log.info("NLU backend %s is back; leaving %s", self.primary.name, self.fallback.name)
            self._reason = None

    async def _run(
        self, on_primary: Callable[[], Awaitable[T]], on_fallback: Callable[[], Awaitable[T]]
    ) -> T:
        if self._should_try_primary():
            try:
                result = await on_primary()
            except Exception as e:
                # Interpreters never raise because of a text, so any error means the primary
                # itself is unusable right now (refused, timed out, 5xx, bad answer).
                self._primary_failed(e)
            else:
                self._primary_answered()
                return result
        return await on_fallback()

    async def parse(self, text: str) -> Parse:
        return await self._run(lambda: self.primary.parse(text), lambda: self.fallback.parse(text))

    async def parse_many(self, texts: list[str]) -> list[Parse]:
        return await self._run(
            lambda: self.primary.parse_many(texts), lambda: self.fallback.parse_many(texts)
        )

    def health(self) -> dict[str, Any]:
        if self._reason is None:
            return {"backend": self.primary.name, "status": "ok"}
        return {
            "backend": self.primary.name,
            "status": "degraded",
            "fallback": self.fallback.name,
            "reason": self._reason,
        }

    async def close(self) -> None:
        try:
            await self.primary.close()
        finally:
            await self.fallback.close()
