"""The ticket lifecycle of CONTRACT §5: statuses, allowed moves, priorities, channels."""

from __future__ import annotations

from storage.errors import IllegalMove

STATUSES: tuple[str, ...] = (
    "new",
    "acknowledged",
    "in_progress",
    "waiting_customer",
    "resolved",
    "closed",
)

MOVES: dict[str, frozenset[str]] = {
    "new": frozenset({"acknowledged", "in_progress", "resolved"}),
    "acknowledged": frozenset({"in_progress", "waiting_customer", "resolved"}),
    "in_progress": frozenset({"waiting_customer", "resolved"}),
    "waiting_customer": frozenset({"in_progress", "resolved"}),
    "resolved": frozenset({"closed", "in_progress"}),
    "closed": frozenset({"in_progress"}),
}

# Statuses in which the team owes the customer something; the SLA clock runs only here.
OPEN_STATUSES = frozenset({"new", "acknowledged", "in_progress"})
DONE_STATUSES = frozenset({"resolved", "closed"})
# Moving a ticket to one of these tells the customer someone is on it: it counts as the first
# response, like a public reply does.
RESPONDING_STATUSES = frozenset({"acknowledged", "in_progress", "waiting_customer", "resolved"})

PRIORITIES: tuple[str, ...] = ("P1", "P2", "P3", "P4")
KINDS: tuple[str, ...] = ("complaint", "suggestion", "praise", "question")
CHANNELS: tuple[str, ...] = (
    "telegram",
    "webchat",
    "x",
    "mastodon",
    "phone",
    "email",
    "in_store",
    "import",
)
STAFF_CHANNELS: tuple[str, ...] = ("phone", "email", "in_store")

STATUS_WORDS: dict[str, dict[str, str]] = {
    "en": {s: s.replace("_", " ") for s in STATUSES},
    "zh": {
        "new": "新建",
        "acknowledged": "已确认",
        "in_progress": "处理中",
        "waiting_customer": "待您回复",
        "resolved": "已解决",
        "closed": "已关闭",
    },
}


def allowed_moves(status: str) -> frozenset[str]:
    return MOVES.get(status, frozenset())


def check_move(current: str, target: str) -> None:
    if target not in STATUSES:
        raise IllegalMove(f"unknown status {target!r}")
    if target not in allowed_moves(current):
        raise IllegalMove(f"a ticket cannot move from {current} to {target}")


def format_number(ticket_id: int) -> str:
    return f"CL-{ticket_id}"


def parse_number(number: str) -> int | None:
    """`CL-123` (any case, or just `123`) -> 123; anything else -> None."""
    raw = number.strip().upper()
    if raw.startswith("CL-"):
        raw = raw[3:]
    if not raw.isdigit() or len(raw) > 18:
        return None
    value = int(raw)
    return value if value > 0 else None


def default_priority(kind: str, category: str | None) -> str:
    if kind != "complaint":
        return "P4"
    return "P1" if category == "product_safety" else "P3"
