"""Reads the Rasa 3 training data in nlu/data/ — the one source both backends train on."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from nlu.types import Entity

DATA_DIR = Path(__file__).resolve().parent / "data"

# [visible text](entity) or [visible text](entity:synonym) or [visible text]{"entity": ...}
_ANNOTATION = re.compile(r"\[([^\]\n]+)\](?:\(([\w-]+)(?::[^)]*)?\)|\{([^}\n]*)\})")
_JSON_ENTITY = re.compile(r'"entity"\s*:\s*"([\w-]+)"')


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    intent: str
    entities: tuple[Entity, ...] = ()


@dataclass(slots=True)
class TrainingData:
    examples: list[Example] = field(default_factory=list)
    lookups: dict[str, list[str]] = field(default_factory=dict)
    regexes: dict[str, list[str]] = field(default_factory=dict)
    synonyms: dict[str, list[str]] = field(default_factory=dict)
    fingerprint: str = ""

    @property
    def intents(self) -> list[str]:
        return sorted({e.intent for e in self.examples})


def strip_annotations(raw: str) -> tuple[str, tuple[Entity, ...]]:
    """'order [123-4567](order_id)' -> ('order 123-4567', (Entity(order_id, 0+6..),))."""
    out: list[str] = []
    ents: list[Entity] = []
    pos = 0
    length = 0
    for m in _ANNOTATION.finditer(raw):
        before = raw[pos : m.start()]
        out.append(before)
        length += len(before)
        value = m.group(1)
        name = m.group(2)
        if name is None:
            jm = _JSON_ENTITY.search(m.group(3) or "")
            name = jm.group(1) if jm else None
        if name:
            ents.append(Entity(name, value, length, length + len(value)))
        out.append(value)
        length += len(value)
        pos = m.end()
    out.append(raw[pos:])
    return "".join(out), tuple(ents)


def _lines(block: object) -> list[str]:
    if not isinstance(block, str):
        return []
    items = []
    for line in block.splitlines():
        line = line.strip()
        if line.startswith("- "):
            items.append(line[2:].strip())
        elif line == "-":
            continue
    return [i for i in items if i]


def data_files(data_dir: Path = DATA_DIR) -> list[Path]:
    return sorted(p for p in data_dir.glob("*.yml") if p.is_file())


def fingerprint(files: list[Path]) -> str:
    """sha256 over the names and bytes of the data files: the model cache key."""
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def parse_nlu_yaml(text: str, into: TrainingData) -> None:
    doc = yaml.safe_load(text) or {}
    for item in doc.get("nlu") or []:
        if not isinstance(item, dict):
            continue
        examples = _lines(item.get("examples"))
        if "intent" in item:
            intent = str(item["intent"])
            for raw in examples:
                plain, ents = strip_annotations(raw)
                into.examples.append(Example(plain, intent, ents))
        elif "lookup" in item:
            into.lookups.setdefault(str(item["lookup"]), []).extend(examples)
        elif "regex" in item:
            into.regexes.setdefault(str(item["regex"]), []).extend(examples)
        elif "synonym" in item:
            into.synonyms.setdefault(str(item["synonym"]), []).extend(examples)


def load_training_data(data_dir: Path = DATA_DIR) -> TrainingData:
    files = [p for p in data_files(data_dir) if p.name != "domain.yml"]
    return _load_cached(tuple(files), fingerprint(files))


@lru_cache(maxsize=4)
def _load_cached(files: tuple[Path, ...], digest: str) -> TrainingData:
    data = TrainingData(fingerprint=digest)
    for p in files:
        parse_nlu_yaml(p.read_text(encoding="utf-8"), data)
    return data
