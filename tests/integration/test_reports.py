"""Reports on a small, known data set: every figure below is worked out by hand from the
tickets, surveys and posts seeded here (on SQLite and on PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from sqlalchemy import insert, update

from desk.app import make_app
from desk.context import DeskContext
from storage import reports
from storage.accounts import issue_token, upsert_agent
from storage.clock import ManualClock
from storage.db import Store
from storage.intake import TicketIntake
from storage.models import SocialPost, Ticket
from storage.reports import BadPeriod, Period, parse_period
from storage.tickets import (
    NewTicket,
    TicketRules,
    create_ticket,
    find_or_create_customer,
    move_ticket,
    record_survey,
    reply,
)
from tests.integration.helpers import agent, chat_customer, rules

SINCE = datetime(2026, 3, 1, tzinfo=UTC)  # a Sunday
UNTIL = datetime(2026, 3, 8, tzinfo=UTC)
NOW = datetime(2026, 3, 9, 12, 0, tzinfo=UTC)


def at(day: int, hour: int = 0, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


class Seeder:
    def __init__(self, store: Store, clock: ManualClock, r: TicketRules) -> None:
        self.store, self.clock, self.rules = store, clock, r

    async def ticket(self, when: datetime, channel: str, **kw: Any) -> int:
        self.clock.now = when
        fields: dict[str, Any] = {"kind": "complaint", "description": "seeded"} | kw
        if channel == "telegram":
            who = await chat_customer(self.store, self.rules, f"tg{when.timestamp()}")
            fields |= {"customer_id": who.customer_id, "identity_id": who.id}
        async with self.store.transaction() as s:
            if channel != "telegram":
                customer = await find_or_create_customer(
                    s, name="Ann", phone=None, email=None, now=when
                )
                fields["customer_id"] = customer.id
            ticket = await create_ticket(s, self.rules, NewTicket(channel=channel, **fields))
            return ticket.id

    async def move(self, when: datetime, ticket_id: int, status: str) -> None:
        self.clock.now = when
        async with self.store.transaction() as s:
            await move_ticket(s, self.rules, ticket_id, status, actor="agent:alice")

    async def reply(self, when: datetime, ticket_id: int) -> None:
        self.clock.now = when
        alice = await agent(self.store)
        async with self.store.transaction() as s:
            await reply(s, self.rules, ticket_id, "We are on it", public=True, agent=alice)

    async def survey(self, when: datetime, ticket_id: int, score: int) -> None:
        self.clock.now = when
        async with self.store.transaction() as s:
            await record_survey(s, self.rules, ticket_id, score, channel="telegram")


async def seed_known_period(store: Store) -> dict[str, int]:
    """The week of 1-8 March 2026 and the week before it (see the figures in the tests)."""
    clock = ManualClock(at(20, month=2))
    sd = Seeder(store, clock, rules(clock))
    t: dict[str, int] = {}
    # The previous week: one delivery, two billing complaints.
    t["t8"] = await sd.ticket(at(25, 10, month=2), "phone", category="billing")
    t["t9"] = await sd.ticket(at(26, 10, month=2), "phone", category="billing")
    t["t6"] = await sd.ticket(at(28, 23, 59, month=2), "telegram", category="delivery")
    # This week. T5: P1 at the very first moment of the period, answered and resolved in time.
    t["t5"] = await sd.ticket(SINCE, "telegram", category="product_safety")
    await sd.move(at(1, 0, 10), t["t5"], "in_progress")
    await sd.move(at(1, 0, 30), t["t6"], "resolved")
    # T6 was created last week; its survey, answered this week, counts this week.
    await sd.survey(at(1, 1), t["t6"], 1)
    await sd.move(at(1, 2), t["t5"], "resolved")
    await sd.survey(at(1, 3), t["t5"], 3)
    # T1: replied after 30 minutes, resolved after 4 hours.
    t["t1"] = await sd.ticket(at(2, 9), "telegram", category="delivery")
    await sd.reply(at(2, 9, 30), t["t1"])
    await sd.move(at(2, 13), t["t1"], "resolved")
    await sd.survey(at(2, 14), t["t1"], 5)
    # T2: P2, acknowledged 90 minutes in (the 1 h target missed), resolved on the 24 h mark.
    t["t2"] = await sd.ticket(at(3, 10), "phone", category="billing", priority="P2")
    await sd.move(at(3, 11, 30), t["t2"], "acknowledged")
    await sd.move(at(4, 10), t["t2"], "resolved")
    await sd.survey(at(4, 11), t["t2"], 4)
    # T3: never answered: overdue by NOW although the SLA timer never ran.
    t["t3"] = await sd.ticket(at(4, 8), "webchat", category="delivery")
    # T4: a suggestion, answered in 10 minutes, not due until 12 March.
    t["t4"] = await sd.ticket(at(5, 9), "email", kind="suggestion")
    await sd.reply(at(5, 9, 10), t["t4"])
    # T10: a duplicate merged into T3: counted once, as T3.
    t["t10"] = await sd.ticket(at(6, 9), "webchat", category="delivery")
    # T7: the first moment after the period.
    t["t7"] = await sd.ticket(UNTIL, "phone", category="billing")
    async with store.transaction() as s:
        await s.execute(
            update(Ticket).where(Ticket.id == t["t10"])
            .values(merged_into_id=t["t3"], status="closed")
        )
        posts = [
            ("x", "flagged", at(2, 8)), ("x", "replied", at(2, 9)),
            ("mastodon", "dismissed", at(3, 8)), ("x", "ignored", at(3, 9)),
            ("mastodon", "new", at(4, 8)), ("x", "flagged", at(28, 8, month=2)),
        ]
        await s.execute(insert(SocialPost), [
            {"platform": p, "stream": "mentions", "external_id": f"p{i}", "text": "@shop hi",
             "posted_at": when, "fetched_at": when, "state": state, "group_size": 1,
             "version": 1}
            for i, (p, state, when) in enumerate(posts)
        ])
    return t


async def summary(store: Store, period: Period, now: datetime = NOW) -> dict[str, Any]:
    async with store.read() as session:
        return await reports.summary(session, period, now)


async def test_ticket_figures_of_a_known_week(store: Store) -> None:
    await seed_known_period(store)
    got = await summary(store, Period(SINCE, UNTIL))
    tickets = got["tickets"]
    assert tickets["total"] == 5  # T1-T5; T6 is last week, T7 next week, T10 merged
    assert tickets["by_status"] == {"new": 2, "acknowledged": 0, "in_progress": 0,
                                    "waiting_customer": 0, "resolved": 3, "closed": 0}
    assert tickets["by_category"] == {"delivery": 2, "billing": 1, "none": 1,
                                      "product_safety": 1}
    assert {k: v for k, v in tickets["by_channel"].items() if v} == {
        "telegram": 2, "phone": 1, "webchat": 1, "email": 1}
    assert tickets["by_priority"] == {"P1": 1, "P2": 1, "P3": 2, "P4": 1}
    assert got["resolution_rate"] == 0.6
    # First responses 10 (T5), 10 (T4), 30 (T1), 90 (T2) minutes: median 20, p90 30+0.7*60.
    assert got["first_response_minutes"] == {"median": 20.0, "p90": 72.0, "count": 4}
    # Resolutions 2 (T5), 4 (T1), 24 (T2) hours: median 4, p90 4+0.8*20.
    assert got["resolution_hours"] == {"median": 4.0, "p90": 20.0, "count": 3}


async def test_sla_compliance_overall_and_by_priority(store: Store) -> None:
    await seed_known_period(store)
    got = await summary(store, Period(SINCE, UNTIL))
    # Met: T1, T5. Breached: T2 (late first response), T3 (overdue). Pending: T4.
    assert got["sla"] == {"met": 2, "breached": 2, "pending": 1, "compliance": 0.5}
    by = got["sla_by_priority"]
    assert by["P1"] == {"met": 1, "breached": 0, "pending": 0, "compliance": 1.0}
    assert by["P2"] == {"met": 0, "breached": 1, "pending": 0, "compliance": 0.0}
    assert by["P3"] == {"met": 1, "breached": 1, "pending": 0, "compliance": 0.5}
    assert by["P4"] == {"met": 0, "breached": 0, "pending": 1, "compliance": None}
    # Seen earlier, before T3's first-response deadline passed, T3 was not yet late.
    early = await summary(store, Period(SINCE, UNTIL), now=at(4, 9))
    assert early["sla"]["breached"] == 1 and early["sla"]["pending"] == 2


async def test_csat_counts_surveys_answered_in_the_period(store: Store) -> None:
    await seed_known_period(store)
    got = await summary(store, Period(SINCE, UNTIL))
    # 1 (T6, a ticket of last week answered this week), 3, 4, 5.
    assert got["csat"] == {"average": 3.25, "count": 4,
                           "distribution": {"1": 1, "2": 0, "3": 1, "4": 1, "5": 1},
                           "satisfied_rate": 0.5}


async def test_top_categories_trend_against_the_previous_week(store: Store) -> None:
    await seed_known_period(store)
    got = await summary(store, Period(SINCE, UNTIL))
    assert got["top_categories"] == [
        {"category": "delivery", "count": 2, "previous": 1, "change": 1, "change_pct": 100.0,
         "trend": "up"},
        {"category": "billing", "count": 1, "previous": 2, "change": -1, "change_pct": -50.0,
         "trend": "down"},
        {"category": "product_safety", "count": 1, "previous": 0, "change": 1,
         "change_pct": None, "trend": "new"},
    ]
    assert got["previous"]["tickets"] == 3
    assert got["previous"]["since"].startswith("2026-02-22")


async def test_volume_per_day_by_channel_and_category(store: Store) -> None:
    await seed_known_period(store)
    volume = (await summary(store, Period(SINCE, UNTIL)))["volume"]
    assert volume["bucket"] == "day"
    assert volume["buckets"] == [f"2026-03-0{d}" for d in range(1, 8)]
    assert volume["total"] == [1, 1, 1, 1, 1, 0, 0]
    assert volume["by_channel"] == {
        "telegram": [1, 1, 0, 0, 0, 0, 0], "webchat": [0, 0, 0, 1, 0, 0, 0],
        "phone": [0, 0, 1, 0, 0, 0, 0], "email": [0, 0, 0, 0, 1, 0, 0],
    }
    assert volume["by_category"]["delivery"] == [0, 1, 0, 1, 0, 0, 0]
    assert volume["by_category"]["none"] == [0, 0, 0, 0, 1, 0, 0]


async def test_volume_per_week_over_a_long_period(store: Store) -> None:
    await seed_known_period(store)
    got = await summary(store, Period(at(1, month=1), at(1, month=5)))
    volume = got["volume"]
    assert volume["bucket"] == "week"
    # Weeks start on Monday: 29 Dec 2025 holds 1 January.
    assert volume["buckets"][0] == "2025-12-29"
    week = dict(zip(volume["buckets"], volume["total"], strict=True))
    # Mon 23 Feb - Sun 1 Mar: T8, T9, T6, T5. Mon 2 - Sun 8 Mar: T1-T4 and T7 (T10 merged).
    assert week["2026-02-23"] == 4 and week["2026-03-02"] == 5
    assert sum(volume["total"]) == got["tickets"]["total"] == 9


async def test_mentions_flagged_and_handled(store: Store) -> None:
    await seed_known_period(store)
    mentions = (await summary(store, Period(SINCE, UNTIL)))["mentions"]
    assert (mentions["total"], mentions["flagged"], mentions["handled"],
            mentions["awaiting"]) == (5, 3, 2, 1)
    assert mentions["by_state"] == {"new": 1, "flagged": 1, "ticketed": 0, "replied": 1,
                                    "dismissed": 1, "ignored": 1}
    assert mentions["by_platform"] == {
        "mastodon": {"total": 2, "flagged": 1, "handled": 1},
        "x": {"total": 3, "flagged": 2, "handled": 1},
    }
    assert mentions["volume"]["flagged"][:3] == [0, 2, 1]
    assert mentions["volume"]["handled"][:3] == [0, 1, 1]


async def test_an_empty_period_has_zeros_and_no_made_up_averages(store: Store) -> None:
    await seed_known_period(store)
    got = await summary(store, Period(at(1, month=6), at(8, month=6)))
    assert got["tickets"]["total"] == 0
    assert got["resolution_rate"] is None
    assert got["first_response_minutes"] == {"median": None, "p90": None, "count": 0}
    assert got["resolution_hours"] == {"median": None, "p90": None, "count": 0}
    assert got["sla"] == {"met": 0, "breached": 0, "pending": 0, "compliance": None}
    assert got["csat"]["average"] is None and got["csat"]["count"] == 0
    assert got["top_categories"] == []
    assert got["volume"]["total"] == [0] * 7 and got["mentions"]["total"] == 0


async def test_a_single_response_time_is_its_own_median_and_p90(store: Store) -> None:
    clock = ManualClock(SINCE)
    sd = Seeder(store, clock, rules(clock))
    ticket = await sd.ticket(at(2, 9), "telegram", category="delivery")
    await sd.reply(at(2, 9, 45), ticket)
    got = await summary(store, Period(SINCE, UNTIL))
    assert got["first_response_minutes"] == {"median": 45.0, "p90": 45.0, "count": 1}


def test_reading_periods() -> None:
    now = datetime(2026, 3, 9, 15, 30, tzinfo=UTC)
    default = parse_period(None, None, now)
    assert (default.since, default.until) == (at(8, month=2), at(10))  # 30 days to end of today
    assert parse_period("2026-03-01", "2026-03-08", now) == Period(SINCE, UNTIL)
    only_since = parse_period("2026-03-01", None, now)
    assert only_since.until == at(10)
    assert parse_period("2026-03-01T08:00:00+08:00", "2026-03-02", now).since == at(1)
    assert Period(SINCE, UNTIL).previous == Period(at(22, month=2), SINCE)
    for since, until in (("yesterday", None), ("2026-02-30", None), ("2026-03-08", "2026-03-01"),
                         ("2026-03-01", "2026-03-01"), ("2020-01-01", "2026-01-01")):
        with pytest.raises(BadPeriod):
            parse_period(since, until, now)


def test_buckets_cover_the_period() -> None:
    assert len(Period(SINCE, UNTIL).buckets()) == 7
    long = Period(at(1, month=1), at(1, month=5))
    weeks = long.buckets()
    assert weeks[0].weekday() == 0 and weeks[-1] == at(27, month=4).date()
    assert all(b - a == timedelta(days=7) for a, b in pairwise(weeks))


def test_tables_and_flat_rows_of_a_summary() -> None:
    report = {
        "volume": {"bucket": "day", "buckets": ["2026-03-01", "2026-03-02"], "total": [3, 1],
                   "by_channel": {"telegram": [2, 1], "x": [1, 0]}, "by_category": {}},
        "resolution_rate": 0.5,
    }
    header, rows = reports.table(report, "volume", "channel")
    assert header == ["period_start", "telegram", "x", "total"]
    assert rows == [["2026-03-01", 2, 1, 3], ["2026-03-02", 1, 0, 1]]
    flat = reports.flat_rows(report)
    assert ["volume.by_channel.telegram", "2026-03-02", 1] in flat
    assert ["resolution_rate", "resolution_rate", 0.5] in flat


# --- /api/reports ------------------------------------------------------------------------------


@pytest.fixture
async def api(store: Store) -> AsyncIterator[tuple[TestClient, dict[str, str]]]:
    hasher = PasswordHasher(time_cost=1, memory_cost=1024)
    r = rules(ManualClock(NOW))
    async with store.transaction() as s:
        await upsert_agent(s, hasher, username="mgr", role="agent", password=None, now=NOW)
        token = await issue_token(s, "mgr", NOW)
    intake = TicketIntake(store, r)
    client = TestClient(TestServer(make_app(
        DeskContext(store=store, rules=r, hasher=hasher, intake=intake))))
    await client.start_server()
    yield client, {"Authorization": f"Bearer {token}"}
    await client.close()
    await intake.close()


async def test_summary_endpoint_has_the_contract_keys(
    store: Store, api: tuple[TestClient, dict[str, str]]
) -> None:
    await seed_known_period(store)
    client, auth = api
    resp = await client.get("/api/reports/summary?since=2026-03-01&until=2026-03-08",
                            headers=auth)
    assert resp.status == 200
    body = await resp.json()
    for key in ("tickets", "csat", "first_response_minutes", "resolution_hours",
                "resolution_rate", "sla", "top_categories", "mentions"):
        assert key in body, key
    assert set(body["csat"]) >= {"average", "count", "distribution"}
    assert set(body["sla"]) >= {"met", "breached", "compliance"}
    assert set(body["first_response_minutes"]) >= {"median", "p90"}
    assert body["tickets"]["total"] == 5 and body["tickets"]["by_status"]["resolved"] == 3
    assert body["sla"]["compliance"] == 0.5 and body["csat"]["average"] == 3.25
    # Without dates: the last 30 days up to the end of the (test clock's) day.
    default = await (await client.get("/api/reports/summary", headers=auth)).json()
    assert default["period"]["since"].startswith("2026-02-08")
    assert default["period"]["until"].startswith("2026-03-10")
    assert default["tickets"]["total"] == 9


async def test_bad_dates_are_422_in_the_envelope(api: tuple[TestClient, dict[str, str]]) -> None:
    client, auth = api
    for query in ("since=tomorrow", "since=2026-03-08&until=2026-03-01", "until=2026-13-01"):
        resp = await client.get(f"/api/reports/summary?{query}", headers=auth)
        assert resp.status == 422, query
        assert (await resp.json())["error"]["code"] == "invalid"
    resp = await client.get("/api/reports/volume.csv?by=colour", headers=auth)
    assert resp.status == 422
    assert (await client.get("/api/reports/summary")).status == 401


async def test_csv_exports(store: Store, api: tuple[TestClient, dict[str, str]]) -> None:
    await seed_known_period(store)
    client, auth = api
    period = "since=2026-03-01&until=2026-03-08"
    resp = await client.get(f"/api/reports/volume.csv?{period}&by=channel", headers=auth)
    assert resp.status == 200
    assert resp.content_type == "text/csv"
    assert resp.headers["Content-Disposition"] == (
        'attachment; filename="careloop-volume-by-channel-2026-03-01-to-2026-03-07.csv"')
    lines = (await resp.text()).splitlines()
    assert lines[0] == "period_start,telegram,webchat,phone,email,total"
    assert lines[1] == "2026-03-01,1,0,0,0,1"
    assert len(lines) == 8
    by_category = await (await client.get(f"/api/reports/volume.csv?{period}&by=category",
                                          headers=auth)).text()
    assert by_category.splitlines()[0].startswith("period_start,delivery,")
    sla = (await (await client.get(f"/api/reports/sla.csv?{period}", headers=auth)).text())
    assert sla.splitlines() == ["priority,met,breached,pending,compliance", "P1,1,0,0,1.0",
                                "P2,0,1,0,0.0", "P3,1,1,0,0.5", "P4,0,0,1,", "all,2,2,1,0.5"]
    for chart in reports.CHARTS:
        resp = await client.get(f"/api/reports/{chart}.csv?{period}", headers=auth)
        assert resp.status == 200 and resp.content_type == "text/csv", chart
    spec = await (await client.get("/api/openapi.json")).json()
    assert "get" in spec["paths"]["/api/reports/summary"]
    assert "get" in spec["paths"]["/api/reports/volume.csv"]
