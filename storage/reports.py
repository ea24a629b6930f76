"""Reports for a period [since, until): every figure is an SQL aggregate (GROUP BY), never a
walk over tickets in Python, so a year of data (200,000 tickets, 1,000,000 posts) stays fast.

Cohorts: ticket figures count the tickets *created* in the period (a merged duplicate is counted
once, as the ticket it was merged into); CSAT counts the surveys *answered* in the period;
mention figures count the posts *posted* in the period. Days and weeks are UTC; weeks start on
Monday.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import DateTime, and_, func, literal, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from storage.db import Store
from storage.lifecycle import CHANNELS, DONE_STATUSES, OPEN_STATUSES, PRIORITIES, STATUSES
from storage.models import SocialPost, Survey, Ticket

DEFAULT_DAYS = 30
# Up to about a quarter the volume chart has one bar per day; longer periods one per week.
DAILY_UP_TO = timedelta(days=92)
MAX_PERIOD = timedelta(days=3 * 366)
TOP_CATEGORIES = 10
NO_CATEGORY = "none"
MENTION_STATES: tuple[str, ...] = ("new", "flagged", "ticketed", "replied", "dismissed", "ignored")
# A person had to look at these (triage flagged them, or someone already acted on them) ...
NEEDED_ATTENTION = frozenset({"flagged", "ticketed", "replied", "dismissed"})
# ... and these a person (or an auto-ticket rule) has dealt with.
HANDLED = frozenset({"ticketed", "replied", "dismissed"})
SCORES = ("1", "2", "3", "4", "5")


class BadPeriod(ValueError):
    """A date that cannot be read, or a period that ends before it starts."""


@dataclass(frozen=True, slots=True)
class Period:
    since: datetime
    until: datetime

    @property
    def length(self) -> timedelta:
        return self.until - self.since

    @property
    def previous(self) -> Period:
        """The period of the same length just before this one (for trends)."""
        return Period(self.since - self.length, self.since)

    @property
    def bucket(self) -> str:
        return "day" if self.length <= DAILY_UP_TO else "week"

    def buckets(self) -> list[date]:
        """Every day (or Monday) the period touches, so charts show empty days as zero."""
        first = self.since.date()
        last = (self.until - timedelta(microseconds=1)).date()
        step = timedelta(days=1)
        if self.bucket == "week":
            first -= timedelta(days=first.weekday())
            step = timedelta(days=7)
        out = []
        while first <= last:
            out.append(first)
            first += step
        return out


def _read_moment(raw: str, name: str) -> datetime:
    text = raw.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), tzinfo=UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadPeriod(f"{name}: {raw!r} is not a date (YYYY-MM-DD) or ISO time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_period(since: str | None, until: str | None, now: datetime) -> Period:
    """Dates are UTC days; `until` is the first moment *not* included. Missing ends default to
    the last 30 days up to the end of today."""
    end = (
        _read_moment(until, "until")
        if until
        else datetime.combine(now.astimezone(UTC).date() + timedelta(days=1), time(0), tzinfo=UTC)
    )
    start = _read_moment(since, "since") if since else end - timedelta(days=DEFAULT_DAYS)
    if not until and since:
        end = max(end, start + timedelta(days=1))
    if start >= end:
        raise BadPeriod("since must be before until (until is not included)")
    if end - start > MAX_PERIOD:
        raise BadPeriod("the period may be at most 3 years long")
    return Period(start, end)


def last_days(days: int, now: datetime) -> Period:
    end = datetime.combine(now.astimezone(UTC).date() + timedelta(days=1), time(0), tzinfo=UTC)
    return Period(end - timedelta(days=days), end)


# --- SQL pieces that differ between PostgreSQL and SQLite ---------------------------------


def _postgres(session: AsyncSession) -> bool:
    bind = session.get_bind()
    return bind.dialect.name == "postgresql"


# Per report transaction on PostgreSQL: no JIT (compiling the expressions costs ~50 ms, more
# than it saves on queries this size), and room to sort a year's response and resolution times
# in memory (with the default 4 MB work_mem the two percentile_cont sorts of 200,000 tickets
# spill to temporary files: ~1 s instead of ~0.2 s). SET LOCAL: gone at the end of the read.
_REPORT_SETTINGS = text(
    "SELECT set_config('jit', 'off', true), set_config('work_mem', '32MB', true)"
)


async def _tune(session: AsyncSession) -> None:
    if _postgres(session):
        await session.execute(_REPORT_SETTINGS)


# date_bin (PostgreSQL 14+) is integer arithmetic on the absolute time: cheaper per row than
# converting to a UTC wall time and truncating, and independent of the session's time zone.
_MONDAY = datetime(2000, 1, 3, tzinfo=UTC)


def _bucket_of(column: Any, bucket: str, postgres: bool) -> ColumnElement[Any]:
    if postgres:
        stride = text("interval '7 days'") if bucket == "week" else text("interval '1 day'")
        return func.date_bin(stride, column, literal(_MONDAY, DateTime(timezone=True)))
    if bucket == "week":
        return func.date(column, "-6 days", "weekday 1")  # the Monday on or before
    return func.date(column)


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.astimezone(UTC).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _minutes_between(start: Any, end: Any, postgres: bool) -> ColumnElement[Any]:
    """NULL when `end` is NULL: percentile_cont and our SQLite path both skip those."""
    if postgres:
        # date_part is double precision; EXTRACT is numeric since PostgreSQL 14 (slower).
        return func.date_part("epoch", end - start) / 60.0
    return (func.julianday(end) - func.julianday(start)) * 1440.0


# --- the summary ---------------------------------------------------------------------------


def _in(period: Period, column: Any) -> ColumnElement[bool]:
    return and_(column >= period.since, column < period.until)


def _ticket_scope(period: Period) -> list[ColumnElement[bool]]:
    return [_in(period, Ticket.created_at), Ticket.merged_into_id.is_(None)]


def _breached(now: datetime) -> ColumnElement[bool]:
    """Late on either deadline: recorded by the SLA timer, answered or resolved late, or still
    owed and already overdue (the timer may not have passed yet). A ticket waiting for the
    customer is not overdue: its clock is paused."""
    open_ = Ticket.status.in_(OPEN_STATUSES)
    return or_(
        Ticket.first_response_breached_at.is_not(None),
        Ticket.resolution_breached_at.is_not(None),
        Ticket.first_response_at > Ticket.first_response_due,
        Ticket.resolved_at > Ticket.resolution_due,
        and_(open_, Ticket.first_response_at.is_(None), Ticket.first_response_due <= now),
        and_(open_, Ticket.resolution_due <= now),
    )


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _sla(met: int, breached: int, pending: int) -> dict[str, Any]:
    return {
        "met": met, "breached": breached, "pending": pending,
        "compliance": _rate(met, met + breached),
    }


async def _ticket_counts(
    session: AsyncSession, period: Period, now: datetime
) -> dict[str, Any]:
    """One scan: counts by status x category x channel x priority x late (at most a few
    thousand groups), folded into each dimension here. Lateness is worked out once per row."""
    rows_of_period = (
        select(Ticket.status, Ticket.category, Ticket.channel, Ticket.priority,
               _breached(now).label("late"))
        .where(*_ticket_scope(period))
        .subquery()
    )
    c = rows_of_period.c
    query = select(
        c.status, c.category, c.channel, c.priority, c.late, func.count().label("n")
    ).group_by(c.status, c.category, c.channel, c.priority, c.late)
    by: dict[str, dict[str, int]] = {
        "status": dict.fromkeys(STATUSES, 0),
        "category": {},
        "channel": dict.fromkeys(CHANNELS, 0),
        "priority": dict.fromkeys(PRIORITIES, 0),
    }
    sla: dict[str, list[int]] = {p: [0, 0, 0] for p in PRIORITIES}  # met, breached, total
    total = resolved = 0
    for row in (await session.execute(query)).all():
        category = row.category or NO_CATEGORY
        for dim, value in (("status", row.status), ("category", category),
                           ("channel", row.channel), ("priority", row.priority)):
            by[dim][value] = by[dim].get(value, 0) + row.n
        counts = sla.setdefault(row.priority, [0, 0, 0])
        if row.late:
            counts[1] += row.n
        elif row.status in DONE_STATUSES:
            counts[0] += row.n
        counts[2] += row.n
        total += row.n
        if row.status in DONE_STATUSES:
            resolved += row.n
    by["category"] = dict(sorted(by["category"].items(), key=lambda kv: (-kv[1], kv[0])))
    by_priority = {p: _sla(m, b, n - m - b) for p, (m, b, n) in sla.items()}
    met = sum(v[0] for v in sla.values())
    late = sum(v[1] for v in sla.values())
    return {
        "tickets": {
            "total": total,
            "by_status": by["status"],
            "by_category": by["category"],
            "by_channel": by["channel"],
            "by_priority": by["priority"],
        },
        "resolution_rate": _rate(resolved, total),
        "resolved": resolved,
        "sla": _sla(met, late, total - met - late),
        "sla_by_priority": by_priority,
    }


def _interpolate(low: float, high: float, fraction: float) -> float:
    return low + (high - low) * fraction


async def _percentiles_sqlite(
    session: AsyncSession, period: Period, value: ColumnElement[Any], n: int
) -> tuple[float | None, float | None]:
    """percentile_cont by hand: SQLite sorts, and hands back only the two values around each
    rank (LIMIT 2 OFFSET k), never the whole column."""
    if n == 0:
        return None, None
    out: list[float] = []
    for p in (0.5, 0.9):
        rank = p * (n - 1)
        k = int(rank)
        rows = (
            await session.scalars(
                select(value).where(*_ticket_scope(period), value.is_not(None))
                .order_by(value).limit(2).offset(k)
            )
        ).all()
        low = float(rows[0])
        high = float(rows[1]) if len(rows) > 1 else low
        out.append(_interpolate(low, high, rank - k))
    return out[0], out[1]


def _rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(float(value), digits)


async def _times(session: AsyncSession, period: Period) -> dict[str, Any]:
    """First response (minutes) and resolution (hours), median and p90, over the tickets of
    the period that have one. Wall-clock time: a pause waiting for the customer counts too."""
    postgres = _postgres(session)
    response = _minutes_between(Ticket.created_at, Ticket.first_response_at, postgres)
    resolution = _minutes_between(Ticket.created_at, Ticket.resolved_at, postgres)
    if postgres:
        row = (
            await session.execute(
                select(
                    func.count(response),
                    func.percentile_cont(0.5).within_group(response),
                    func.percentile_cont(0.9).within_group(response),
                    func.count(resolution),
                    func.percentile_cont(0.5).within_group(resolution),
                    func.percentile_cont(0.9).within_group(resolution),
                ).where(*_ticket_scope(period))
            )
        ).one()
        n_first, first_med, first_p90, n_res, res_med, res_p90 = row
    else:
        n_first, n_res = (
            await session.execute(
                select(func.count(response), func.count(resolution))
                .where(*_ticket_scope(period))
            )
        ).one()
        first_med, first_p90 = await _percentiles_sqlite(session, period, response, n_first)
        res_med, res_p90 = await _percentiles_sqlite(session, period, resolution, n_res)

    def hours(minutes: float | None) -> float | None:
        return None if minutes is None else float(minutes) / 60.0

    return {
        "first_response_minutes": {
            "median": _rounded(first_med), "p90": _rounded(first_p90), "count": n_first,
        },
        "resolution_hours": {
            "median": _rounded(hours(res_med), 2), "p90": _rounded(hours(res_p90), 2),
            "count": n_res,
        },
    }


async def _csat(session: AsyncSession, period: Period) -> dict[str, Any]:
    rows = (
        await session.execute(
            select(Survey.score, func.count())
            .where(_in(period, Survey.answered_at), Survey.score.is_not(None))
            .group_by(Survey.score)
        )
    ).all()
    distribution = dict.fromkeys(SCORES, 0)
    for score, n in rows:
        if str(score) in distribution:
            distribution[str(score)] += n
    count = sum(distribution.values())
    points = sum(int(s) * n for s, n in distribution.items())
    return {
        "average": round(points / count, 2) if count else None,
        "count": count,
        "distribution": distribution,
        "satisfied_rate": _rate(distribution["4"] + distribution["5"], count),
    }


async def _category_counts(session: AsyncSession, period: Period) -> dict[str, int]:
    """Tickets per category (`none` for suggestions, praise and questions)."""
    rows = await session.execute(
        select(Ticket.category, func.count())
        .where(*_ticket_scope(period))
        .group_by(Ticket.category)
    )
    return {category or NO_CATEGORY: n for category, n in rows.all()}


def _top_categories(current: dict[str, int], previous: dict[str, int]) -> list[dict[str, Any]]:
    ranked = sorted(
        ((c, n) for c, n in current.items() if c != NO_CATEGORY and n > 0),
        key=lambda kv: (-kv[1], kv[0]),
    )[:TOP_CATEGORIES]
    out = []
    for category, n in ranked:
        before = previous.get(category, 0)
        change = n - before
        out.append({
            "category": category,
            "count": n,
            "previous": before,
            "change": change,
            "change_pct": round(100.0 * change / before, 1) if before else None,
            "trend": "new" if before == 0 else ("up" if change > 0 else
                                                 "down" if change < 0 else "flat"),
        })
    return out


def _series(
    buckets: Sequence[date], counts: dict[tuple[date, str], int], names: Iterable[str]
) -> dict[str, list[int]]:
    return {name: [counts.get((b, name), 0) for b in buckets] for name in names}


async def _volume(session: AsyncSession, period: Period) -> dict[str, Any]:
    """Tickets per day (or week), by channel and by category, from one GROUP BY."""
    bucket = _bucket_of(Ticket.created_at, period.bucket, _postgres(session)).label("b")
    rows = (
        await session.execute(
            select(bucket, Ticket.channel, Ticket.category, func.count())
            .where(*_ticket_scope(period))
            .group_by(bucket, Ticket.channel, Ticket.category)
        )
    ).all()
    by_channel: dict[tuple[date, str], int] = defaultdict(int)
    by_category: dict[tuple[date, str], int] = defaultdict(int)
    channel_total: dict[str, int] = defaultdict(int)
    category_total: dict[str, int] = defaultdict(int)
    for b, channel, category, n in rows:
        day = _as_date(b)
        category = category or NO_CATEGORY
        by_channel[(day, channel)] += n
        by_category[(day, category)] += n
        channel_total[channel] += n
        category_total[category] += n
    buckets = period.buckets()
    channels = [c for c in CHANNELS if channel_total.get(c)] + sorted(
        c for c in channel_total if c not in CHANNELS
    )
    categories = sorted(category_total, key=lambda c: (-category_total[c], c))
    totals: dict[date, int] = defaultdict(int)
    for (day, _), n in by_channel.items():
        totals[day] += n
    return {
        "bucket": period.bucket,
        "buckets": [b.isoformat() for b in buckets],
        "total": [totals.get(b, 0) for b in buckets],
        "by_channel": _series(buckets, by_channel, channels),
        "by_category": _series(buckets, by_category, categories),
    }


# On PostgreSQL a period's posts are counted per (platform, state) combination and per bucket
# by ranges of ix_social_posts_report_counts (platform, state, posted_at): every count is an
# index-only range count, so a year (1,000,000 posts) costs what a bare count(*) of its entries
# costs, with no per-row bucket expression, no text column read and no hashing (the GROUP BY
# it replaces spent 2-3x that). The combinations present are found by skipping through the
# index (one descent each: PostgreSQL 15 has no skip scan of its own).
_MENTION_COUNTS_PG = text("""
WITH RECURSIVE combos AS (
    (SELECT platform, state FROM social_posts ORDER BY platform, state LIMIT 1)
    UNION ALL
    SELECT next.platform, next.state FROM combos,
        LATERAL (SELECT p.platform, p.state FROM social_posts p
                 WHERE (p.platform, p.state) > (combos.platform, combos.state)
                 ORDER BY p.platform, p.state LIMIT 1) AS next
), buckets AS (
    SELECT starts, ends, i
    FROM unnest(CAST(:starts AS timestamptz[]), CAST(:ends AS timestamptz[]))
        WITH ORDINALITY AS b (starts, ends, i)
)
SELECT combos.platform, combos.state, buckets.i,
    (SELECT count(*) FROM social_posts p
     WHERE p.platform = combos.platform AND p.state = combos.state
       AND p.posted_at >= buckets.starts AND p.posted_at < buckets.ends) AS n
