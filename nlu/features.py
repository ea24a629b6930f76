"""Text features for the embedded classifier: TF-IDF over character n-grams and words.

Character n-grams (1–5, within word boundaries) carry Chinese (no spaces to split on), typos
("delivary"), slang and emoji; word uni/bigrams carry English phrasing ("charged twice").
The analyzers are plain functions so training (via scikit-learn) and the hand-rolled
paths produce exactly the same features. Scoring goes through `FastTfidf.transform_many`, which
featurises a whole batch with numpy (character n-grams as integer keys, one sorted-array lookup
for all of them) into one sparse matrix; `transform_one` is the plain per-text reference.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from itertools import pairwise, repeat
from operator import is_not

import numpy as np
from scipy.sparse import csr_matrix

try:
    # The kernel behind `csr_matrix @ dense`, called without csr_matrix's per-call format checks
    # (about 60 µs: more than a single text's whole product). Same kernel, same numbers.
    from scipy.sparse._sparsetools import csr_matvecs as _csr_matvecs
except ImportError:  # a scipy that moved it: the public operator
    _csr_matvecs = None

_DIGITS = re.compile(r"\d")
_WORD = re.compile(r"[a-z0-9']+|[^\sa-z0-9'\w]|\w", re.IGNORECASE)
_SPACES = re.compile(r"\s+")
# Up to 5 (1-4 before): +1 point on the Bitext category and Banking77 figures, cross-validation on
# nlu.yml unchanged (docs/nlu.md). The batch path's integer keys need base**5 < 2**62, i.e. an
# alphabet under ~5,400 characters (nlu.yml has ~1,200); a bigger one falls back to the per-text
# path (same features, slower).
CHAR_NGRAMS = (1, 5)
_known = partial(is_not, None)
# Joins the padded words of a batch: no vocabulary term contains it (checked when the key table
# is built), so a window that covers it is no n-gram of any word.
_GAP = "\x00"


def normalise(text: str) -> str:
    # Numbers differ in every message ("order 123-4567", "¥200"); their shape matters, not
    # their value, so every digit becomes 0.
    return _SPACES.sub(" ", _DIGITS.sub("0", text.lower())).strip()


def char_ngrams(text: str) -> list[str]:
    """Like scikit-learn's char_wb: n-grams inside space-padded words."""
    return _char_ngrams_of_normalised(normalise(text))


def _char_ngrams_of_normalised(norm: str) -> list[str]:
    lo, hi = CHAR_NGRAMS
    out: list[str] = []
    for word in norm.split(" "):
        if not word:
            continue
        padded = f" {word} "
        n_chars = len(padded)
        for n in range(lo, min(hi, n_chars) + 1):
            out += [padded[i : i + n] for i in range(n_chars - n + 1)]
    return out


def word_ngrams(text: str) -> list[str]:
    """Latin words, single CJK characters and symbols (emoji, '?'), with their bigrams."""
    return _word_ngrams_of_normalised(normalise(text))


def _word_ngrams_of_normalised(norm: str) -> list[str]:
    toks = _WORD.findall(norm)
    out = list(toks)
    out.extend(f"{a} {b}" for a, b in pairwise(toks))
    return out


@dataclass(frozen=True, slots=True)
class SparseRows:
    """TF-IDF rows in CSR layout, without scipy.sparse's per-call checks (they cost more than
    the product itself for a single text)."""

    indptr: np.ndarray  # row r holds entries indptr[r]:indptr[r + 1]
    columns: np.ndarray
    values: np.ndarray

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.indptr[r], self.indptr[r + 1]
        return self.columns[a:b], self.values[a:b]

    def dot(self, weights: np.ndarray) -> np.ndarray:
        """(rows, classes): scipy's CSR-times-dense kernel, which adds each row's entries in
        column order into that row only, so a row's result never depends on the batch."""
        n_rows = len(self.indptr) - 1
        weights = np.ascontiguousarray(weights, dtype=np.float64)
        if _csr_matvecs is None:
            shape = (n_rows, weights.shape[0])
            return np.asarray(csr_matrix((self.values, self.columns, self.indptr), shape) @ weights)
        out = np.zeros((n_rows, weights.shape[1]))
        _csr_matvecs(
            n_rows, weights.shape[0], weights.shape[1], self.indptr, self.columns, self.values,
            weights.ravel(), out.ravel(),
        )
        return out


