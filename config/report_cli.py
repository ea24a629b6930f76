"""`careloop report` (CONTRACT §3): the figures of /api/reports/summary in the terminal."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TextIO

from config.settings import load_settings
from storage import reports
from storage.clock import utc_now
from storage.db import create_store
from storage.migrate import upgrade
from storage.reports import BadPeriod, Period

FORMATS = ("text", "json", "csv")
ARROWS = {"up": "↑", "down": "↓", "flat": "→", "new": "new"}


def add_report_commands(sub: Any) -> None:
    report = sub.add_parser("report", help="ticket, SLA, CSAT and mention figures for a period")
    report.add_argument("--since", metavar="DATE", help="first day (YYYY-MM-DD, UTC)")
    report.add_argument("--until", metavar="DATE", help="first day NOT included")
    report.add_argument("--format", choices=FORMATS, default="text")
    report.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    try:
        period = reports.parse_period(args.since, args.until, utc_now())
    except BadPeriod as exc:
        print(f"careloop report: {exc}", file=sys.stderr)
        return 2
    settings = load_settings(args.config)
    summary = asyncio.run(_summary(settings.database_url, period))
    write_report(summary, args.format, sys.stdout)
    return 0


async def _summary(url: str, period: Period) -> dict[str, Any]:
    store = create_store(url)
    try:
        await upgrade(store)
        return await reports.summary_of(store, period, utc_now())
    finally:
        await store.close()


def write_report(summary: dict[str, Any], fmt: str, out: TextIO) -> None:
    if fmt == "json":
        out.write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["figure", "key", "value"])
        writer.writerows([["" if v is None else v for v in row]
                          for row in reports.flat_rows(summary)])
    else:
        out.write(text_report(summary))


# --- text --------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}" if abs(value) >= 1000 else f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; the first left-aligned, numbers to the right."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        first = values[0].ljust(widths[0])
        rest = [v.rjust(w) for v, w in zip(values[1:], widths[1:], strict=True)]
        return "  " + "  ".join([first, *rest]).rstrip()

    body = [line(list(header)), line(["-" * w for w in widths])] + [line(r) for r in cells]
    return f"{title}\n" + "\n".join(body) + "\n\n"


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


def text_report(s: dict[str, Any]) -> str:
    period = s["period"]
    since = period["since"][:10]
    last = (datetime.fromisoformat(period["until"]) - timedelta(microseconds=1)).date()
    t = s["tickets"]
    parts = [
        f"careloop report {since} .. {last} (UTC, per {period['bucket']}); "
        f"previous period: {s['previous']['tickets']} tickets\n\n",
        f"Tickets {t['total']}   resolution rate {_pct(s['resolution_rate'])}   "
        f"SLA compliance {_pct(s['sla']['compliance'])}   CSAT {_cell(s['csat']['average'])} "
        f"({s['csat']['count']} answers)\n\n",
    ]
    for dim in ("status", "priority", "channel", "category"):
        parts.append(_table(f"Tickets by {dim}", [dim, "tickets"],
                            [[k, v] for k, v in t[f"by_{dim}"].items()]))
    parts.append(_table("Response and resolution", ["measure", "median", "p90", "tickets"], [
        ["first response (minutes)", *(s["first_response_minutes"][k]
                                       for k in ("median", "p90", "count"))],
        ["resolution (hours)", *(s["resolution_hours"][k] for k in ("median", "p90", "count"))],
    ]))
    sla_rows = [[p, v["met"], v["breached"], v["pending"], _pct(v["compliance"])]
                for p, v in s["sla_by_priority"].items()]
    sla = s["sla"]
    sla_rows.append(["all", sla["met"], sla["breached"], sla["pending"],
                     _pct(sla["compliance"])])
    parts.append(_table("SLA", ["priority", "met", "breached", "pending", "compliance"],
                        sla_rows))
    parts.append(_table("Top categories (vs previous period)",
                        ["category", "tickets", "previous", "change", "trend"],
                        [[c["category"], c["count"], c["previous"], f"{c['change']:+d}",
                          ARROWS[c["trend"]]] for c in s["top_categories"]]))
    parts.append(_table("CSAT", ["score", "answers"],
                        [[k, v] for k, v in s["csat"]["distribution"].items()]))
    volume = s["volume"]
    channels = list(volume["by_channel"])
    parts.append(_table(f"Volume per {volume['bucket']}", ["from", *channels, "total"], [
        [b, *(volume["by_channel"][c][i] for c in channels), volume["total"][i]]
        for i, b in enumerate(volume["buckets"])
    ]))
    m = s["mentions"]
    parts.append(
        f"Mentions {m['total']}   flagged {m['flagged']}   handled {m['handled']} "
        f"({_pct(m['handled_rate'])})   awaiting review {m['awaiting']}\n\n"
    )
    parts.append(_table("Mentions by platform", ["platform", "posts", "flagged", "handled"],
                        [[p, v["total"], v["flagged"], v["handled"]]
                         for p, v in m["by_platform"].items()]))
    return "".join(parts).rstrip("\n") + "\n"