FROM combos CROSS JOIN buckets
""")


def _bucket_bounds(period: Period) -> list[tuple[datetime, datetime]]:
    """Each bucket of `period.buckets()` as [start, end) clipped to the period: together they
    cover the period exactly once, as date_bin would assign its rows."""
    step = timedelta(days=7 if period.bucket == "week" else 1)
    bounds = []
    for day in period.buckets():
        start = datetime.combine(day, time(0), tzinfo=UTC)
        bounds.append((max(start, period.since), min(start + step, period.until)))
    return bounds


async def _mention_counts(
    session: AsyncSession, period: Period
) -> list[tuple[date, str, str, int]]:
    """(bucket, platform, state, posts) for every combination with posts in the period."""
    if _postgres(session):
        bounds = _bucket_bounds(period)
        buckets = period.buckets()
        rows = await session.execute(_MENTION_COUNTS_PG, {
            "starts": [start for start, _ in bounds], "ends": [end for _, end in bounds],
        })
        return [(buckets[i - 1], platform, state, n)
                for platform, state, i, n in rows.all() if n]
    bucket = _bucket_of(SocialPost.posted_at, period.bucket, False).label("b")
    grouped = await session.execute(
        select(bucket, SocialPost.platform, SocialPost.state, func.count())
        .where(_in(period, SocialPost.posted_at))
        .group_by(bucket, SocialPost.platform, SocialPost.state)
    )
    return [(_as_date(b), platform, state, n) for b, platform, state, n in grouped.all()]


async def _mentions(session: AsyncSession, period: Period) -> dict[str, Any]:
    """Posts by state and platform, and flagged vs handled per day (or week)."""
    rows = await _mention_counts(session, period)
    by_state = dict.fromkeys(MENTION_STATES, 0)
    by_platform: dict[str, dict[str, int]] = {}
    flagged_per: dict[date, int] = defaultdict(int)
    handled_per: dict[date, int] = defaultdict(int)
    for b, platform, state, n in rows:
        by_state[state] = by_state.get(state, 0) + n
        counts = by_platform.setdefault(platform, {"total": 0, "flagged": 0, "handled": 0})
        counts["total"] += n
        day = b
        if state in NEEDED_ATTENTION:
            counts["flagged"] += n
            flagged_per[day] += n
        if state in HANDLED:
            counts["handled"] += n
            handled_per[day] += n
    flagged = sum(by_state[s] for s in NEEDED_ATTENTION)
    handled = sum(by_state[s] for s in HANDLED)
    buckets = period.buckets()
    return {
        "total": sum(by_state.values()),
        "flagged": flagged,
        "handled": handled,
        "awaiting": by_state["flagged"],
        "handled_rate": _rate(handled, flagged),
        "by_state": by_state,
        "by_platform": dict(sorted(by_platform.items())),
        "volume": {
            "bucket": period.bucket,
            "buckets": [b.isoformat() for b in buckets],
            "flagged": [flagged_per.get(b, 0) for b in buckets],
            "handled": [handled_per.get(b, 0) for b in buckets],
        },
    }


def _assemble(
    period: Period,
    counts: dict[str, Any],
    previous: dict[str, int],
    csat: dict[str, Any],
    times: dict[str, Any],
    mentions: dict[str, Any],
    volume: dict[str, Any],
) -> dict[str, Any]:
    return {
        "period": {
            "since": period.since.isoformat(),
            "until": period.until.isoformat(),
            "bucket": period.bucket,
        },
        "tickets": counts["tickets"],
        "csat": csat,
        **times,
        "resolution_rate": counts["resolution_rate"],
        "sla": counts["sla"],
        "sla_by_priority": counts["sla_by_priority"],
        "top_categories": _top_categories(counts["tickets"]["by_category"], previous),
        "mentions": mentions,
        "volume": volume,
        "previous": {
            "since": period.previous.since.isoformat(),
            "until": period.previous.until.isoformat(),
            "tickets": sum(previous.values()),
            "by_category": dict(sorted(previous.items(), key=lambda kv: (-kv[1], kv[0]))),
        },
    }


async def summary(session: AsyncSession, period: Period, now: datetime) -> dict[str, Any]:
    """Everything the reports show, as JSON-ready data (CONTRACT §7 keys plus extras), one
    query after the other in one session. `now` decides which open tickets are overdue."""
    await _tune(session)
    return _assemble(
        period,
        await _ticket_counts(session, period, now),
        await _category_counts(session, period.previous),
        await _csat(session, period),
        await _times(session, period),
        await _mentions(session, period),
        await _volume(session, period),
    )


async def summary_of(store: Store, period: Period, now: datetime) -> dict[str, Any]:
    """`summary`, but on PostgreSQL its six independent queries run at once, each on a
    connection of its own: the report takes as long as its slowest query, not their sum.
    (SQLite has one writer and in-process reads; there it stays one session.)"""
    if not store.is_postgres:
        async with store.read() as session:
            return await summary(session, period, now)

    async def part(query: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
        async with store.read() as session:
            await _tune(session)
            return await query(session)

    counts, previous, csat, times, mentions, volume = await asyncio.gather(
        part(lambda s: _ticket_counts(s, period, now)),
        part(lambda s: _category_counts(s, period.previous)),
        part(lambda s: _csat(s, period)),
        part(lambda s: _times(s, period)),
        part(lambda s: _mentions(s, period)),
        part(lambda s: _volume(s, period)),
    )
    return _assemble(period, counts, previous, csat, times, mentions, volume)


# --- tables (CSV exports and the CLI) --------------------------------------------------------

CHARTS: tuple[str, ...] = ("volume", "tickets", "categories", "response", "sla", "csat",
                           "mentions")
VOLUME_BY = ("channel", "category")
Table = tuple[list[str], list[list[Any]]]


def table(report: dict[str, Any], chart: str, by: str = "channel") -> Table:
    """One chart's figures as a header and rows, as its CSV export has them."""
    if chart == "volume":
        volume = report["volume"]
        series = volume[f"by_{by}"]
        header = ["period_start", *series, "total"]
        rows = [
            [bucket, *(values[i] for values in series.values()), volume["total"][i]]
            for i, bucket in enumerate(volume["buckets"])
        ]
        return header, rows
    if chart == "tickets":
        return ["dimension", "value", "count"], [
            [dim, value, n]
            for dim in ("status", "category", "channel", "priority")
            for value, n in report["tickets"][f"by_{dim}"].items()
        ]
    if chart == "categories":
        keys = ["category", "count", "previous", "change", "change_pct", "trend"]
        return keys, [[item[k] for k in keys] for item in report["top_categories"]]
    if chart == "response":
        return ["measure", "median", "p90", "count"], [
            [name, report[name]["median"], report[name]["p90"], report[name]["count"]]
            for name in ("first_response_minutes", "resolution_hours")
        ]
    if chart == "sla":
        keys = ["met", "breached", "pending", "compliance"]
        rows = [[p, *(v[k] for k in keys)] for p, v in report["sla_by_priority"].items()]
        rows.append(["all", *(report["sla"][k] for k in keys)])
        return ["priority", *keys], rows
    if chart == "csat":
        return ["score", "count"], [
            [int(s), n] for s, n in report["csat"]["distribution"].items()
        ]
    if chart == "mentions":
        volume = report["mentions"]["volume"]
        return ["period_start", "flagged", "handled"], [
            [b, volume["flagged"][i], volume["handled"][i]]
            for i, b in enumerate(volume["buckets"])
        ]
    raise KeyError(chart)


def flat_rows(report: dict[str, Any]) -> list[list[Any]]:
    """Every figure as (figure, key, value): what `careloop report --format csv` prints."""
    rows: list[list[Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and "buckets" in value:
            for name, series in value.items():
                if isinstance(series, dict):
                    for sub, values in series.items():
                        rows.extend([f"{prefix}.{name}.{sub}", b, v]
                                    for b, v in zip(value["buckets"], values, strict=True))
                elif isinstance(series, list) and name != "buckets":
                    rows.extend([f"{prefix}.{name}", b, v]
                                for b, v in zip(value["buckets"], series, strict=True))
            return
        if isinstance(value, dict):
            for key, sub in value.items():
                if isinstance(sub, dict | list):
                    walk(f"{prefix}.{key}" if prefix else key, sub)
                else:
                    rows.append([prefix or key, key, sub])
            return
        if isinstance(value, list):  # top categories
            for item in value:
                for key, sub in item.items():
                    if key != "category":
                        rows.append([f"{prefix}.{key}", item["category"], sub])

    walk("", report)
    return rows
