"""SLA arithmetic with a controlled clock: deadlines, overrides, the pause, the reminder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from config.bootstrap import sla_policy
from config.settings import load_settings
from storage.sla import SlaPolicy, Target, resume_deadlines

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_default_targets_are_the_documented_ones() -> None:
    policy = sla_policy(load_settings())
    expected = {
        "P1": (timedelta(minutes=15), timedelta(hours=4)),
        "P2": (timedelta(hours=1), timedelta(hours=24)),
        "P3": (timedelta(hours=4), timedelta(hours=72)),
        "P4": (timedelta(hours=24), timedelta(days=7)),
    }
    for priority, (first, resolution) in expected.items():
        assert policy.deadlines(priority, None, T0) == (T0 + first, T0 + resolution)


def test_a_category_override_beats_the_priority_row() -> None:
    policy = SlaPolicy(
        categories={"product_safety": {"P2": Target(timedelta(minutes=5), timedelta(hours=1))}}
    )
    assert policy.deadlines("P2", "product_safety", T0) == (
        T0 + timedelta(minutes=5), T0 + timedelta(hours=1)
    )
    # other categories and priorities keep the default row
    assert policy.deadlines("P2", "billing", T0)[0] == T0 + timedelta(hours=1)
    assert policy.deadlines("P3", "product_safety", T0)[0] == T0 + timedelta(hours=4)


def test_waiting_for_the_customer_moves_both_deadlines_by_the_pause() -> None:
    first, resolution = T0 + timedelta(hours=4), T0 + timedelta(hours=72)
    paused, resumed = T0 + timedelta(hours=1), T0 + timedelta(hours=3)
    assert resume_deadlines(paused, resumed, first, resolution, first_response_met=False) == (
        first + timedelta(hours=2), resolution + timedelta(hours=2)
    )


def test_a_met_first_response_deadline_stays_put() -> None:
    first, resolution = T0 + timedelta(hours=4), T0 + timedelta(hours=72)
    paused, resumed = T0 + timedelta(hours=1), T0 + timedelta(hours=3)
    assert resume_deadlines(paused, resumed, first, resolution, first_response_met=True) == (
        first, resolution + timedelta(hours=2)
    )


def test_reminder_comes_at_the_configured_share_of_the_window() -> None:
    policy = SlaPolicy(remind_at_fraction=0.75)
    assert policy.reminder_at(T0, T0 + timedelta(hours=4)) == T0 + timedelta(hours=3)
