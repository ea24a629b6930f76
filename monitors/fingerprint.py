"""Near-duplicate detection for mentions: retweets, copies and the same complaint from many people.

Two levels, both cheap:
- `fingerprint(text)`: a hash of the *set* of words once retweet prefixes, @handles, links,
  numbers, case, punctuation and emoji are gone, so "RT @ann: @acme my milk was SOUR!! 😡" and
  "@acme sour milk, my milk was sour https://t.co/x" share one. The store groups on it.
- `NearDuplicates`: in memory, remembers recent word sets and maps a new fingerprint onto a known
  one when their Jaccard similarity is high ("my milk was sour again" joins "my milk was sour").
  MinHash bands find the candidates, so the cost per new text does not grow with the history.
  The memory is per process and bounded; across restarts grouping falls back to the exact level.

A spike is mostly copies, so the work is done once per distinct text (`TextPrints`), and the
MinHash of a batch's new texts is computed in one numpy pass (`NearDuplicates.canonical_many`)
with exactly the values of the plain per-text loop (`_bands`), so grouping does not change.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import numpy as np

_RETWEET = re.compile(r"^\s*rt\s+@\w+:?\s*", re.IGNORECASE)
_LINK = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
_HANDLE = re.compile(r"@\w+(?:@[\w.-]+)?")  # @ann, and Mastodon's @ann@example.social
# Latin words (with an inner apostrophe) or runs of CJK ideographs / kana / hangul.
_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
# Words that carry nothing about the complaint but vary between copies.
_NOISE = frozenset({"rt", "amp", "via", "cc"})
_SPACES = re.compile(r"\s+")


def light_text(text: str) -> str:
    """The text without what varies between copies of one post (retweet prefix, @handles,
    links, case, extra spaces): identical results mean one parse can serve all of them."""
    t = unicodedata.normalize("NFKC", text or "")
    t = _RETWEET.sub("", t)
    t = _LINK.sub(" ", t)
    t = _HANDLE.sub(" ", t)
    return _SPACES.sub(" ", t.lower()).strip()


def words(text: str) -> frozenset[str]:
    """The words a post's meaning rests on. CJK runs become character bigrams (no spaces)."""
    return words_of_light(light_text(text))


def words_of_light(light: str) -> frozenset[str]:
    """`words` of a text already through `light_text`."""
    out: set[str] = set()
    for token in _TOKEN.findall(light):
        # An ASCII token cannot be CJK: skip the regex for the usual case.
        if not token.isascii() and _CJK.search(token):
            if len(token) == 1:
                out.add(token)
            else:
                out.update(token[i : i + 2] for i in range(len(token) - 1))
        elif token not in _NOISE:
            out.add(token)
    return frozenset(out)


def fingerprint_of(tokens: Iterable[str]) -> str | None:
    """None for a post with no words (only media, handles or emoji): nothing to group on."""
    ordered = sorted(tokens)
    if not ordered:
        return None
    return hashlib.blake2b(" ".join(ordered).encode(), digest_size=16).hexdigest()


def fingerprint(text: str) -> str | None:
    return fingerprint_of(words(text))


# MinHash: BANDS x ROWS hashes. With 6 bands of 2 rows, two texts of Jaccard 0.8 share a band
# with probability 1 - (1 - 0.8^2)^6 ≈ 0.998; at 0.3 only 0.43 (and then the exact check says no).
BANDS, ROWS = 6, 2
_PRIME = (1 << 61) - 1
_SEEDS = tuple(
    (
        int.from_bytes(hashlib.blake2b(f"a{i}".encode(), digest_size=8).digest()) | 1,
        int.from_bytes(hashlib.blake2b(f"b{i}".encode(), digest_size=8).digest()),
    )
    for i in range(BANDS * ROWS)
)


def _bands(tokens: frozenset[str]) -> list[tuple[int, int, int]]:
    """The reference MinHash of one text (`_bands_many` computes the same values in bulk)."""
    # crc32, not hash(): stable across processes, so tests and behaviour are reproducible.
    hashes = [zlib.crc32(t.encode()) for t in tokens]
    mins = [min((a * h + b) % _PRIME for h in hashes) for a, b in _SEEDS]
    return [(band, mins[band * ROWS], mins[band * ROWS + 1]) for band in range(BANDS)]


# (a * h + b) mod 2^61-1 for a 32-bit h, exactly, in uint64: a and b are reduced mod the prime,
# a is split into 29 high and 32 low bits, and 2^61 = 1 (mod 2^61-1) folds the high parts back.
_U = np.uint64
_A = np.array([a % _PRIME for a, _ in _SEEDS], dtype=np.uint64)[:, None]
_B = np.array([b % _PRIME for _, b in _SEEDS], dtype=np.uint64)[:, None]
_A_HI, _A_LO = _A >> _U(32), _A & _U(0xFFFFFFFF)


