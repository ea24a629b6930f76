"""/healthz (no auth) and /metrics (Prometheus text)."""

from __future__ import annotations

import asyncio
import logging
import os

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from sqlalchemy import func, select

from desk.context import CTX
from storage.models import Ticket
from storage.outbox import counts_by_status

log = logging.getLogger("careloop.desk")
DB_TIMEOUT = 2.0


class DeskMetrics:
    """The desk's own instruments, on the app's registry (not prometheus' global one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "careloop_http_requests", "HTTP requests", ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "careloop_http_request_seconds", "HTTP request latency", ["route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.tickets = Gauge(
            "careloop_tickets", "Tickets by status", ["status"], registry=registry
        )
        self.outbox = Gauge(
            "careloop_outbox_messages", "Outbox messages by status", ["status"], registry=registry
        )


METRICS = web.AppKey("careloop_metrics", DeskMetrics)


async def healthz(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    # "process": which process answered, when several share the port (CARELOOP_DESK_PROCESSES).
    body: dict[str, object] = {"status": "ok", "database": "ok", "process": os.getpid()}
    status = 200
    try:
        await asyncio.wait_for(ctx.store.ping(), DB_TIMEOUT)
    except Exception as exc:
        log.warning("health: database unreachable: %s", type(exc).__name__)
        body["status"], body["database"] = "unavailable", "unreachable"
        status = 503
    for name, probe in ctx.health.items():
        try:
            body[name] = probe()
        except Exception as exc:  # a broken probe must not take the health page down
            body[name] = {"status": "error", "reason": type(exc).__name__}
    return web.json_response(body, status=status)


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    m = request.app[METRICS]
    try:
        async with ctx.store.read() as session:
            by_status = await session.execute(
                select(Ticket.status, func.count()).group_by(Ticket.status)
            )
            for status, n in by_status.all():
                m.tickets.labels(status=status).set(n)
            for status, n in (await counts_by_status(session)).items():
                m.outbox.labels(status=status).set(n)
    except Exception as exc:
        log.warning("metrics: database unreachable: %s", type(exc).__name__)
    return web.Response(
        body=generate_latest(ctx.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )
