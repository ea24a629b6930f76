"""SLA arithmetic: deadlines from the priority × category table, and the pause while waiting."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class Target:
    first_response: timedelta
    resolution: timedelta


DEFAULT_TARGETS: dict[str, Target] = {
    "P1": Target(timedelta(minutes=15), timedelta(hours=4)),
    "P2": Target(timedelta(hours=1), timedelta(hours=24)),
    "P3": Target(timedelta(hours=4), timedelta(hours=72)),
    "P4": Target(timedelta(hours=24), timedelta(days=7)),
}


@dataclass(frozen=True)
class SlaPolicy:
    priorities: Mapping[str, Target] = field(default_factory=lambda: dict(DEFAULT_TARGETS))
    # category -> priority -> target, overriding the priority's default row
    categories: Mapping[str, Mapping[str, Target]] = field(default_factory=dict)
    remind_at_fraction: float = 0.8

    def target(self, priority: str, category: str | None) -> Target:
        if category and priority in self.categories.get(category, {}):
            return self.categories[category][priority]
        return self.priorities.get(priority, DEFAULT_TARGETS["P3"])

    def deadlines(
        self, priority: str, category: str | None, start: datetime
    ) -> tuple[datetime, datetime]:
        t = self.target(priority, category)
        return start + t.first_response, start + t.resolution

    def reminder_at(self, start: datetime, due: datetime) -> datetime:
        return start + (due - start) * self.remind_at_fraction


def resume_deadlines(
    paused_at: datetime,
    now: datetime,
    first_response_due: datetime,
    resolution_due: datetime,
    first_response_met: bool,
) -> tuple[datetime, datetime]:
    """Deadlines after a pause: both move by the time spent waiting for the customer
    (the first-response one only if still owed)."""
    pause = max(now - paused_at, timedelta(0))
    return (
        first_response_due if first_response_met else first_response_due + pause,
        resolution_due + pause,
    )
