"""The ticket lifecycle of CONTRACT §5, as a customer-care lead would check it."""

from __future__ import annotations

import itertools

import pytest

from storage.errors import IllegalMove
from storage.lifecycle import STATUS_WORDS, STATUSES, check_move, format_number, parse_number

CONTRACT_MOVES = {
    ("new", "acknowledged"), ("new", "in_progress"), ("new", "resolved"),
    ("acknowledged", "in_progress"), ("acknowledged", "waiting_customer"),
    ("acknowledged", "resolved"),
    ("in_progress", "waiting_customer"), ("in_progress", "resolved"),
    ("waiting_customer", "in_progress"), ("waiting_customer", "resolved"),
    ("resolved", "closed"), ("resolved", "in_progress"),
    ("closed", "in_progress"),
}


@pytest.mark.parametrize("move", list(itertools.product(STATUSES, STATUSES)))
def test_every_move_is_allowed_exactly_when_the_contract_says(move: tuple[str, str]) -> None:
    current, target = move
    if move in CONTRACT_MOVES:
        check_move(current, target)
    else:
        with pytest.raises(IllegalMove):
            check_move(current, target)


def test_unknown_status_is_refused() -> None:
    with pytest.raises(IllegalMove, match="unknown status"):
        check_move("new", "done")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("CL-123", 123), ("cl-7", 7), (" CL-42 ", 42), ("42", 42), ("CL-", None), ("CL-0", None),
     ("CL-12a", None), ("DROP TABLE", None), ("CL-" + "9" * 40, None), ("", None)],
)
def test_ticket_numbers_parse_strictly(text: str, expected: int | None) -> None:
    assert parse_number(text) == expected


def test_number_format_round_trips() -> None:
    assert format_number(1234) == "CL-1234"
    assert parse_number(format_number(1234)) == 1234


def test_status_words_in_both_languages() -> None:
    assert STATUS_WORDS["en"]["waiting_customer"] == "waiting customer"
    assert STATUS_WORDS["zh"]["in_progress"] == "处理中"
    assert set(STATUS_WORDS["zh"]) == set(STATUSES)
