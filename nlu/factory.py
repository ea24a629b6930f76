"""Builds the configured Interpreter (CONTRACT §2: CARELOOP_NLU_BACKEND embedded | rasa)."""

from __future__ import annotations

from nlu.embedded import EmbeddedInterpreter
from nlu.types import Interpreter

BACKENDS = ("embedded", "rasa")


def make_interpreter(
    backend: str = "embedded", rasa_url: str = "http://127.0.0.1:5005"
) -> Interpreter:
    """`embedded`: in-process model. `rasa`: the Rasa server, falling back to the embedded
    model whenever Rasa is down or slow, so the bot keeps understanding customers."""
    name = (backend or "embedded").strip().lower()
    if name == "embedded":
        return EmbeddedInterpreter()
    if name == "rasa":
        try:
            # Imported lazily: the embedded default must not depend on the Rasa client.
            from nlu.fallback import FallbackInterpreter
            from nlu.rasa_client import RasaInterpreter
        except ImportError as exc:
            raise RuntimeError(
                f"NLU backend 'rasa' is not available in this installation ({exc}); "
                "use CARELOOP_NLU_BACKEND=embedded"
            ) from exc
        return FallbackInterpreter(
            primary=RasaInterpreter(rasa_url), fallback=EmbeddedInterpreter()
        )
    raise ValueError(f"unknown NLU backend {backend!r}: expected one of {', '.join(BACKENDS)}")
