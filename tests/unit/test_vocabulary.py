"""The API, the store and the NLU speak the same vocabulary (CONTRACT §5): a category, status
or priority added in one place and forgotten in another would be refused or lost."""

from __future__ import annotations

from typing import get_args

from desk.schemas import Category, Priority, Status, TicketIn
from nlu.types import CATEGORIES, INTENTS
from storage.lifecycle import CHANNELS, PRIORITIES, STAFF_CHANNELS, STATUSES


def test_the_api_accepts_exactly_the_contract_vocabulary() -> None:
    assert set(get_args(Category)) == set(CATEGORIES)
    assert set(get_args(Status)) == set(STATUSES)
    assert set(get_args(Priority)) == set(PRIORITIES)
    staff = get_args(TicketIn.model_fields["channel"].annotation)
    assert set(staff) == set(STAFF_CHANNELS) <= set(CHANNELS)


def test_the_contract_intents_are_all_understood() -> None:
    contract = {"complaint", "suggestion", "praise", "check_status", "request_human", "greet",
                "goodbye", "affirm", "deny", "out_of_scope"}
    assert contract <= set(INTENTS)
