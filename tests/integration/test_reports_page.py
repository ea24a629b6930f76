"""The /reports page as a manager sees it: the period picker, the charts as inline SVG with a
CSV link each, data escaped, Chinese for a zh account, no inline style (CSP)."""

from __future__ import annotations

import re

from sqlalchemy import insert

from desk.charts import columns, lines, nice_max, ranked_bars, split_bars, stacked_bars
from storage.clock import ManualClock
from storage.db import Store
from storage.models import Customer, Ticket
from tests.desk_helpers import add_agent, login, open_desk
from tests.integration.helpers import rules
from tests.integration.test_reports import NOW, at, seed_known_period

WEEK = "since=2026-03-01&until=2026-03-08"
EVIL = '<script>alert("x")</script>'


async def _page(store: Store, query: str, language: str = "en") -> str:
    await add_agent(store, "maria", language=language)
    async with open_desk(store, rules=rules(ManualClock(NOW))) as client:
        await login(client, "maria")
        resp = await client.get(f"/reports?{query}")
        assert resp.status == 200
        return await resp.text()


async def test_the_page_draws_every_chart_with_its_csv_link(store: Store) -> None:
    await seed_known_period(store)
    html = await _page(store, WEEK)
    assert html.count('<svg class="chart"') == 8
    for chart in ("volume", "categories", "sla", "response", "csat", "mentions", "tickets"):
        assert f'href="/api/reports/{chart}.csv?{WEEK.replace("&", "&amp;")}' in html, chart
    assert "by=category" in html and "by=channel" in html
    # The figures of the known week: 5 tickets, 60% resolved, SLA 2 of 4, CSAT 3.25.
    assert 'kpi-value">5<' in html and 'kpi-value">60%<' in html
    assert "(2/4)" in html and 'kpi-value">3.25<' in html
    # The period picker shows the week, `to` being the last day included.
    assert 'name="since" value="2026-03-01"' in html and 'name="to" value="2026-03-07"' in html
    assert 'href="/reports?since=2026-03-03&amp;until=2026-03-10"' in html  # last 7 days
    assert 'aria-current="page">Reports<' in html
    # Bars say what they are on hover; the trend of delivery is up by one ticket.
    assert "<title>2026-03-02 · telegram: 1</title>" in html
    assert "↑ +1 (+100%)" in html
    # CSP: no inline style and no inline script.
    assert not re.search(r"\sstyle=", html)
    assert "<script>" not in html


async def test_the_form_takes_the_last_day_included(store: Store) -> None:
    await seed_known_period(store)
    html = await _page(store, "since=2026-03-01&to=2026-03-07")
    assert 'kpi-value">5<' in html
    assert "/api/reports/sla.csv?since=2026-03-01&amp;until=2026-03-08" in html


async def test_a_bad_period_says_so_and_shows_the_last_30_days(store: Store) -> None:
    html = await _page(store, "since=someday")
    assert 'role="alert"' in html and "someday" in html and "last 30 days" in html
    assert "No data for this period" in html


async def test_labels_from_the_data_are_escaped(store: Store) -> None:
    async with store.transaction() as s:
        customer = (await s.execute(insert(Customer).values(name="x", created_at=at(1))
                                    .returning(Customer.id))).scalar_one()
        await s.execute(insert(Ticket).values(
            kind="complaint", status="new", priority="P3", category=EVIL, channel="import",
            customer_id=customer, subject="s", description="d", created_at=at(2),
            updated_at=at(2), first_response_due=at(9), resolution_due=at(9),
            needs_human=False, version=1))
    html = await _page(store, WEEK)
    assert EVIL not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


async def test_a_chinese_account_reads_chinese(store: Store) -> None:
    await seed_known_period(store)
    html = await _page(store, WEEK, language="zh")
    assert "报表" in html and "主要问题类别" in html and "各优先级 SLA 达成" in html
    assert "配送" in html  # delivery


def test_charts_scale_and_escape() -> None:
    assert [nice_max(v) for v in (0, 1, 3, 7, 18, 240, 1001)] == [1, 1, 5, 10, 20, 250, 2000]
    bars = stacked_bars("Volume", ["2026-03-01", "2026-03-02"], {EVIL: [1, 3]})
    assert EVIL not in bars and "&lt;script&gt;" in bars
    assert bars.count("<rect") == 3  # two bars and one legend swatch
    # The taller bar is three times the shorter one.
    heights = [float(h) for h in re.findall(r'<rect x="[\d.]+" y="[\d.]+" width="[\d.]+" '
                                            r'height="([\d.]+)"', str(bars))[:2]]
    assert heights[1] == 3 * heights[0]
    for empty in (stacked_bars("v", ["2026-03-01"], {"x": [0]}), lines("m", [], {}),
                  ranked_bars("c", []), columns("r", [("median", 0)]),
                  split_bars("s", [("P1", 0, 0, 0)])):
        assert "No data for this period" in empty
    sla = split_bars("SLA", [("P1", 3, 1, 2)])
    assert "75%  (3/4)" in sla
