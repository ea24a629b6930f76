"""Rule entities: ids, money and contact details by regex; products and stores by lookup.

Customers type order numbers, ticket numbers and amounts in every shape, and a learned tagger
trained on a few hundred examples misses the odd ones, so these are patterns. Offsets are always
into the text exactly as given (no normalisation that shifts characters), so callers can slice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

from nlu.caseless import ascii_lowered
from nlu.types import Entity

# Past this length a message is a paste (a log, an email thread); scanning further only costs
# time, and the first screenful holds the order number if there is one.
SCAN_LIMIT = 20_000

# Latin letters and digits only: Python's \w also matches Chinese characters, and Chinese text
# puts ids and amounts right against words ("订单123-4567扣了两次").
_A = "A-Za-z0-9"
_CUR_SYM = r"[$¥￥€£]"
_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?|\d+(?:\.\d{1,2})?"
_CUR_WORD = (
    r"元|块钱|块|塊|美元|美金|刀|dollars?|bucks|usd|rmb|cny|eur|euros?|gbp|pounds?"
)

# (entity, pattern, group holding the value). Order matters only as a tie-breaker: overlapping
# matches are resolved longest-first, then by this order.
_PATTERNS: tuple[tuple[str, re.Pattern[str], int], ...] = (
    # Bounded repeats and a left boundary keep every pattern linear on hostile input
    # (an unbounded `[\w.]+@` backtracks quadratically over 20,000 letters without an @).
    (
        "email",
        re.compile(rf"(?<![{_A}.+-])[{_A}._%+-]{{1,64}}@[{_A}-]{{1,63}}(?:\.[{_A}-]{{1,63}}){{0,8}}\.[A-Za-z]{{2,24}}"),
        0,
    ),
    ("ticket_id", re.compile(r"(?<![A-Za-z0-9])CL-?\s?\d{1,10}(?!\d)", re.IGNORECASE), 0),
    (
        "amount",
        re.compile(
            rf"(?:(?:US|HK|A|C|NZ)?{_CUR_SYM}\s?(?:{_NUM})"
            rf"|(?:USD|RMB|CNY|EUR|GBP)\s?(?:{_NUM})"
            rf"|(?<![A-Za-z0-9.,-])(?:{_NUM})\s?(?:{_CUR_WORD})(?![A-Za-z]))",
            re.IGNORECASE,
        ),
        0,
    ),
    (
        "phone",
        re.compile(
            r"(?<![A-Za-z0-9-])(?:\+?86[\s-]?)?1[3-9]\d[\s-]?\d{4}[\s-]?\d{4}(?!\d)"  # CN mobile
            r"|(?<![A-Za-z0-9-])(?:\+?1[\s.-]?)?\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}(?!\d)"  # NANP
            r"|(?<![A-Za-z0-9-])\+\d{1,3}[\s.-]?\d{2,4}(?:[\s.-]?\d{2,4}){2,3}(?!\d)"  # other intl
        ),
        0,
    ),
    (
        "order_id",
        # After an explicit cue ("order #", "订单号", "单号") almost any id-like token counts.
        re.compile(
            r"(?:order|ord|订单|单号|订单号|order\s*(?:no|number|num|id))\.?\s*(?:no\.?|number|"
            r"id|号|编号)?\s*[#:：=]?\s*([A-Z]{0,4}-?\d[\dA-Z-]{3,30})(?![A-Za-z0-9-])",
            re.IGNORECASE,
        ),
        1,
    ),
    (
        "order_id",
        # Without a cue: the dashed shapes retailers print (123-4567, 112-1234567-1234567)
        # and "#12345".
        re.compile(
            r"(?<![A-Za-z0-9$¥￥€£.,-])(?:\d{3}-\d{7}-\d{7}|\d{3}-\d{4,8}|#\d{4,14}"
            r"|(?:ORD|SO|PO)-?\d{4,14})(?![A-Za-z0-9-])",
            re.IGNORECASE,
        ),
        0,
    ),
)


_DIGIT = re.compile(r"\d")


def _clean_value(entity: str, value: str) -> str:
    if entity == "ticket_id":
        digits = re.sub(r"\D", "", value)
        return f"CL-{digits}"
    if entity == "order_id":
        return value.lstrip("#")
    return value


def regex_entities(text: str) -> list[Entity]:
    """Every rule entity in `text`, non-overlapping, in order of position."""
    scan = text[:SCAN_LIMIT]
    found: list[Entity] = []
    # Every pattern needs an "@" (email) or a digit (all others): most messages have neither,
    # and a plain scan for them costs far less than six pattern scans.
    has_at = "@" in scan
    has_digit = _DIGIT.search(scan) is not None
    for name, pattern, group in _PATTERNS:
        if not (has_at if name == "email" else has_digit):
            continue
        for m in pattern.finditer(scan):
            start, end = m.span(group)
            if start < 0 or end <= start:
                continue
            found.append(Entity(name, _clean_value(name, m.group(group)), start, end))
    found.extend(lookup_entities(scan))
    return resolve_overlaps(found)


def resolve_overlaps(entities: Iterable[Entity], prefer: Iterable[Entity] = ()) -> list[Entity]:
    """Keep `prefer` first, then the longest of the rest that overlap nothing kept."""
    kept: list[Entity] = []

    def free(e: Entity) -> bool:
        return all(e.end <= k.start or e.start >= k.end for k in kept)

    for e in prefer:
        if 0 <= e.start < e.end and free(e):
            kept.append(e)
    for e in sorted(entities, key=lambda e: (-(e.end - e.start), e.start)):
        if free(e):
            kept.append(e)
    return sorted(kept, key=lambda e: (e.start, e.end))


# --- lookups (product, store) ---------------------------------------------------------------

_lookup_re: dict[str, re.Pattern[str]] = {}
# The same tables for ascii_lowered text: case-sensitive, each word opening with a literal (its
# left boundary checked just after its first character), so the engine skips fast.
_lookup_lowered: dict[str, re.Pattern[str]] = {}


def set_lookups(tables: Mapping[str, Iterable[str]]) -> None:
    """Install lookup tables ({"product": [...], "store": [...]}) read from the training data."""
    _lookup_re.clear()
    _lookup_lowered.clear()
    for name, values in tables.items():
        words = sorted({v.strip() for v in values if v and v.strip()}, key=len, reverse=True)
        if not words:
            continue
        # Latin words need word boundaries ("tv" must not fire inside "tvs" or "attv");
        # Chinese has no spaces, so a plain substring is the only option there.
        alts = [
            (rf"(?<![A-Za-z0-9]){re.escape(w)}(?![A-Za-z0-9])" if w.isascii() else re.escape(w))
            for w in words
        ]
        _lookup_re[name] = re.compile("|".join(alts), re.IGNORECASE)
        if all(ascii_lowered(w) is not None for w in words):
            _lookup_lowered[name] = re.compile("|".join(
                (
                    rf"{re.escape(w[0])}(?<![A-Za-z0-9]{re.escape(w[0])}){re.escape(w[1:])}"
                    r"(?![A-Za-z0-9])" if w.isascii() else re.escape(w)
                )
                for w in (w.lower() for w in words)
            ))


@lru_cache(maxsize=1)
def _default_lookups_loaded() -> bool:
    from nlu.training_data import load_training_data

    set_lookups(load_training_data().lookups)
    return True


def lookup_entities(text: str) -> list[Entity]:
    if not _lookup_re:
        try:
            _default_lookups_loaded()
        except Exception:  # a broken data file must not break parsing
            return []
    out: list[Entity] = []
    lowered = ascii_lowered(text)
    for name, pattern in _lookup_re.items():
        fast = _lookup_lowered.get(name)
        if lowered is not None and fast is not None:
            for m in fast.finditer(lowered):
                start, end = m.span()
                out.append(Entity(name, text[start:end], start, end))
        else:
            for m in pattern.finditer(text):
                out.append(Entity(name, m.group(0), m.start(), m.end()))
    return out