@dataclass(frozen=True, slots=True)
class _CharKeys:
    """Character n-grams as integers: each character of the vocabulary's alphabet gets a code
    1..A (0: any other character), an n-gram the base-(A+1) number of its codes. Distinct
    n-grams of up to five characters get distinct keys, so a sorted array of the vocabulary's
    keys finds every known n-gram of a batch in one `searchsorted`."""

    table: np.ndarray  # code point -> code; the last entry (0) for every higher code point
    base: int
    keys: np.ndarray  # sorted keys of the vocabulary's terms
    columns: np.ndarray  # their columns

    @classmethod
    def build(cls, vocabulary: dict[str, int]) -> _CharKeys | None:
        alphabet = sorted({ord(ch) for term in vocabulary for ch in term})
        base = len(alphabet) + 1
        longest = max((len(t) for t in vocabulary), default=0)
        widest = CHAR_NGRAMS[1]
        if (
            not vocabulary or ord(_GAP) in alphabet or longest > widest
            or base**widest >= 2**62 or CHAR_NGRAMS[0] != 1
        ):
            return None  # the per-text path handles such a vocabulary
        code = {cp: i + 1 for i, cp in enumerate(alphabet)}
        keys = np.empty(len(vocabulary), dtype=np.int64)
        columns = np.empty(len(vocabulary), dtype=np.int64)
        for i, (term, column) in enumerate(vocabulary.items()):
            key = 0
            for ch in term:
                key = key * base + code[ord(ch)]
            keys[i] = key
            columns[i] = column
        order = np.argsort(keys, kind="stable")
        table = np.zeros(alphabet[-1] + 2, dtype=np.int64)
        table[alphabet] = np.arange(1, base, dtype=np.int64)
        return cls(table, base, keys[order], columns[order])

    def codes(self, text: str) -> np.ndarray:
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        return self.table[np.minimum(points, len(self.table) - 1)]

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _find(self.keys, self.columns, keys)


