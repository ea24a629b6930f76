"""/api/reports: the summary of a period (CONTRACT §7) and one CSV export per chart."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from aiohttp import web

from desk.context import CTX
from desk.errors import ApiError
from desk.routes import Handler, Operation
from storage import reports
from storage.reports import BadPeriod, Period

PERIOD_QUERY = (
    ("since", "first day (YYYY-MM-DD, UTC) or ISO time; default 30 days before until"),
    ("until", "first day NOT included; default the end of today"),
)


def period_of(request: web.Request) -> Period:
    try:
        return reports.parse_period(
            request.query.get("since") or None,
            request.query.get("until") or None,
            request.app[CTX].rules.clock(),
        )
    except BadPeriod as exc:
        raise ApiError(422, "invalid", str(exc)) from None


async def load_summary(request: web.Request, period: Period) -> dict[str, Any]:
    ctx = request.app[CTX]
    return await reports.summary_of(ctx.store, period, ctx.rules.clock())


def csv_text(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return out.getvalue()


def csv_filename(chart: str, period: Period, by: str | None = None) -> str:
    last_day = (period.until - timedelta(microseconds=1)).date()
    what = f"{chart}-by-{by}" if by else chart
    return f"careloop-{what}-{period.since.date()}-to-{last_day}.csv"


async def summary(request: web.Request) -> web.Response:
    return web.json_response(await load_summary(request, period_of(request)))


def _csv_handler(chart: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        by = None
        if chart == "volume":
            by = request.query.get("by", "channel")
            if by not in reports.VOLUME_BY:
                raise ApiError(422, "invalid", "by: channel or category")
        period = period_of(request)
        header, rows = reports.table(await load_summary(request, period), chart, by or "")
        return web.Response(
            text=csv_text(header, rows),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition":
                     f'attachment; filename="{csv_filename(chart, period, by)}"'},
        )

    handler.__name__ = f"{chart}_csv"
    return handler


OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/api/reports/summary", summary,
              "The figures of a period: tickets, times, SLA, CSAT, top categories, mentions",
              query=PERIOD_QUERY, response="ReportSummary"),
    *(
        Operation("GET", f"/api/reports/{chart}.csv", _csv_handler(chart),
                  f"CSV export of the {chart} chart (text/csv)",
                  query=PERIOD_QUERY + ((("by", "channel or category"),)
                                        if chart == "volume" else ()),
                  response="Csv")
        for chart in reports.CHARTS
    ),
)
