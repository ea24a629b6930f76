"""How labels of public dev sets map onto careloop's vocabulary (CONTRACT §5), for
`careloop nlu eval --map NAME` and bench/nlu.py.

A mapping turns a gold label into ours (rows whose label is not in `gold` are dropped unless
`default` is set) and may fold our predictions (`pred`) when the set is coarser than we are,
e.g. Bitext's "review" is either our praise or our suggestion.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LabelMap:
    field: str  # intent | category | sentiment
    gold: dict[str, str]
    pred: dict[str, str] = dataclasses.field(default_factory=dict)
    default: str | None = None  # our label for gold labels not listed (None: drop the row)
    pred_default: str | None = None  # our label for predictions not listed in `pred`

    def map_gold(self, label: str) -> str | None:
        return self.gold.get(label, self.default)

    def map_pred(self, label: str) -> str:
        if label in self.pred:
            return self.pred[label]
        return self.pred_default if self.pred_default is not None else label


_BITEXT_INTENT = {
    "complaint": "complaint",
    "review": "feedback",
    "contact_human_agent": "request_human",
    "contact_customer_service": "request_human",
    "track_refund": "check_status",
    "payment_issue": "complaint",
    "get_refund": "complaint",
    "delivery_period": "complaint",
}

MAPPINGS: dict[str, LabelMap] = {
    # Bitext customer-service intents that have a counterpart in our vocabulary.
    "bitext": LabelMap(
        field="intent",
        gold=_BITEXT_INTENT,
        pred={"praise": "feedback", "suggestion": "feedback"},
    ),
    # Complaint or not, over every Bitext row.
    "bitext_complaint": LabelMap(
        field="intent",
        gold={k: "complaint" for k, v in _BITEXT_INTENT.items() if v == "complaint"},
        default="not_complaint",
        pred={"complaint": "complaint"},
        pred_default="not_complaint",
    ),
    "bitext_category": LabelMap(
        field="category",
        gold={"payment_issue": "billing", "get_refund": "returns", "delivery_period": "delivery"},
    ),
    # CLINC150: oos against everything else (banking, travel, small talk: none of it retail).
    "clinc_oos": LabelMap(
        field="intent",
        gold={"oos": "out_of_scope"},
        default="in_scope",
        pred={"out_of_scope": "out_of_scope"},
        pred_default="in_scope",
    ),
    # Banking77 intents that are retail complaint categories in another industry's words.
    "banking77": LabelMap(
        field="category",
        gold={
            "transaction_charged_twice": "billing",
            "Refund_not_showing_up": "billing",
            "extra_charge_on_statement": "billing",
            "card_payment_not_recognised": "billing",
            "direct_debit_payment_not_recognised": "billing",
            "card_payment_fee_charged": "billing",
            "request_refund": "returns",
            "card_arrival": "delivery",
            "card_delivery_estimate": "delivery",
        },
    ),
    # ChnSentiCorp hotel reviews: 1 positive, 0 negative. A neutral prediction counts as wrong.
    "chnsenticorp": LabelMap(field="sentiment", gold={"1": "positive", "0": "negative"}),
}


def load_mapping(spec: str) -> LabelMap:
    """A built-in name, or a JSON file {"field", "gold", "pred"?, "default"?, "pred_default"?}."""
    if spec in MAPPINGS:
        return MAPPINGS[spec]
    path = Path(spec)
    if not path.is_file():
        raise ValueError(
            f"--map {spec!r} is neither a built-in mapping ({', '.join(MAPPINGS)}) nor a file"
        )
    raw = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or not isinstance(raw.get("gold"), dict):
        raise ValueError(f"--map {spec}: expected a JSON object with a 'gold' object")
    return LabelMap(
        field=str(raw.get("field", "intent")),
        gold={str(k): str(v) for k, v in raw["gold"].items()},
        pred={str(k): str(v) for k, v in (raw.get("pred") or {}).items()},
        default=raw.get("default"),
        pred_default=raw.get("pred_default"),
    )
