"""Ticket-list views: the built-in ones (mine, unassigned, breaching soon, breached) and the ones
people save. A view is a filter query string (`status=new,in_progress&priority=P1`), so a saved
view, a bookmark and an API call all say the same thing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlencode

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.accounts import get_agent
from storage.errors import Invalid, NotFound, StoreError
from storage.lifecycle import CHANNELS, OPEN_STATUSES, PRIORITIES, STATUSES
from storage.models import Agent, SavedView
from storage.queries import DeadlineFilter, TicketFilter
from storage.sla import SlaPolicy
from storage.tickets import CATEGORIES

MAX_NAME = 100
MAX_QUERY = 1000
# A deadline this close is "breaching soon" whatever the reminder fraction says.
SOON = timedelta(hours=1)
WORK_STATUSES = "new,acknowledged,in_progress,waiting_customer"
SLA_VALUES = {"breached": "breached", "soon": "soon", "breaching_soon": "soon"}
FILTER_KEYS = ("view", "status", "priority", "category", "channel", "assignee", "sla", "q")


class Forbidden(StoreError):
    status = 403
    code = "forbidden"


@dataclass(frozen=True, slots=True)
class BuiltInView:
    key: str
    en: str
    zh: str
    query: str


BUILT_IN: dict[str, BuiltInView] = {
    v.key: v
    for v in (
        BuiltInView("mine", "Mine", "我的", f"assignee=me&status={WORK_STATUSES}"),
        BuiltInView("unassigned", "Unassigned", "未分配", f"assignee=none&status={WORK_STATUSES}"),
        BuiltInView("breaching_soon", "Breaching soon", "即将超时", "sla=soon"),
        BuiltInView("breached", "Breached", "已超时", "sla=breached"),
    )
}


@dataclass(frozen=True)
class FilterSpec:
    """What a person asked for, checked but not yet tied to a moment or an account."""

    statuses: tuple[str, ...] = ()
    priorities: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    assignee: str | None = None  # a username, "me" or "none"
    sla: str | None = None  # "breached" | "soon"
    q: str | None = None
    view: str | None = None


def _many(params: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    raw = params.get(name, "").strip()
    values = tuple(dict.fromkeys(v.strip() for v in raw.split(",") if v.strip()))
    for value in values:
        if value not in allowed:
            raise Invalid(f"{name}: unknown value {value!r}")
    return values


def parse_filters(params: Mapping[str, str]) -> FilterSpec:
    """Query parameters -> a checked FilterSpec. A built-in `view` supplies defaults that the
    other parameters override (so "mine" + priority=P1 is my P1 work)."""
    view = (params.get("view") or "").strip() or None
    merged: dict[str, str] = {}
    if view is not None:
        if view not in BUILT_IN:
            raise Invalid(f"view: unknown view {view!r}")
        merged.update(parse_qsl(BUILT_IN[view].query))
    merged.update({k: v for k, v in params.items() if k in FILTER_KEYS and v.strip()})
    sla = (merged.get("sla") or "").strip() or None
    if sla is not None and sla not in SLA_VALUES:
        raise Invalid(f"sla: unknown value {sla!r} (breached or soon)")
    q = (merged.get("q") or "").strip() or None
    if q is not None and len(q) > 200:
        raise Invalid("q: at most 200 characters")
    assignee = (merged.get("assignee") or "").strip() or None
    return FilterSpec(
        statuses=_many(merged, "status", STATUSES),
        priorities=_many(merged, "priority", PRIORITIES),
        categories=_many(merged, "category", CATEGORIES),
        channels=_many(merged, "channel", CHANNELS),
        assignee=assignee,
        sla=SLA_VALUES[sla] if sla else None,
        q=q,
        view=view,
    )


def to_query(spec: FilterSpec) -> str:
    """The canonical query string of a spec (what a saved view stores)."""
    pairs = [
        ("view", spec.view),
        ("status", ",".join(spec.statuses)),
        ("priority", ",".join(spec.priorities)),
        ("category", ",".join(spec.categories)),
        ("channel", ",".join(spec.channels)),
        ("assignee", spec.assignee),
        ("sla", spec.sla),
        ("q", spec.q),
    ]
    return urlencode([(k, v) for k, v in pairs if v])


def horizons(policy: SlaPolicy) -> dict[str, tuple[timedelta, timedelta]]:
    """How far ahead a deadline counts as "breaching soon", per priority: the hour, or the
    share of the window left after the reminder fraction, whichever is longer. (A category with
    its own SLA targets uses its priority's horizon.)"""
    left = 1 - policy.remind_at_fraction
    out = {}
    for priority in PRIORITIES:
        target = policy.target(priority, None)
        out[priority] = (
            max(SOON, target.first_response * left),
            max(SOON, target.resolution * left),
        )
    return out


async def resolve(
    session: AsyncSession,
    spec: FilterSpec,
    *,
    agent_id: int,
    now: datetime,
    policy: SlaPolicy,
) -> TicketFilter:
    """The list query for one person at one moment ("me" is them; deadlines count from now)."""
    f = TicketFilter(
        statuses=list(spec.statuses),
        priorities=list(spec.priorities),
        categories=list(spec.categories),
        channels=list(spec.channels),
        q=spec.q,
    )
    if spec.assignee == "none":
        f.unassigned = True
    elif spec.assignee == "me":
        f.assignee_id = agent_id
    elif spec.assignee:
        agent = await get_agent(session, spec.assignee)
        if agent is None:
            raise Invalid(f"assignee: no agent named {spec.assignee!r}")
        f.assignee_id = agent.id
    if spec.sla is not None:
        # The SLA clock runs only while the team owes the customer (not while waiting on them).
        running = [s for s in STATUSES if s in OPEN_STATUSES]
        f.statuses = [s for s in f.statuses if s in OPEN_STATUSES] if f.statuses else running
        if not f.statuses:
            raise Invalid("sla: only new, acknowledged and in-progress tickets have a running "
                          "SLA clock; choose one of those statuses")
        f.deadline = DeadlineFilter(
            "breached" if spec.sla == "breached" else "soon", now, horizons(policy)
        )
    return f


# --- saved views ---------------------------------------------------------------------------

async def list_views(session: AsyncSession, agent_id: int) -> list[SavedView]:
    """The person's own views, then the team's shared ones, each by name."""
    rows = await session.scalars(
        select(SavedView)
        .where(or_(SavedView.agent_id == agent_id, SavedView.agent_id.is_(None)))
        .order_by(SavedView.agent_id.is_(None), SavedView.name, SavedView.id)
    )
    return list(rows.all())


async def save_view(
    session: AsyncSession,
    agent: Agent,
    name: str,
    query: str,
    *,
    shared: bool,
    now: datetime,
) -> SavedView:
    """Saves the filters of `query` under `name`; saving a name again replaces its filters
    (a shared one only by an admin)."""
    name = " ".join(name.split())
    if not name:
        raise Invalid("name: give the view a name")
    if len(name) > MAX_NAME:
        raise Invalid(f"name: at most {MAX_NAME} characters")
    canonical = to_query(parse_filters(dict(parse_qsl(query.lstrip("?")))))
    if not canonical:
        raise Invalid("query: choose at least one filter to save")
    if len(canonical) > MAX_QUERY:
        raise Invalid(f"query: at most {MAX_QUERY} characters")
    owner = None if shared else agent.id
    scope = SavedView.agent_id.is_(None) if owner is None else SavedView.agent_id == owner
    existing = (
        await session.scalars(select(SavedView).where(scope, SavedView.name == name))
    ).first()
    if existing is not None:
        if owner is None and agent.role != "admin":
            # The team's views change under everyone's feet: like deleting one, an admin's job.
            raise Forbidden(
                f"the team already shares a view named {name!r}; only an admin can change it "
                "(save yours under another name)"
            )
        existing.query = canonical
        return existing
    view = SavedView(agent_id=owner, name=name, query=canonical, created_at=now)
    session.add(view)
    await session.flush()
    return view


async def delete_view(session: AsyncSession, agent: Agent, view_id: int) -> None:
    """Anyone deletes their own views; shared ones only an admin."""
    view = await session.get(SavedView, view_id)
    if view is None or (view.agent_id is not None and view.agent_id != agent.id):
        raise NotFound(f"no saved view {view_id}")
    if view.agent_id is None and agent.role != "admin":
        raise Forbidden("only an admin can delete a shared view")
    await session.delete(view)
