"""Language detection for the two languages careloop speaks: English and Simplified Chinese.

A customer writing Chinese nearly always mixes in Latin order numbers, brand names or
English words ("退款refund还没到 CL-123"), so a share of CJK characters among the *letters*
decides, not a per-word vote. No model: this runs on every message and must cost microseconds.
"""

from __future__ import annotations

import re

# Ideographs plus the CJK punctuation and full-width forms Chinese writers use.
_CJK_RANGES: tuple[tuple[int, int], ...] = (
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0x3400, 0x4DBF),  # Extension A
    (0x20000, 0x2A6DF),  # Extension B
    (0xF900, 0xFAFF),  # Compatibility Ideographs
)

# One Chinese character carries roughly as much as a 3–4 letter English word, so weigh it up;
# "我的order到了吗" is Chinese to its writer even though Latin letters outnumber ideographs.
_CJK_WEIGHT = 3.0
_SAMPLE = 2000  # enough to decide; bounds the cost on a 100,000-character paste


_CJK = re.compile("[" + "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in _CJK_RANGES) + "]")
_LATIN = re.compile("[A-Za-z]")


def is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def cjk_share(text: str) -> float:
    """Weighted share of CJK ideographs among letters (0.0 when there are no letters)."""
    sample = text[:_SAMPLE]
    # Counted by the regex engine (what is_cjk and ASCII isalpha decide, character by character).
    cjk = len(_CJK.findall(sample))
    if cjk == 0:
        return 0.0
    latin = len(_LATIN.findall(sample))
    if cjk == 0:
        return 0.0
    weighted = cjk * _CJK_WEIGHT
    return weighted / (weighted + latin)


def detect_language(text: str, default: str = "en") -> str:
    """'zh' when Chinese dominates, 'en' otherwise; `default` for text without letters."""
    sample = text[:_SAMPLE]
    if not any(map(str.isalpha, sample)):
        return default
    return "zh" if cjk_share(sample) >= 0.4 else "en"
