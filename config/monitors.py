"""Builds the social monitors from settings and runs their poll loops; the /healthz probe.

One Monitor (monitors/poll.py) per configured platform; every process with role all|monitors
runs them, and the stream leases make sure only one process reads each stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.channel import Dialogue
from config.settings import Settings
from monitors.poll import OK, Monitor, PollPolicy, run_monitor
from monitors.triage import Triage, TriageRules
from monitors.types import Adapter
from nlu.types import Interpreter
from storage.clock import Clock, utc_now
from storage.db import Store
from storage.mentions import Grouping, stream_health
from storage.review import auto_ticket
from storage.tickets import TicketRules

log = logging.getLogger("careloop.monitors")
HEALTH_MAX_AGE_SECONDS = 5.0


def triage_rules(settings: Settings) -> TriageRules:
    return TriageRules(reach_threshold=settings.monitor_reach_threshold)


def grouping(settings: Settings) -> Grouping:
    return Grouping(
        window=timedelta(minutes=settings.monitor_group_window_minutes),
        flag_size=settings.monitor_group_flag_size,
    )


def poll_policy(settings: Settings, platform: str) -> PollPolicy:
    is_x = platform == "x"
    return PollPolicy(
        poll_seconds=float(settings.x_poll_seconds if is_x else settings.mastodon_poll_seconds),
        lease_seconds=float(settings.monitor_lease_seconds),
        max_pages=settings.monitor_max_pages,
        backoff_seconds=settings.monitor_backoff_seconds,
        backoff_max_seconds=settings.monitor_backoff_max_seconds,
        rate_limit_max_seconds=settings.monitor_rate_limit_max_seconds,
        # Only X bills reads; Mastodon instances do not.
        read_prices=dict(settings.x_read_prices_usd) if is_x else {},
        monthly_budget_usd=settings.x_monthly_budget_usd if is_x else None,
    )


def build_adapters(settings: Settings, clock: Clock = utc_now) -> list[Adapter]:
    adapters: list[Adapter] = []
    if settings.x_enabled:
        from monitors.x import make_x_adapter

        adapters.append(make_x_adapter(settings, clock=clock))
    if settings.mastodon_enabled:
        from monitors.mastodon import make_mastodon_adapter

        adapters.append(make_mastodon_adapter(settings))
    return adapters


def direct_message_hook(
    store: Store, dialogue: Dialogue | None, clock: Clock = utc_now
) -> Callable[[Sequence[int]], Awaitable[None]] | None:
    """After a page of direct messages commits, the dialogue answers them (monitors/direct)."""
    if dialogue is None:
        return None
    from monitors.direct import handle_direct_messages

    async def on_direct_messages(_ids: Sequence[int]) -> None:
        await handle_direct_messages(store, dialogue, clock=clock)

    return on_direct_messages


def build_monitors(
    settings: Settings,
    store: Store,
    interpreter: Interpreter,
    owner: str,
    *,
    dialogue: Dialogue | None = None,
    adapters: Sequence[Adapter] | None = None,
    clock: Clock = utc_now,
    rules: TicketRules | None = None,
) -> list[Monitor]:
    hook = direct_message_hook(store, dialogue, clock)
    after_poll = auto_ticket_hook(store, rules, settings.auto_ticket_priorities)
    return [
        Monitor(
            store=store,
            adapter=adapter,
            triage=Triage(interpreter, triage_rules(settings)),
            grouping=grouping(settings),
            policy=poll_policy(settings, adapter.platform),
            owner=owner,
            clock=clock,
            on_direct_messages=hook,
            after_poll=after_poll,
        )
        for adapter in (adapters if adapters is not None else build_adapters(settings, clock))
    ]


def auto_ticket_hook(
    store: Store, rules: TicketRules | None, priorities: Sequence[str]
) -> Callable[[], Awaitable[None]] | None:
    """After each poll, the auto-ticket rule (storage/review.auto_ticket); None when off."""
    if rules is None or not priorities:
        return None

    async def after_poll() -> None:
        opened = await auto_ticket(store, rules, priorities)
        if opened:
            log.info("auto-ticket rule opened %d tickets from flagged mentions", len(opened))

    return after_poll


async def run_monitors(
    settings: Settings,
    store: Store,
    interpreter: Interpreter,
    owner: str,
    stop: asyncio.Event,
    *,
    dialogue: Dialogue | None = None,
    rules: TicketRules | None = None,
) -> None:
    """The monitors part of `careloop run` (roles all and monitors)."""
    if not (settings.x_enabled or settings.mastodon_enabled):
        log.info("social monitors are off (no X or Mastodon credentials)")
        await stop.wait()  # a part that returns would stop the whole service
        return
    monitors = build_monitors(settings, store, interpreter, owner, dialogue=dialogue,
                              rules=rules)
    hook = direct_message_hook(store, dialogue)
    if hook is not None:
        try:  # what a crash left between storing a direct message and answering it
            await hook([])
        except Exception:
            log.exception("direct messages left from before could not be handled yet")
    log.info("social monitors: %s", ", ".join(m.platform for m in monitors))
    await asyncio.gather(*(run_monitor(m, stop) for m in monitors))
    await stop.wait()


class MonitorHealth:
    """The "monitors" part of /healthz. Probes are synchronous, so this answers from a snapshot
    of the monitor_cursors rows at most a few seconds old, refreshed in the background (the desk
    may run in another process than the monitors: the rows are the truth)."""

    def __init__(self, store: Store, prices: dict[str, float] | None = None) -> None:
        self.store = store
        self.prices = prices or {}
        self.snapshot: dict[str, Any] = {"status": "starting"}
        self.taken_at: float = float("-inf")
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        async with self.store.read() as session:
            rows = await stream_health(session)
        self.snapshot = summarise(rows, self.prices, datetime.now(UTC))
        self.taken_at = asyncio.get_running_loop().time()

    def __call__(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        stale = loop.time() - self.taken_at > HEALTH_MAX_AGE_SECONDS
        if stale and (self._task is None or self._task.done()):
            self._task = loop.create_task(self._quiet_refresh())
        return self.snapshot

    async def _quiet_refresh(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:
            self.snapshot = {"status": "unknown", "reason": type(exc).__name__}


async def monitor_health(store: Store, settings: Settings | None = None) -> MonitorHealth:
    """A probe with its first snapshot taken (the desk builds it at start)."""
    probe = MonitorHealth(store, dict(settings.x_read_prices_usd) if settings else None)
    try:
        await probe.refresh()
    except Exception as exc:
        probe.snapshot = {"status": "unknown", "reason": type(exc).__name__}
    return probe


def describe(row: dict[str, Any], now: datetime) -> str:
    """ok | backing off until T | rate limited until T | paused: reason."""
    health, reason, retry_at = row["health"], row["health_reason"], row["retry_at"]
    if health == "paused":
        return f"paused: {reason or 'by the platform'}"
    if health in ("rate_limited", "backing_off") and retry_at is not None and retry_at > now:
        verb = "rate limited" if health == "rate_limited" else "backing off"
        return f"{verb} until {retry_at:%Y-%m-%dT%H:%M:%SZ}"
    return OK


def summarise(rows: Sequence[dict[str, Any]], prices: dict[str, float], now: datetime
              ) -> dict[str, Any]:
    month = f"{now:%Y-%m}"
    streams: dict[str, Any] = {}
    x_cost = 0.0
    for row in rows:
        name = f"{row['platform']}/{row['account']}/{row['stream']}"
        this_month = row["reads_count"] if row["reads_month"] == month else 0
        streams[name] = {
            "health": describe(row, now),
            "last_read": row["updated_at"].isoformat() if row["updated_at"] else None,
            "reads_this_month": this_month,
        }
        if row["platform"] == "x":
            x_cost += this_month * prices.get(row["stream"], 0.0)
    healthy = all(s["health"] == OK for s in streams.values())
    out: dict[str, Any] = {"status": "ok" if healthy else "degraded", "streams": streams}
    if prices:
        out["x_read_cost_usd_this_month"] = round(x_cost, 2)
    return out
