"""The parse of CONTRACT §6 and the Interpreter protocol every backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

INTENTS: tuple[str, ...] = (
    "complaint",
    "suggestion",
    "praise",
    "check_status",
    "request_human",
    "question",
    "greet",
    "goodbye",
    "affirm",
    "deny",
    "out_of_scope",
)

CATEGORIES: tuple[str, ...] = (
    "service_attitude",
    "service_speed",
    "product_quality",
    "product_safety",
    "billing",
    "pricing",
    "delivery",
    "returns",
    "store_environment",
    "website_app",
    "other",
)

PRIORITIES: tuple[str, ...] = ("P1", "P2", "P3", "P4")

# Training data names complaint categories as intents `complaint_<category>` so that one
# classifier (embedded or Rasa's DIET) learns both at once; the parse splits them again.
COMPLAINT_PREFIX = "complaint_"


def split_intent(name: str) -> tuple[str, str | None]:
    """`complaint_billing` -> ("complaint", "billing"); `praise` -> ("praise", None)."""
    if name.startswith(COMPLAINT_PREFIX):
        category = name[len(COMPLAINT_PREFIX):]
        return "complaint", category if category in CATEGORIES else "other"
    if name == "complaint":
        return "complaint", "other"
    return (name if name in INTENTS else "out_of_scope"), None


@dataclass(frozen=True, slots=True)
class Ranked:
    name: str
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "confidence": round(float(self.confidence), 4)}


@dataclass(frozen=True, slots=True)
class Sentiment:
    label: str  # negative | neutral | positive
    score: float  # [-1, 1]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": round(float(self.score), 4)}


@dataclass(frozen=True, slots=True)
class Entity:
    entity: str  # order_id, ticket_id, amount, email, phone, product, store, ...
    value: str
    start: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        return {"entity": self.entity, "value": self.value, "start": self.start, "end": self.end}


@dataclass(frozen=True, slots=True)
class Parse:
    text: str
    language: str
    intent: Ranked
    intent_ranking: tuple[Ranked, ...]
    category: Ranked | None
    sentiment: Sentiment
    urgency: str  # P1..P4
    entities: tuple[Entity, ...] = field(default_factory=tuple)

    def entity(self, name: str) -> str | None:
        """The first value of one entity type, or None."""
        for e in self.entities:
            if e.entity == name:
                return e.value
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "language": self.language,
            "intent": self.intent.to_dict(),
            "intent_ranking": [r.to_dict() for r in self.intent_ranking],
            "category": self.category.to_dict() if self.category else None,
            "sentiment": self.sentiment.to_dict(),
            "urgency": self.urgency,
            "entities": [e.to_dict() for e in self.entities],
        }


@runtime_checkable
class Interpreter(Protocol):
    """What the bot, the monitors and triage ask. Never raises on any text."""

    name: str

    async def parse(self, text: str) -> Parse: ...

    async def parse_many(self, texts: list[str]) -> list[Parse]: ...

    def health(self) -> dict[str, Any]:
        """For /healthz: at least {"backend": name, "status": "ok" | "degraded", ...}."""
        ...

    async def close(self) -> None: ...
