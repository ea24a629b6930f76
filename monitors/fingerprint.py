"""Near-duplicate detection for mentions: retweets, copies and the same complaint from many people.

Two levels, both cheap:
- `fingerprint(text)`: a hash of the *set* of words once retweet prefixes, @handles, links,
  numbers, case, punctuation and emoji are gone, so "RT @ann: @acme my milk was SOUR!! 😡" and
  "@acme sour milk, my milk was sour https://t.co/x" share one. The store groups on it.
- `NearDuplicates`: in memory, remembers recent word sets and maps a new fingerprint onto a known
  one when their Jaccard similarity is high ("my milk was sour again" joins "my milk was sour").
  MinHash bands find the candidates, so the cost per new text does not grow with the history.
  The memory is per process and bounded; across restarts grouping falls back to the exact level.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from collections import OrderedDict
from collections.abc import Iterable

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
    out: set[str] = set()
    for token in _TOKEN.findall(light_text(text)):
        if _CJK.search(token):
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
    # crc32, not hash(): stable across processes, so tests and behaviour are reproducible.
    hashes = [zlib.crc32(t.encode()) for t in tokens]
    mins = [min((a * h + b) % _PRIME for h in hashes) for a, b in _SEEDS]
    return [(band, mins[band * ROWS], mins[band * ROWS + 1]) for band in range(BANDS)]


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
        known = self._canonical.get(fp)
        if known is not None and known in self._words:
            self._canonical.move_to_end(fp)
            return known
        target = fp
        bands: list[tuple[int, int, int]] = []
        if len(tokens) >= self.min_words:
            bands = _bands(tokens)
            for band in bands:
                candidate = self._bands.get(band)
                if candidate is not None and candidate != fp:
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
