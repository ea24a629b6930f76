"""Case-insensitive matching without `re.IGNORECASE`, where that is provably the same thing.

Python's regex engine skips quickly over text only for case-sensitive literals: an IGNORECASE
alternation of a hundred keywords is tried keyword by keyword at every position. When every
cased character of a text is ASCII, lowering it changes ASCII letters only (offsets stay put),
and an IGNORECASE pattern whose letters are all lower-case matches exactly where the same
pattern without the flag matches the lowered text. The rule modules use that fast form when it
applies and the original pattern otherwise.
"""

from __future__ import annotations

import re

_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
# Escapes that name a class or an assertion; any other escaped letter (\x41, \N{...}) could
# spell an upper-case letter, so such a pattern keeps its IGNORECASE form.
_CLASS_ESCAPE = re.compile(r"\\[bBdDsSwWAZ]|\\[^A-Za-z]")


def ascii_lowered(text: str) -> str | None:
    """`text.lower()` when the only characters with case in `text` are ASCII, else None."""
    if not text.isascii():
        rest = "".join(_NON_ASCII.findall(text))
        if rest.lower() != rest or rest.upper() != rest:
            return None
    return text.lower()


def without_ignorecase(pattern: re.Pattern[str]) -> re.Pattern[str] | None:
    """The pattern compiled without IGNORECASE, to run on `ascii_lowered` text; None when that
    would not be equivalent (an upper-case letter outside `A-Za-z`, a cased non-ASCII letter,
    an inline flag or a letter escape that may spell one)."""
    source = pattern.pattern
    if not pattern.flags & re.IGNORECASE or "(?" in source.replace("(?:", "").replace(
        "(?<", ""
    ).replace("(?=", "").replace("(?!", ""):
        return None
    rest = _CLASS_ESCAPE.sub("", source).replace("A-Za-z", "")
    if "\\" in rest or any(ch.isupper() for ch in rest):
        return None
    extra = "".join(_NON_ASCII.findall(rest))
    if extra.lower() != extra or extra.upper() != extra:
        return None
    return re.compile(source, pattern.flags & ~re.IGNORECASE)
