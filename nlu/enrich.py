"""Turns a backend's raw intent ranking into the full parse of CONTRACT §6.

Both backends (embedded and Rasa) call `complete_parse`, so language, sentiment, urgency, rule
entities, the complaint/category split and the out_of_scope threshold are identical whichever
model produced the ranking.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from nlu.entities import regex_entities, resolve_overlaps
from nlu.language import detect_language
from nlu.sentiment import sentiment
from nlu.types import Entity, Parse, Ranked, split_intent
from nlu.urgency import urgency

# Below this top-intent confidence the message is treated as out_of_scope: the classifier
# always picks *something*, and a weak pick on off-topic chat does more harm (a bogus ticket)
# than asking the customer to rephrase. Chosen by cross-validation on nlu.yml (see docs/nlu.md).
OOS_THRESHOLD = 0.30
MAX_RANKING = 10
_RULE_TYPES = frozenset({"order_id", "ticket_id", "amount", "email", "phone"})
# Classification and sentiment look only at the start of a very long text; entity offsets are
# computed on the original string so they stay valid however long it is.
CLASSIFY_LIMIT = 2000

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u202a\u202b"
                                     "\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))


def clean_for_model(text: str) -> str:
    """What the classifiers see: bounded, NFKC-folded (full-width → ASCII), no invisibles."""
    head = text[:CLASSIFY_LIMIT]
    if head.isascii():  # ASCII is its own NFKC form and holds no invisibles
        if head.isprintable():
            return head
    else:
        head = unicodedata.normalize("NFKC", head).translate(_ZERO_WIDTH)
    if head.isprintable():  # the common case, checked in C
        return head
    # Control characters and lone surrogates (binary junk) become spaces.
    return "".join(
        ch if (ch.isprintable() or ch in "\n\t") and not 0xD800 <= ord(ch) <= 0xDFFF else " "
        for ch in head
    )


@lru_cache(maxsize=256)
def _split(name: str) -> tuple[str, str | None]:
    return split_intent(name)


def merge_ranking(
    intent_ranking: list[tuple[str, float]],
) -> tuple[list[Ranked], Ranked | None]:
    """Fold `complaint_<cat>` entries into one `complaint` entry whose confidence is the best
    complaint_* entry; the category is that entry, its confidence the share it holds among the
    complaint mass.

    The best entry, not the sum: with eleven complaint classes against one `question` class, a
    summed complaint mass wins every uncertain message ("help me check the cancellation fee"
    spreads 0.1 over several complaint classes and loses 0.3 on question), which filed retail
    questions as complaints and cost out_of_scope recall (docs/nlu.md)."""
    totals: dict[str, float] = {}
    categories: dict[str, float] = {}
    for name, conf in intent_ranking:
        c = float(conf) if isinstance(conf, int | float) and math.isfinite(conf) else 0.0
        c = min(max(c, 0.0), 1.0)
        intent, cat = _split(str(name))
        if cat is not None:
            categories[cat] = categories.get(cat, 0.0) + c
            totals[intent] = max(totals.get(intent, 0.0), categories[cat])
        else:
            totals[intent] = totals.get(intent, 0.0) + c
    ranked = sorted(
        (Ranked(n, min(c, 1.0)) for n, c in totals.items()), key=lambda r: -r.confidence
    )[:MAX_RANKING]
    category: Ranked | None = None
    if categories:
        best = max(categories.items(), key=lambda kv: kv[1])
        mass = sum(categories.values())
        category = Ranked(best[0], best[1] / mass if mass > 0 else 0.0)
    return ranked, category


def complete_parse(
    text: str,
    intent_ranking: list[tuple[str, float]],
    model_entities: list[Entity] | None = None,
) -> Parse:
    """The full Parse for `text` from a backend's raw ranking (names may be complaint_<cat>)."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    ranked, category = merge_ranking(intent_ranking)
    return finish_parse(text, clean_for_model(text), ranked, category, model_entities)