def _find(
    table: np.ndarray, columns: np.ndarray, keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(which keys are in the sorted table, the columns of those that are)."""
    if len(table) == 0:
        return np.zeros(len(keys), dtype=bool), np.empty(0, dtype=np.int64)
    at = np.minimum(np.searchsorted(table, keys), len(table) - 1)
    known = table[at] == keys
    return known, columns[at[known]]


@dataclass(frozen=True, slots=True)
class _Bigrams:
    """Word bigrams as (first token's column, second token's column) pairs: both tokens of a
    known bigram are known words (training saw them), so the batch path never builds the
    bigram strings."""

    width: int
    keys: np.ndarray  # sorted first * width + second
    columns: np.ndarray

    @classmethod
    def build(cls, vocabulary: dict[str, int]) -> _Bigrams | None:
        width = len(vocabulary)
        pairs: dict[int, int] = {}
        for term, column in vocabulary.items():
            if " " not in term:
                continue
            first, _, second = term.partition(" ")
            a, b = vocabulary.get(first), vocabulary.get(second)
            if a is None or b is None or " " in second or not first:
                return None
            pairs[a * width + b] = column
        keys = np.fromiter(pairs.keys(), np.int64, len(pairs))
        columns = np.fromiter(pairs.values(), np.int64, len(pairs))
        order = np.argsort(keys, kind="stable")
        return cls(width, keys[order], columns[order])

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _find(self.keys, self.columns, keys)


class FastTfidf:
    """The transform of a fitted TfidfVectorizer(sublinear_tf=True, norm='l2') for one text,
    without scikit-learn's per-call overhead: returns (column indices, values)."""

    def __init__(self, vocabulary: dict[str, int], idf: np.ndarray, analyzer: str) -> None:
        self.vocabulary = vocabulary
        self.idf = idf.astype(np.float64)
        self.analyze = char_ngrams if analyzer == "char" else word_ngrams
        self._char_keys = _CharKeys.build(vocabulary) if analyzer == "char" else None
        self._bigrams = _Bigrams.build(vocabulary) if analyzer != "char" else None

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

    def transform_many(self, normalised: Sequence[str]) -> SparseRows:
        """The rows of already `normalise`d texts (columns sorted per row). Each row depends on
        its own text only, so a text scores the same alone or in a batch."""
        n = len(normalised)
        if self._char_keys is not None:
            rows, columns = self._char_hits(normalised, self._char_keys)
        elif self._bigrams is not None:
            rows, columns = self._word_hits(normalised, self._bigrams)
        else:
            rows, columns = self._hits_per_text(normalised)
        width = len(self.idf)
        # One (row, column) code per occurrence; unique() sorts them and counts repeats.
        cells, counts = np.unique(rows * width + columns, return_counts=True)
        rows, columns = cells // width, cells % width
        vals = (np.log(counts.astype(np.float64)) + 1.0) * self.idf[columns]
        # bincount adds in array order, i.e. per row in column order: the same for any batch.
        norms = np.sqrt(np.bincount(rows, weights=vals * vals, minlength=n))
        vals = vals / np.where(norms > 0, norms, 1.0)[rows]
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        return SparseRows(indptr, columns, vals)

    def _char_hits(
        self, normalised: Sequence[str], keys: _CharKeys
    ) -> tuple[np.ndarray, np.ndarray]:
        # Every word padded with spaces as in char_ngrams, words and texts separated by _GAP.
        parts = [f" {t.replace(' ', f' {_GAP} ')} {_GAP}" if t else _GAP for t in normalised]
        codes = keys.codes("".join(parts))
        owner = np.repeat(np.arange(len(parts), dtype=np.int64), [len(p) for p in parts])
        lo, hi = CHAR_NGRAMS
        rows: list[np.ndarray] = []
        columns: list[np.ndarray] = []
        total = len(codes)
        key = np.zeros(total, dtype=np.int64)
        # A known n-gram's first n-1 characters are a known n-gram too (training saw them
        # inside the same word), so only windows whose shorter prefix was found are looked up.
        alive = np.ones(total, dtype=bool)
        for size in range(1, hi + 1):
            span = total - size + 1
            if span <= 0:
                break
            key = key[:span] * keys.base + codes[size - 1 :]
            at = np.flatnonzero(alive[:span] & (codes[size - 1 :] > 0))
            known, cols = keys.lookup(key[at])
            alive = np.zeros(span, dtype=bool)
            alive[at[known]] = True
            if size >= lo:
                rows.append(owner[at[known]])
                columns.append(cols)
        return np.concatenate(rows), np.concatenate(columns)

    def _word_hits(
        self, normalised: Sequence[str], bigrams: _Bigrams
    ) -> tuple[np.ndarray, np.ndarray]:
        tokens = [_WORD.findall(t) for t in normalised]
        flat = [tok for toks in tokens for tok in toks]
        ids = np.fromiter(map(self.vocabulary.get, flat, repeat(-1)), np.int64, len(flat))
        owner = np.repeat(np.arange(len(tokens), dtype=np.int64), [len(t) for t in tokens])
        # Bigrams: neighbours within one text, both known words, the pair a known bigram.
        pair = np.flatnonzero((owner[1:] == owner[:-1]) & (ids[1:] >= 0) & (ids[:-1] >= 0))
        known_pair, pair_columns = bigrams.lookup(ids[pair] * bigrams.width + ids[pair + 1])
        known = ids >= 0
        return (
            np.concatenate([owner[known], owner[pair[known_pair]]]),
            np.concatenate([ids[known], pair_columns]),
        )

    def _hits_per_text(self, normalised: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        analyze = (
            _char_ngrams_of_normalised if self.analyze is char_ngrams
            else _word_ngrams_of_normalised
        )
        ids = [
            [i for i in map(self.vocabulary.get, analyze(t)) if i is not None]
            for t in normalised
        ]
        owner = np.repeat(np.arange(len(ids), dtype=np.int64), [len(i) for i in ids])
        flat = np.fromiter((i for row in ids for i in row), np.int64)
        return owner, flat
