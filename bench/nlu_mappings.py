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


# Bitext intents with a clear counterpart in our vocabulary (CONTRACT §5), as suggested in
# shared/data/README.md.
_BITEXT_CORE = {
    "complaint": "complaint",
    "review": "feedback",
    "contact_human_agent": "request_human",
    "contact_customer_service": "request_human",
    "track_refund": "check_status",
    "payment_issue": "complaint",
    "get_refund": "complaint",
    "delivery_period": "complaint",
}
# Bitext intents that are plain retail questions or requests: our `question` (nothing is wrong
# yet, the customer wants to know or do something). track_order is here rather than under
# check_status because check_status means "my careloop ticket or refund case", not the parcel.
# registration_problems is left out on purpose: "I can't sign up" is as much a website_app
# complaint as a how-to question, so it is in neither mapped set (only in the all-rows figure).
_BITEXT_QUESTION = (
    "cancel_order", "change_order", "place_order", "track_order",
    "delivery_options", "change_shipping_address", "set_up_shipping_address",
    "check_invoice", "get_invoice", "check_payment_methods", "check_cancellation_fee",
    "check_refund_policy", "newsletter_subscription",
    "create_account", "delete_account", "edit_account", "recover_password", "switch_account",
)
_BITEXT_INTENT = {**_BITEXT_CORE, **dict.fromkeys(_BITEXT_QUESTION, "question")}


def _complaint_or_not(gold: dict[str, str], default: str | None = None) -> LabelMap:
    return LabelMap(
        field="intent",
        gold={k: "complaint" if v == "complaint" else "not_complaint" for k, v in gold.items()},
        default=default,
        pred={"complaint": "complaint"},
        pred_default="not_complaint",
    )


MAPPINGS: dict[str, LabelMap] = {
    # Every Bitext intent that has a counterpart in our vocabulary (26 of 27).
    "bitext": LabelMap(
        field="intent",
        gold=_BITEXT_INTENT,
        pred={"praise": "feedback", "suggestion": "feedback"},
    ),
    # Only the 8 intents of the README's suggested mapping (no `question`).
    "bitext_core": LabelMap(
        field="intent",
        gold=_BITEXT_CORE,
        pred={"praise": "feedback", "suggestion": "feedback"},
    ),
    # Complaint or not, on the mapped rows (the headline figure).
    "bitext_complaint": _complaint_or_not(_BITEXT_INTENT),
    # Complaint or not, on the 8 core intents only.
    "bitext_complaint_core": _complaint_or_not(_BITEXT_CORE),
    # Complaint or not, over every Bitext row (unmapped intents count as not complaint).
    "bitext_complaint_all": _complaint_or_not(_BITEXT_CORE, default="not_complaint"),
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
