"""Sentiment: VADER for English (built for social media: emoji, caps, "!!!", slang) and a
lexicon scorer with negation, degree words and contrast for Chinese.

Both return a score in [-1, 1]; the label uses VADER's customary ±0.05 band for neutral.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from nlu import zh_lexicon as lex
from nlu.language import is_cjk
from nlu.types import Sentiment

NEUTRAL_BAND = 0.05
_SCAN = 2000  # sentiment of a long paste is decided by its beginning; bounds the cost

# Words customers use about shops that VADER's general lexicon lacks or weighs oddly
# (VADER's scale is -4..4).
_VADER_EXTRA: dict[str, float] = {
    "broken": -2.0, "damaged": -2.0, "defective": -2.5, "faulty": -2.2, "scam": -3.0,
    "scammed": -3.0, "ripoff": -2.8, "rip-off": -2.8, "overcharged": -2.5, "refund": -0.3,
    "late": -1.2, "delayed": -1.5, "missing": -1.5, "lost": -1.5, "rude": -2.5, "dirty": -2.0,
    "filthy": -2.8, "smelly": -2.0, "unhelpful": -2.0, "useless": -2.5, "crashes": -1.8,
    "crashing": -1.8, "crashed": -1.8, "glitch": -1.5, "glitchy": -1.8, "buggy": -1.8,
    "waited": -0.8, "waiting": -0.6, "wrong": -1.8, "never": -0.5, "trash": -2.5,
    "garbage": -2.5, "worst": -3.2, "meh": -0.8, "mid": -0.8, "sucks": -2.0, "smh": -1.5,
    "wtf": -2.0, "ugh": -1.5, "unacceptable": -2.8, "ridiculous": -2.2, "joke": -0.8,
    "overpriced": -2.2, "expired": -1.8, "moldy": -2.5, "mouldy": -2.5, "stale": -1.5,
    "ghosted": -1.8, "mislabeled": -1.5, "leaking": -1.5, "leaked": -1.5, "torn": -1.5,
    "cracked": -1.8, "shattered": -2.0, "refunded": 0.8, "fast": 1.2, "quick": 1.0,
    "smooth": 1.2, "lit": 1.5, "fire": 0.0, "goat": 1.5, "slay": 1.5, "legit": 1.2,
    "obsessed": 1.8, "10/10": 2.5, "lifesaver": 2.5, "helpful": 2.0, "friendly": 2.0,
}


@lru_cache(maxsize=1)
def _vader() -> SentimentIntensityAnalyzer:
    analyzer = SentimentIntensityAnalyzer()
    analyzer.lexicon.update(_VADER_EXTRA)
    return analyzer


def _label(score: float) -> str:
    if score >= NEUTRAL_BAND:
        return "positive"
    if score <= -NEUTRAL_BAND:
        return "negative"
    return "neutral"


def english_score(text: str) -> float:
    try:
        return float(_vader().polarity_scores(text[:_SCAN])["compound"])
    except Exception:  # VADER trips over some odd inputs; a neutral guess beats a crash
        return 0.0


# --- Chinese --------------------------------------------------------------------------------

_CLAUSE = re.compile(r"[，。！？；、,.!?;~～\n]+")
# Mild negative words (weight <= 1.5: 旧, 小, 慢, 贵, 一般, 吵) mostly describe one detail
# ("房间小了点", "早餐一般") and turn up in satisfied and unhappy messages alike; strong ones
# (失望, 垃圾, 差评) state the verdict. A mild word still makes a text negative on its own; only
# next to praise does it count for less.
_MILD_NEGATIVE, _MILD_FACTOR = 1.5, 0.6
_WEIGHTS: dict[str, float] = {w: v for w, v in lex.POSITIVE.items()}
_WEIGHTS.update(
    {w: -v * (_MILD_FACTOR if v <= _MILD_NEGATIVE else 1.0) for w, v in lex.NEGATIVE.items()}
)
_NEG_SET = frozenset(lex.NEGATORS)
_BLOCK_SET = frozenset(lex.BLOCKERS)
_CONTRAST = frozenset(lex.CONTRAST)
_RESERVE = frozenset(lex.RESERVATION)
_SUMMARY = frozenset(lex.SUMMARY)
_HYPO = frozenset(lex.HYPOTHETICAL)
_DIMINISH = frozenset(lex.DIMINISH_AFTER)
_VOCAB = (
    set(_WEIGHTS) | _NEG_SET | set(lex.DEGREE) | _BLOCK_SET | _CONTRAST | _RESERVE | _SUMMARY
    | _HYPO | _DIMINISH
)
_REPLY = re.compile("|".join(map(re.escape, lex.MERCHANT_REPLY)))
# How a clause counts, by its role (general Chinese discourse habits, see nlu/zh_lexicon.py).
_AFTER_CONTRAST, _BEFORE_CONTRAST = 1.5, 0.6  # "A，但是B": B is the verdict
_RESERVED = 0.6  # "不错，就是B": B is a minor exception
_SUMMED_UP = 2.0  # "总体来说B"
_HYPOTHESIS = 0.4  # "如果B就好了", "建议B"
_DIMINISHED = 0.5  # "脏了点"
_EDGE = 1.5


def _sizes_by_first_character() -> dict[str, tuple[int, ...]]:
    sizes: dict[str, set[int]] = {}
    for word in _VOCAB:
        sizes.setdefault(word[0], set()).add(len(word))
    return {ch: tuple(sorted(found, reverse=True)) for ch, found in sizes.items()}


# The lengths of the vocabulary words that start with a character, longest first: most
# characters start none, and the scan then costs one dictionary look-up.
_SIZES = _sizes_by_first_character()


def _tokens(clause: str) -> list[str]:
    """Longest-match scan against the vocabulary; unknown characters come out one by one."""
    out: list[str] = []
    i = 0
    n = len(clause)
    sizes_of = _SIZES.get
    while i < n:
        ch = clause[i]
        for size in sizes_of(ch, ()):
            if size <= n - i:
                piece = clause[i : i + size]
                if piece in _VOCAB:
                    out.append(piece)
                    i += size
                    break
        else:
            out.append(ch)
            i += 1
    return out


def _clause_score(toks: list[str]) -> float:
    negate = False
    degree = 1.0
    gap = 0  # tokens since the last modifier: a negator reaches only a few tokens forward
    factor = 1.0  # the role of what follows: after 但是, after 就是, in a hypothesis
    parts: list[tuple[int, float, float]] = []
    contrast_at = -1
    for idx, tok in enumerate(toks):
        nxt = toks[idx + 1] if idx + 1 < len(toks) else ""
        if tok in _BLOCK_SET:
            continue
        if tok in _CONTRAST:
            if idx > 0:
                contrast_at = idx
            negate, degree = False, 1.0
            continue
        if tok in _RESERVE:
            factor = min(factor, _RESERVED)
            continue
        if tok in _HYPO:
            factor = min(factor, _HYPOTHESIS)
            continue
        if tok in _SUMMARY:
            factor = max(factor, _SUMMED_UP)
            continue
        if tok in _NEG_SET:
            negate = not negate
            gap = 0
            continue
        # "好" is praise alone ("很好") but an intensifier before a sentiment word ("好贵").
        if tok in lex.DEGREE and (tok not in _WEIGHTS or nxt in _WEIGHTS):
            degree *= lex.DEGREE[tok]
            gap = 0
            continue
        weight = _WEIGHTS.get(tok)
        if weight is None:
            gap += 1
            if gap > 3:
                negate, degree = False, 1.0
            continue
        value = weight * degree
        if negate:
            # "不好" is clearly bad; "不差" is only mildly good: negation flips and damps.
            value = -value * (0.9 if weight > 0 else 0.6)
        if nxt in _DIMINISH:
            value *= _DIMINISHED
        parts.append((idx, value, factor))
        negate, degree, gap = False, 1.0, 0
    total = 0.0
    for idx, value, role in parts:
        if contrast_at >= 0:
            value *= _AFTER_CONTRAST if idx > contrast_at else _BEFORE_CONTRAST
        total += value * role
    return total


def chinese_score(text: str) -> float:
    """Clause by clause; a clause opening with 但是/可是 is the verdict over the one before."""
    raw = 0.0
    previous = 0.0
    text = text[:_SCAN]
    reply = _REPLY.search(text)
    if reply and reply.start() > 0:
        text = text[: reply.start()]
    clauses = [c for c in _CLAUSE.split(text) if c.strip()]
    for i, clause in enumerate(clauses):
        toks = _tokens(clause)
        value = _clause_score(toks)
        if len(clauses) > 2 and (i == 0 or i == len(clauses) - 1):
            value *= _EDGE  # the opening and closing clauses usually state the verdict
        if toks and toks[0] in _CONTRAST:
            raw += previous * (_BEFORE_CONTRAST - 1.0)  # take back part of the clause before
            value *= _AFTER_CONTRAST
        raw += value
        previous = value
    bang = min(text.count("!") + text.count("！"), 4)
    raw *= 1.0 + 0.08 * bang
    # Same squashing as VADER's compound, so the two languages share a scale.
    return raw / math.sqrt(raw * raw + 6.0) if raw else 0.0


def score(text: str, language: str | None = None) -> float:
    if not text.strip():
        return 0.0
    lang = language or ("zh" if any(is_cjk(c) for c in text[:200]) else "en")
    if lang != "zh":
        return english_score(text)
    zh = chinese_score(text)
    # Chinese writers mix in English words and emoji; VADER reads those parts.
    latin = re.sub(r"[^\x00-\x7f\U0001F300-\U0001FAFF\u2600-\u27BF]+", " ", text[:_SCAN])
    en = english_score(latin) if re.search(r"[A-Za-z]{2,}|[\U0001F300-\U0001FAFF]", latin) else 0
    combined = zh + 0.5 * en
    return max(-1.0, min(1.0, combined))


def sentiment(text: str, language: str | None = None) -> Sentiment:
    s = score(text, language)
    return Sentiment(_label(s), round(s, 4))