def merge_rankings(
    classes: Sequence[str], probabilities: np.ndarray
) -> list[tuple[list[Ranked], Ranked | None]]:
    """`merge_ranking` of every row of a (texts, classes) probability matrix, each row ranked
    best first (ties in class order). When every intent and every complaint category has one
    class (the embedded model's case) the fold is a few array operations for the batch;
    otherwise each row goes through merge_ranking."""
    order = np.argsort(-probabilities, axis=1, kind="stable")
    splits = [_split(str(name)) for name in classes]
    intents = [i for i, cat in splits if cat is None]
    cats = [cat for _, cat in splits if cat is not None]
    if len(set(intents)) < len(intents) or len(set(cats)) < len(cats) or "complaint" in intents:
        return [
            merge_ranking([(classes[k], float(probabilities[r, k])) for k in row])
            for r, row in enumerate(order.tolist())
        ]
    p = np.take_along_axis(probabilities, order, axis=1)
    conf = np.clip(np.where(np.isfinite(p), p, 0.0), 0.0, 1.0)
    complaint = np.array([cat is not None for _, cat in splits], dtype=bool)[order]
    # One class per category: a category's mass is its class's confidence, the complaint entry
    # the best of them (the first in rank order), the complaint mass their sum in rank order.
    first = complaint & (np.cumsum(complaint, axis=1) == 1)
    keep = ~complaint | first
    mass = np.zeros(len(p))
    for k in range(p.shape[1]):
        mass += np.where(complaint[:, k], conf[:, k], 0.0)
    names = [i if cat is None else cat for i, cat in splits]
    out: list[tuple[list[Ranked], Ranked | None]] = []
    for row, c, kept, is_first, total in zip(
        order.tolist(), conf.tolist(), keep.tolist(), first.tolist(), mass.tolist(), strict=True
    ):
        ranked: list[Ranked] = []
        category: Ranked | None = None
        for k, value, keeps, lead in zip(row, c, kept, is_first, strict=True):
            if lead:
                category = Ranked(names[k], value / total if total > 0 else 0.0)
                ranked.append(Ranked("complaint", value))
            elif keeps:
                ranked.append(Ranked(names[k], value))
        out.append((ranked[:MAX_RANKING], category))
    return out


def finish_parse(
    text: str,
    cleaned: str,
    ranked: list[Ranked],
    category: Ranked | None,
    model_entities: list[Entity] | None = None,
) -> Parse:
    """The parse from a merged ranking (`merge_ranking`) and `cleaned = clean_for_model(text)`:
    the out_of_scope threshold, language, sentiment, urgency and entities."""
    if not ranked or not cleaned.strip():
        ranked = [Ranked("out_of_scope", 1.0)]
    top = ranked[0]
    if top.name != "out_of_scope" and top.confidence < OOS_THRESHOLD:
        oos = next((r.confidence for r in ranked if r.name == "out_of_scope"), 0.0)
        top = Ranked("out_of_scope", max(oos, 1.0 - top.confidence))
    if top.name != "complaint":
        category = None
    elif category is None:
        category = Ranked("other", top.confidence)

    language = detect_language(cleaned)
    feeling = sentiment(cleaned, language)
    level = urgency(cleaned, top.name, category.name if category else None)

    # Model entities must point into the text. The rules are exact for ids, amounts and
    # contacts, so model entities of those types only compete with them (longest wins: a learned
    # tagger may clip "123-45" out of "123-4567"); other types (product, store, ...) go first.
    valid = [e for e in (model_entities or []) if 0 <= e.start < e.end <= len(text)]
    if valid:
        preferred = [e for e in valid if e.entity not in _RULE_TYPES]
        competing = [e for e in valid if e.entity in _RULE_TYPES]
        entities = resolve_overlaps(regex_entities(text) + competing, prefer=preferred)
    else:  # the rule entities are already resolved: resolving them again changes nothing
        entities = regex_entities(text)
    return Parse(
        text=text,
        language=language,
        intent=top,
        intent_ranking=tuple(ranked),
        category=category,
        sentiment=feeling,
        urgency=level,
        entities=tuple(entities),
    )

