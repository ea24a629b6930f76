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
from typing import TypeVar

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
_T = TypeVar("_T")


def light_text(text: str) -> str:
    """The text without what varies between copies of one post (retweet prefix, @handles,
    links, case, extra spaces): identical results mean one parse can serve all of them."""
    return _light_core(_unretweeted(text))


def _unretweeted(text: str) -> str:
    """The first step of `light_text`: normalised, retweet prefix gone (retweets of one post
    by different people are equal from here on)."""
    return _RETWEET.sub("", unicodedata.normalize("NFKC", text or ""))


def _light_core(t: str) -> str:
    """The rest of `light_text`."""
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


def _bands(tokens: frozenset[str]) -> list[bytes]:
    """The reference MinHash of one text (`_bands_many` computes the same values in bulk):
    per band, its ROWS minimums as little-endian 64-bit numbers."""
    # crc32, not hash(): stable across processes, so tests and behaviour are reproducible.
    hashes = [zlib.crc32(t.encode()) for t in tokens]
    mins = [min((a * h + b) % _PRIME for h in hashes) for a, b in _SEEDS]
    return [
        b"".join(m.to_bytes(8, "little") for m in mins[band * ROWS : (band + 1) * ROWS])
        for band in range(BANDS)
    ]


# (a * h + b) mod 2^61-1 for a 32-bit h, exactly, in uint64: a and b are reduced mod the prime,
# a is split into 29 high and 32 low bits, and 2^61 = 1 (mod 2^61-1) folds the high parts back.
_U = np.uint64
_A = np.array([a % _PRIME for a, _ in _SEEDS], dtype=np.uint64)[:, None]
_B = np.array([b % _PRIME for _, b in _SEEDS], dtype=np.uint64)[:, None]
_A_HI, _A_LO = _A >> _U(32), _A & _U(0xFFFFFFFF)


def _bands_many(
    token_sets: Sequence[frozenset[str]], crc: dict[str, int] | None = None
) -> list[list[bytes]]:
    """`_bands` of many non-empty token sets in one pass over all their tokens; `crc`
    remembers the tokens' crc32 between calls."""
    if not token_sets:
        return []
    crc = {} if crc is None else crc
    hashes: list[int] = []
    starts: list[int] = []
    for tokens in token_sets:
        starts.append(len(hashes))
        for t in tokens:
            h = crc.get(t)
            if h is None:
                h = crc[t] = zlib.crc32(t.encode())
            hashes.append(h)
    h_row = np.array(hashes, dtype=np.uint64)[None, :]
    high, low = _A_HI * h_row, _A_LO * h_row  # < 2^61 and < 2^64: no overflow
    folded = ((high >> _U(29)) + ((high & _U((1 << 29) - 1)) << _U(32))
              + (low & _U(_PRIME)) + (low >> _U(61)) + _B)  # < 2^63
    mins = np.minimum.reduceat(folded % _U(_PRIME), np.array(starts), axis=1)
    # One row per text, each band's ROWS minimums as one 16-byte key.
    keys: list[list[bytes]] = (
        np.ascontiguousarray(mins.T).astype("<u8").view(f"V{8 * ROWS}").tolist()
    )
    return keys


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
        # Per band: its key -> the first remembered text that has it.
        self._bands: list[dict[bytes, str]] = [{} for _ in range(BANDS)]
        self._bands_of: dict[str, list[bytes]] = {}
        self._crc: dict[str, int] = {}  # token -> crc32, bounded like the texts

    def __len__(self) -> int:
        return len(self._canonical)

    def canonical(self, fp: str, tokens: frozenset[str]) -> str:
        return self.canonical_many([(fp, tokens)])[0]

    def canonical_many(self, items: Sequence[tuple[str, frozenset[str]]]) -> list[str]:
        """`canonical` of each (fingerprint, words) in order, as if called one by one; the
        MinHash of the texts not known yet is computed in one pass first."""
        canonical, remembered = self._canonical, self._words
        new: dict[str, frozenset[str]] = {}
        for fp, tokens in items:
            if fp not in new and len(tokens) >= self.min_words:
                known = canonical.get(fp)
                if known is None or known not in remembered:
                    new[fp] = tokens
        if len(self._crc) > 4 * self.max_entries:
            self._crc.clear()
        bands_of = dict(zip(new, _bands_many(list(new.values()), self._crc), strict=True))
        out: list[str] = []
        for fp, tokens in items:
            known = canonical.get(fp)
            if known is not None and known in remembered:  # the usual case in a spike
                canonical.move_to_end(fp)
                out.append(known)
            else:
                out.append(self._place(fp, tokens, bands_of))
        return out

    def _place(self, fp: str, tokens: frozenset[str], bands_of: dict[str, list[bytes]]) -> str:
        """A text not mapped yet: onto the first similar remembered one, or remembered."""
        target = fp
        bands: list[bytes] = []
        n = len(tokens)
        if n >= self.min_words:
            bands = bands_of.get(fp) or _bands(tokens)
            tried: set[str] = set()
            for band, key in enumerate(bands):
                candidate = self._bands[band].get(key)
                if candidate is None or candidate == fp or candidate in tried:
                    continue
                tried.add(candidate)  # one text often shares several bands: check it once
                other = self._words.get(candidate)
                if other is None:
                    continue
                m = len(other)
                # Jaccard is at most the ratio of the sizes (float division is monotonic, so
                # this never turns away a pair `jaccard` would accept).
                if min(n, m) / max(n, m) < self.threshold:
                    continue
                both = len(tokens & other)
                if both / (n + m - both) >= self.threshold:  # = jaccard(tokens, other)
                    target = candidate
                    break
        self._canonical[fp] = target
        if target == fp:
            self._words[fp] = tokens
            if bands:
                self._bands_of[fp] = bands
                for band, key in enumerate(bands):
                    self._bands[band].setdefault(key, fp)
        self._evict()
        return target

    def _evict(self) -> None:
        while len(self._canonical) > self.max_entries:
            fp, _ = self._canonical.popitem(last=False)
            if self._words.pop(fp, None) is not None:
                for band, key in enumerate(self._bands_of.pop(fp, ())):
                    if self._bands[band].get(key) == fp:
                        del self._bands[band][key]


class TextPrints:
    """What `light_text`, `words` and `fingerprint` make of a text, remembered per text: a
    spike repeats a few texts thousands of times, and retweets of one post differ only in the
    retweeter's @handle, so a second level is keyed by the text without its retweet prefix.
    Bounded: when full it starts afresh, which costs recomputation and nothing else."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self._by_text: dict[str, tuple[str, frozenset[str], str | None]] = {}
        self._by_core: dict[str, tuple[str, frozenset[str], str | None]] = {}
        self._by_light: dict[str, tuple[frozenset[str], str | None]] = {}

    def of(self, text: str) -> tuple[str, frozenset[str], str | None]:
        """(light text, words, fingerprint) of `text`."""
        got = self._by_text.get(text)
        if got is not None:
            return got
        core = _unretweeted(text)
        got = self._by_core.get(core)
        if got is None:
            light = _light_core(core)
            seen = self._by_light.get(light)
            if seen is None:
                tokens = words_of_light(light)
                seen = (tokens, fingerprint_of(tokens))
                self._remember(self._by_light, light, seen)
            got = (light, seen[0], seen[1])
            self._remember(self._by_core, core, got)
        self._remember(self._by_text, text, got)
        return got

    def _remember(self, memo: dict[str, _T], key: str, value: _T) -> None:
        if len(memo) >= self.max_entries:
            memo.clear()
        memo[key] = value
