"""nlu/data is valid Rasa 3 training data covering the whole vocabulary in both languages."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import yaml

from nlu.language import detect_language
from nlu.training_data import DATA_DIR, load_training_data, strip_annotations
from nlu.types import CATEGORIES, INTENTS, split_intent

EXPECTED = {i for i in INTENTS if i != "complaint"} | {f"complaint_{c}" for c in CATEGORIES}


def _doc(name: str) -> dict:
    doc = yaml.safe_load((DATA_DIR / name).read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def test_nlu_yml_is_rasa_3_format() -> None:
    doc = _doc("nlu.yml")
    assert doc["version"] == "3.1"
    assert isinstance(doc["nlu"], list)
    for item in doc["nlu"]:
        kinds = {"intent", "regex", "lookup", "synonym"} & set(item)
        assert len(kinds) == 1, item
        assert isinstance(item["examples"], str)
        lines = [ln for ln in item["examples"].splitlines() if ln.strip()]
        assert lines and all(ln.startswith("- ") for ln in lines), item.get("intent")
    for item in doc["nlu"]:
        if "regex" in item:
            for ln in item["examples"].splitlines():
                if ln.strip():
                    re.compile(ln.strip()[2:])


def test_every_intent_and_category_in_both_languages() -> None:
    data = load_training_data()
    assert set(data.intents) == EXPECTED
    per = Counter((e.intent, detect_language(e.text)) for e in data.examples)
    for intent in EXPECTED:
        assert per[(intent, "en")] >= 30, intent
        assert per[(intent, "zh")] >= 30, intent
        assert split_intent(intent)[0] in INTENTS


def test_no_duplicate_examples_across_intents() -> None:
    seen: dict[str, str] = {}
    for e in load_training_data().examples:
        key = e.text.strip().lower()
        assert seen.setdefault(key, e.intent) == e.intent, (e.text, seen[key], e.intent)


def test_entity_annotations_point_at_their_text() -> None:
    data = load_training_data()
    domain_entities = set(_doc("domain.yml")["entities"])
    annotated = 0
    for e in data.examples:
        for ent in e.entities:
            annotated += 1
            assert e.text[ent.start : ent.end] == ent.value
            assert ent.entity in domain_entities
    assert annotated >= 50
    assert {"product", "store"} <= set(data.lookups)


def test_domain_lists_the_trained_intents() -> None:
    domain = _doc("domain.yml")
    assert domain["version"] == "3.1"
    assert set(domain["intents"]) == EXPECTED
    assert {"order_id", "ticket_id", "amount", "product", "store"} <= set(domain["entities"])


def test_strip_annotations() -> None:
    text, ents = strip_annotations("order [123-4567](order_id) at [万达店]{\"entity\": \"store\"}")
    assert text == "order 123-4567 at 万达店"
    assert [(e.entity, e.value, e.start, e.end) for e in ents] == [
        ("order_id", "123-4567", 6, 14),
        ("store", "万达店", 18, 21),
    ]


def test_data_lives_in_the_package() -> None:
    assert DATA_DIR == Path(__file__).resolve().parents[2] / "nlu" / "data"