def _bands_many(token_sets: Sequence[frozenset[str]]) -> list[list[tuple[int, int, int]]]:
    """`_bands` of many non-empty token sets in one pass over all their tokens."""
    if not token_sets:
        return []
    hashes: list[int] = []
    starts: list[int] = []
    for tokens in token_sets:
        starts.append(len(hashes))
        hashes.extend(zlib.crc32(t.encode()) for t in tokens)
    h = np.array(hashes, dtype=np.uint64)[None, :]
    high, low = _A_HI * h, _A_LO * h  # < 2^61 and < 2^64: no overflow
    folded = ((high >> _U(29)) + ((high & _U((1 << 29) - 1)) << _U(32))
              + (low & _U(_PRIME)) + (low >> _U(61)) + _B)  # < 2^63
    mins = np.minimum.reduceat(folded % _U(_PRIME), np.array(starts), axis=1).T.tolist()
    return [
        [(band, m[band * ROWS], m[band * ROWS + 1]) for band in range(BANDS)] for m in mins
    ]


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class NearDuplicates:
    """Maps a fingerprint to the fingerprint of a similar text seen before (or to itself).

    Only texts of at least `min_words` words take part: short ones ("same", "help!") are too
    easily similar by chance and are grouped on the exact fingerprint only."""

    def __init__(
        self, threshold: float = 0.8, *, min_words: int = 5, max_entries: int = 20_000
    ) -> None:
        self.threshold = threshold
        self.min_words = min_words
        self.max_entries = max_entries
        self._canonical: OrderedDict[str, str] = OrderedDict()  # fingerprint -> canonical one
        self._words: dict[str, frozenset[str]] = {}  # canonical fingerprint -> its words
        self._bands: dict[tuple[int, int, int], str] = {}
        self._bands_of: dict[str, list[tuple[int, int, int]]] = {}

    def __len__(self) -> int:
        return len(self._canonical)

    def canonical(self, fp: str, tokens: frozenset[str]) -> str:
        return self.canonical_many([(fp, tokens)])[0]

    def canonical_many(self, items: Sequence[tuple[str, frozenset[str]]]) -> list[str]:
        """`canonical` of each (fingerprint, words) in order, as if called one by one; the
        MinHash of the texts not known yet is computed in one pass first."""
        new: dict[str, frozenset[str]] = {}
        for fp, tokens in items:
            if fp not in new and len(tokens) >= self.min_words:
                known = self._canonical.get(fp)
                if known is None or known not in self._words:
                    new[fp] = tokens
        bands_of = dict(zip(new, _bands_many(list(new.values())), strict=True))
        return [self._canonical_one(fp, tokens, bands_of) for fp, tokens in items]

    def _canonical_one(
        self, fp: str, tokens: frozenset[str], bands_of: dict[str, list[tuple[int, int, int]]]
    ) -> str:
        known = self._canonical.get(fp)
        if known is not None and known in self._words:
            self._canonical.move_to_end(fp)
            return known
        target = fp
        bands: list[tuple[int, int, int]] = []
        if len(tokens) >= self.min_words:
            bands = bands_of.get(fp) or _bands(tokens)
            tried: set[str] = set()
            for band in bands:
                candidate = self._bands.get(band)
                if candidate is not None and candidate != fp and candidate not in tried:
                    tried.add(candidate)  # one text often shares several bands: check it once
                    other = self._words.get(candidate)
                    if other is not None and jaccard(tokens, other) >= self.threshold:
                        target = candidate
                        break
        self._canonical[fp] = target
        if target == fp:
            self._words[fp] = tokens
            if bands:
                self._bands_of[fp] = bands
                for band in bands:
                    self._bands.setdefault(band, fp)
        self._evict()
        return target

    def _evict(self) -> None:
        while len(self._canonical) > self.max_entries:
            fp, _ = self._canonical.popitem(last=False)
            if self._words.pop(fp, None) is not None:
                for band in self._bands_of.pop(fp, ()):
                    if self._bands.get(band) == fp:
                        del self._bands[band]


class TextPrints:
    """What `light_text`, `words` and `fingerprint` make of a text, remembered per text: a
    spike repeats a few texts thousands of times (retweets differ only in the @handle, which
    `light_text` drops, so a second level is keyed by the light text). Bounded: when full it
    starts afresh, which costs one recomputation per text and nothing in correctness."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self._by_text: dict[str, tuple[str, frozenset[str], str | None]] = {}
        self._by_light: dict[str, tuple[frozenset[str], str | None]] = {}

    def of(self, text: str) -> tuple[str, frozenset[str], str | None]:
        """(light text, words, fingerprint) of `text`."""
        got = self._by_text.get(text)
        if got is not None:
            return got
        light = light_text(text)
        seen = self._by_light.get(light)
        if seen is None:
            tokens = words_of_light(light)
            seen = (tokens, fingerprint_of(tokens))
            if len(self._by_light) >= self.max_entries:
                self._by_light.clear()
            self._by_light[light] = seen
        got = (light, seen[0], seen[1])
        if len(self._by_text) >= self.max_entries:
            self._by_text.clear()
        self._by_text[text] = got
        return got
