"""Server-side SVG charts for the reports page: inline <svg> markup, no script, no style=
attributes (the CSP forbids inline style), colours as fill=/stroke= presentation attributes and
text looks from reports.css. Every label goes through escape(): series names and categories are
data.

Each function returns Markup ready to drop into a template; charts scale with their box
(viewBox + width 100%), and every bar or point carries a <title> that a hover shows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

PALETTE = (
    "#1f6feb", "#e65100", "#2e7d32", "#8e24aa", "#00838f", "#c62828", "#6d4c41", "#f9a825",
    "#3949ab", "#607d8b", "#d81b60", "#7cb342",
)
GOOD, BAD, NEUTRAL, PENDING = "#2e7d32", "#c62828", "#1f6feb", "#b0bec5"
# viewBox widths: text keeps a readable size whether a chart spans the page or half of it.
WIDE, HALF, SMALL = 1100, 560, 300
FONT_PX = 12


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def nice_max(value: float) -> float:
    """The axis top: the smallest 1, 2, 2.5 or 5 x 10^k at or above `value`."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power  # pragma: no cover (the loop always returns)


def number(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def _attrs(**kw: object) -> str:
    return "".join(f' {k.rstrip("_").replace("_", "-")}="{escape(str(v))}"' for k, v in kw.items())


def _el(tag: str, inner: str | None = None, **attrs: object) -> str:
    """One SVG element; `inner` is already-escaped markup (None: self-closing)."""
    if inner is None:
        return f"<{tag}{_attrs(**attrs)}/>"
    return f"<{tag}{_attrs(**attrs)}>{inner}</{tag}>"


def _text(x: float, y: float, label: str, cls: str = "lbl", anchor: str = "start") -> str:
    return _el("text", str(escape(label)), x=round(x, 1), y=round(y, 1), class_=cls,
               text_anchor=anchor)


def _tip(text: str) -> str:
    return f"<title>{escape(text)}</title>"


def _rect(x: float, y: float, w: float, h: float, fill: str, tip: str) -> str:
    return _el("rect", _tip(tip), x=round(x, 1), y=round(y, 1), width=round(max(w, 0), 1),
               height=round(max(h, 0), 1), fill=fill)


def _svg(height: float, title: str, body: Sequence[str], width: int) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {round(height)}" width="100%"'
        f' role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def _empty(title: str, message: str, width: int) -> Markup:
    return _svg(60, title, [_text(width / 2, 34, message, "empty", "middle")], width)


def _legend(
    names: Sequence[str], colours: Sequence[str], y: float, width: int
) -> tuple[list[str], float]:
    """Swatches and names in rows that wrap at the chart's width; returns the rows' height."""
    parts, x = [], 50.0
    for name, fill in zip(names, colours, strict=True):
        w = 22 + 7.2 * len(name)
        if x + w > width and x > 50:
            x, y = 50.0, y + 18
        parts.append(_el("rect", x=x, y=y - 10, width=11, height=11, fill=fill))
        parts.append(_text(x + 15, y, name, "legend"))
        x += w + 10
    return parts, y


def _y_axis(left: float, top: float, plot_w: float, plot_h: float, top_value: float,
            unit: str = "") -> list[str]:
    parts = []
    for i in range(5):
        value = top_value * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(_el("line", x1=left, y1=round(y, 1), x2=left + plot_w, y2=round(y, 1),
                         class_="grid"))
        parts.append(_text(left - 6, y + 4, number(value) + unit, "axis", "end"))
    return parts


def _tick_labels(labels: Sequence[str], left: float, step: float, y: float) -> list[str]:
    """At most about ten labels under the bars, so they never overlap."""
    every = max(1, math.ceil(len(labels) / 10))
    return [
        _text(left + step * (i + 0.5), y, label, "axis", "middle")
        for i, label in enumerate(labels) if i % every == 0
    ]


def stacked_bars(
    title: str,
    buckets: Sequence[str],
    series: Mapping[str, Sequence[int]],
    *,
    names: Mapping[str, str] | None = None,
    empty: str = "No data for this period",
    width: int = WIDE,
) -> Markup:
    """Volume over time: one bar per day or week, stacked by series (channel, category)."""
    totals = [sum(values[i] for values in series.values()) for i in range(len(buckets))]
    if not buckets or not any(totals):
        return _empty(title, empty, width)
    names = names or {}
    left, top, plot_h = 50.0, 10.0, 200.0
    plot_w = width - left - 10
    step = plot_w / len(buckets)
    bar_w = max(step * 0.8, 1.0)
    scale = plot_h / nice_max(max(totals))
    parts = _y_axis(left, top, plot_w, plot_h, nice_max(max(totals)))
    keys = list(series)
    for i, bucket in enumerate(buckets):
        y = top + plot_h
        for k, key in enumerate(keys):
            n = series[key][i]
            if n:
                h = n * scale
                y -= h
                label = names.get(key, key)
                parts.append(_rect(left + step * i + (step - bar_w) / 2, y, bar_w, h,
                                   colour(k), f"{bucket} · {label}: {n}"))
    parts += _tick_labels([b[5:] for b in buckets], left, step, top + plot_h + 16)
    legend, bottom = _legend([names.get(k, k) for k in keys],
                             [colour(k) for k in range(len(keys))], top + plot_h + 40, width)
    return _svg(bottom + 10, title, parts + legend, width)


def lines(
    title: str,
    buckets: Sequence[str],
    series: Mapping[str, Sequence[int]],
    *,
    colours: Sequence[str] = (),
    empty: str = "No data for this period",
    width: int = WIDE,
) -> Markup:
    """A few series over time as lines with dots (mentions flagged vs handled)."""
    peak = max((max(v) for v in series.values() if v), default=0)
    if not buckets or peak == 0:
        return _empty(title, empty, width)
    left, top, plot_h = 50.0, 10.0, 180.0
    plot_w = width - left - 10
    step = plot_w / len(buckets)
    top_value = nice_max(peak)
    parts = _y_axis(left, top, plot_w, plot_h, top_value)
    fills = list(colours) or [colour(i) for i in range(len(series))]
    for (name, values), fill in zip(series.items(), fills, strict=False):
        points = [(left + step * (i + 0.5), top + plot_h - plot_h * v / top_value)
                  for i, v in enumerate(values)]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(_el("polyline", points=path, fill="none", stroke=fill, stroke_width=2))
        if len(points) <= 120:
            for (x, y), bucket, v in zip(points, buckets, values, strict=True):
                parts.append(_el("circle", _tip(f"{bucket} · {name}: {v}"), cx=round(x, 1),
                                 cy=round(y, 1), r=3, fill=fill))
    parts += _tick_labels([b[5:] for b in buckets], left, step, top + plot_h + 16)
    legend, bottom = _legend(list(series), fills[: len(series)], top + plot_h + 40, width)
    return _svg(bottom + 10, title, parts + legend, width)


def ranked_bars(
    title: str,
    rows: Sequence[tuple[str, float, str]],
    *,
    fill: str = NEUTRAL,
    empty: str = "No data for this period",
    width: int = HALF,
) -> Markup:
    """Horizontal bars, largest first: (label, value, note after the value). The note holds
    e.g. the trend against the previous period."""
    if not rows:
        return _empty(title, empty, width)
    label_w, row_h = 170.0, 26.0
    plot_w = width - label_w - 170
    top_value = nice_max(max(v for _, v, _ in rows))
    parts = []
    for i, (label, value, note) in enumerate(rows):
        y = 8 + i * row_h
        w = plot_w * value / top_value
        parts.append(_text(label_w - 8, y + 15, label, "lbl", "end"))
        parts.append(_rect(label_w, y + 3, w, row_h - 8, fill, f"{label}: {number(value)}"))
        parts.append(_text(label_w + w + 6, y + 15, f"{number(value)}  {note}".rstrip(), "val"))
    return _svg(16 + len(rows) * row_h, title, parts, width)


def trend_note(change: int, change_pct: float | None, trend: str, new_word: str) -> str:
    """↑ +12 (+40%): more complaints is worse, so the page colours it by class, not here."""
    arrow = {"up": "↑", "down": "↓", "flat": "→"}.get(trend, "")
    if trend == "new":
        return f"{new_word} +{change}"
    pct = f" ({change_pct:+.0f}%)" if change_pct is not None else ""
    return f"{arrow} {change:+d}{pct}"


def split_bars(
    title: str,
    rows: Sequence[tuple[str, int, int, int]],
    *,
    words: tuple[str, str, str] = ("met", "breached", "pending"),
    empty: str = "No data for this period",
    width: int = HALF,
) -> Markup:
    """SLA by priority: one 100% bar per row split met / breached / pending, with compliance."""
    if not any(m + b + p for _, m, b, p in rows):
        return _empty(title, empty, width)
    label_w, row_h = 60.0, 30.0
    plot_w = width - label_w - 150
    parts = []
    for i, (label, met, breached, pending) in enumerate(rows):
        y = 8 + i * row_h
        total = met + breached + pending
        parts.append(_text(label_w - 8, y + 17, label, "lbl", "end"))
        x = label_w
        for n, fill, word in ((met, GOOD, words[0]), (breached, BAD, words[1]),
                              (pending, PENDING, words[2])):
            if total and n:
                w = plot_w * n / total
                parts.append(_rect(x, y + 3, w, row_h - 8, fill, f"{label} · {word}: {n}"))
                x += w
        decided = met + breached
        share = f"{100 * met / decided:.0f}%" if decided else "–"
        parts.append(_text(label_w + plot_w + 8, y + 17, f"{share}  ({met}/{decided})", "val"))
    legend, bottom = _legend(list(words), [GOOD, BAD, PENDING], 8 + len(rows) * row_h + 16,
                             width)
    return _svg(bottom + 10, title, parts + legend, width)


def columns(
    title: str,
    rows: Sequence[tuple[str, float]],
    *,
    colours: Sequence[str] = (),
    unit: str = "",
    empty: str = "No data for this period",
    width: int = HALF,
) -> Markup:
    """A handful of vertical bars with their values on top (CSAT 1-5, median vs p90)."""
    if not rows or not any(v for _, v in rows):
        return _empty(title, empty, width)
    left, top, plot_h = 50.0, 20.0, 150.0
    plot_w = width - left - 10
    step = plot_w / len(rows)
    bar_w = min(step * 0.6, 90.0)
    top_value = nice_max(max(v for _, v in rows))
    parts = _y_axis(left, top, plot_w, plot_h, top_value, unit)
    for i, (label, value) in enumerate(rows):
        h = plot_h * value / top_value
        x = left + step * i + (step - bar_w) / 2
        fill = colours[i] if i < len(colours) else NEUTRAL
        parts.append(_rect(x, top + plot_h - h, bar_w, h, fill, f"{label}: {number(value)}{unit}"))
        parts.append(_text(x + bar_w / 2, top + plot_h - h - 5, number(value) + unit, "val",
                           "middle"))
        parts.append(_text(x + bar_w / 2, top + plot_h + 16, label, "axis", "middle"))
    return _svg(top + plot_h + 28, title, parts, width)
