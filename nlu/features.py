"""Text features for the embedded classifier: TF-IDF over character n-grams and words.

Character n-grams (1–4, within word boundaries) carry Chinese (no spaces to split on), typos
("delivary"), slang and emoji; word uni/bigrams carry English phrasing ("charged twice").
The analyzers are plain functions so training (via scikit-learn) and the hand-rolled
single-text path produce exactly the same features.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import partial
from itertools import pairwise
from operator import is_not

import numpy as np

_DIGITS = re.compile(r"\d")
_WORD = re.compile(r"[a-z0-9']+|[^\sa-z0-9'\w]|\w", re.IGNORECASE)
_SPACES = re.compile(r"\s+")
CHAR_NGRAMS = (1, 4)
_known = partial(is_not, None)


def normalise(text: str) -> str:
    # Numbers differ in every message ("order 123-4567", "¥200"); their shape matters, not
    # their value, so every digit becomes 0.
    return _SPACES.sub(" ", _DIGITS.sub("0", text.lower())).strip()


def char_ngrams(text: str) -> list[str]:
    """Like scikit-learn's char_wb: n-grams inside space-padded words."""
    lo, hi = CHAR_NGRAMS
    out: list[str] = []
    for word in normalise(text).split(" "):
        if not word:
            continue
        padded = f" {word} "
        n_chars = len(padded)
        for n in range(lo, min(hi, n_chars) + 1):
            out += [padded[i : i + n] for i in range(n_chars - n + 1)]
    return out


def word_ngrams(text: str) -> list[str]:
    """Latin words, single CJK characters and symbols (emoji, '?'), with their bigrams."""
    toks = _WORD.findall(normalise(text))
    out = list(toks)
    out.extend(f"{a} {b}" for a, b in pairwise(toks))
    return out


class FastTfidf:
    """The transform of a fitted TfidfVectorizer(sublinear_tf=True, norm='l2') for one text,
    without scikit-learn's per-call overhead: returns (column indices, values)."""

    def __init__(self, vocabulary: dict[str, int], idf: np.ndarray, analyzer: str) -> None:
        self.vocabulary = vocabulary
        self.idf = idf.astype(np.float64)
        self.analyze = char_ngrams if analyzer == "char" else word_ngrams

    def transform_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        # map/filter run in C; unknown n-grams (None) are dropped.
        counts = Counter(filter(_known, map(self.vocabulary.get, self.analyze(text))))
        if not counts:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        idx = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        vals = (np.log(tf) + 1.0) * self.idf[idx]
        norm = float(np.sqrt(vals @ vals))
        return idx, (vals / norm if norm > 0 else vals)
