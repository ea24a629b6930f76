"""The /reports page: a period picker and the period's charts (server-drawn SVG), each with
its CSV export from /api/reports."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from markupsafe import Markup

from desk import charts
from desk.context import CTX
from desk.pages import page_agent, render, request_lang, translator
from storage import reports
from storage.reports import BadPeriod, Period

Translate = Callable[[str, str], str]
PRESETS = (7, 30, 90, 365)
CATEGORY_ZH = {
    "service_attitude": "服务态度", "service_speed": "服务速度", "product_quality": "产品质量",
    "product_safety": "产品安全", "billing": "账单", "pricing": "价格", "delivery": "配送",
    "returns": "退换货", "store_environment": "门店环境", "website_app": "网站/应用",
    "other": "其他", "none": "无分类",
}
CHANNEL_ZH = {
    "telegram": "Telegram", "webchat": "网页聊天", "x": "X", "mastodon": "Mastodon",
    "phone": "电话", "email": "邮件", "in_store": "门店", "import": "导入",
}


def _names(keys: Any, zh: dict[str, str], t: Translate) -> dict[str, str]:
    return {k: t(k.replace("_", " "), zh.get(k, k)) for k in keys}


def _period(request: web.Request, now: datetime) -> tuple[Period, str | None]:
    """since/until as the API takes them; the form's `to` is the last day *included*."""
    since = request.query.get("since") or None
    until = request.query.get("until") or None
    try:
        to = request.query.get("to")
        if to:
            until = (date.fromisoformat(to.strip()) + timedelta(days=1)).isoformat()
        return reports.parse_period(since, until, now), None
    except (BadPeriod, ValueError) as exc:
        return reports.parse_period(None, None, now), str(exc)


def _query(period: Period) -> str:
    return urlencode({"since": period.since.date().isoformat(),
                      "until": period.until.date().isoformat()}
                     if period.since.time() == period.until.time() == datetime.min.time()
                     else {"since": period.since.isoformat(), "until": period.until.isoformat()})


def _charts(report: dict[str, Any], t: Translate) -> dict[str, Markup]:
    empty = t("No data for this period", "该时段没有数据")
    volume = report["volume"]
    per = t("per day", "按日") if volume["bucket"] == "day" else t("per week", "按周")
    top = report["top_categories"]
    categories = _names([c["category"] for c in top], CATEGORY_ZH, t)
    first, resolution = report["first_response_minutes"], report["resolution_hours"]
    sla = report["sla_by_priority"]
    mentions = report["mentions"]["volume"]
    distribution = report["csat"]["distribution"]
    return {
        "volume_channel": charts.stacked_bars(
            t(f"Tickets {per} by channel", f"工单量（{per}，按渠道）"), volume["buckets"],
            volume["by_channel"], names=_names(volume["by_channel"], CHANNEL_ZH, t),
            empty=empty),
        "volume_category": charts.stacked_bars(
            t(f"Tickets {per} by category", f"工单量（{per}，按类别）"), volume["buckets"],
            volume["by_category"], names=_names(volume["by_category"], CATEGORY_ZH, t),
            empty=empty),
        "categories": charts.ranked_bars(
            t("Top problem categories", "主要问题类别"),
            [(categories[c["category"]], c["count"],
              charts.trend_note(c["change"], c["change_pct"], c["trend"], t("new", "新")))
             for c in top], fill="#e65100", empty=empty),
        "first_response": charts.columns(
            t("First response (minutes)", "首次响应（分钟）"),
            [(t("median", "中位数"), first["median"] or 0), ("p90", first["p90"] or 0)],
            colours=("#1f6feb", "#90caf9"), empty=empty, width=charts.SMALL),
        "resolution": charts.columns(
            t("Resolution (hours)", "解决时长（小时）"),
            [(t("median", "中位数"), resolution["median"] or 0),
             ("p90", resolution["p90"] or 0)],
            colours=("#2e7d32", "#a5d6a7"), empty=empty, width=charts.SMALL),
        "sla": charts.split_bars(
            t("SLA compliance by priority", "各优先级 SLA 达成"),
            [(p, v["met"], v["breached"], v["pending"]) for p, v in sla.items()],
            words=(t("met", "达成"), t("breached", "超时"), t("open, not yet due", "未到期")),
            empty=empty),
        "csat": charts.columns(
            t("Satisfaction scores", "满意度评分"),
            [(f"{s} ★", n) for s, n in distribution.items()],
            colours=("#c62828", "#e65100", "#f9a825", "#7cb342", "#2e7d32"), empty=empty),
        "mentions": charts.lines(
            t("Mentions needing a person vs handled", "需人工处理与已处理的提及"),
            mentions["buckets"],
            {t("flagged", "已标记"): mentions["flagged"],
             t("handled", "已处理"): mentions["handled"]},
            colours=("#e65100", "#2e7d32"), empty=empty),
    }


async def reports_page(request: web.Request) -> web.Response:
    page_agent(request)
    ctx = request.app[CTX]
    now = ctx.rules.clock()
    period, error = _period(request, now)
    report = await reports.summary_of(ctx.store, period, now)
    t = translator(request_lang(request))
    query = _query(period)
    presets = [
        (days, _query(reports.last_days(days, now)),
         reports.last_days(days, now) == period)
        for days in PRESETS
    ]
    return await render(request, "reports.html", {
        "report": report,
        "charts": _charts(report, t),
        "since": period.since.date().isoformat(),
        "to": (period.until - timedelta(microseconds=1)).date().isoformat(),
        "query": query,
        "presets": presets,
        "error": error,
        "category_names": _names(report["tickets"]["by_category"], CATEGORY_ZH, t),
        "fmt": charts.number,
    })


def routes(app: web.Application) -> None:
    """Adds this module's page routes to the desk app."""
    app.router.add_get("/reports", reports_page)
