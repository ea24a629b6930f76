"""The desk's aiohttp application: routes, the /api error envelope, auth, metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from aiohttp import web
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm.exc import StaleDataError

from desk import (
    api_agents,
    api_mentions,
    api_reports,
    api_tickets,
    pages_admin,
    pages_auth,
    pages_queue,
    pages_reports,
    pages_tickets,
    security,
)
from desk import pages as desk_pages
from desk.auth import AGENT, PUBLIC_API, authenticate
from desk.context import CTX, DeskContext
from desk.errors import MAX_BODY, ApiError, error_response
from desk.health import METRICS, DeskMetrics, healthz, metrics
from desk.openapi import build_spec
from desk.routes import Handler, Operation
from desk.session import PAGE_RESOURCES, sessions
from storage.errors import StoreError

log = logging.getLogger("careloop.desk")
RouteHook = Callable[[web.Application], None]

OPERATIONS: tuple[Operation, ...] = (
    api_tickets.OPERATIONS + api_agents.OPERATIONS + api_mentions.OPERATIONS
    + api_reports.OPERATIONS
)
# Each page module adds its own routes (login, accounts, queue, tickets, reports).
PAGES: tuple[RouteHook, ...] = (
    pages_auth.routes, pages_admin.routes, pages_queue.routes, pages_tickets.routes,
    pages_reports.routes,
)

HTTP_CODES = {
    400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
    422: "invalid", 429: "too_many_requests",
}


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Under /api every failure becomes {"error": {"code", "message"}}; nothing leaks a trace."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except StoreError as exc:
        return error_response(exc.status, exc.code, str(exc))
    except StaleDataError:
        return error_response(409, "conflict", "the ticket changed meanwhile; try again")
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "too_large", f"request body over {MAX_BODY} bytes")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_CODES.get(exc.status, "error")
        return error_response(exc.status, code, exc.reason or code)
    except OperationalError:
        log.exception("database error on %s %s", request.method, request.path)
        return error_response(503, "database_unavailable", "the database is unreachable")
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal", "unexpected error; it was logged")


@web.middleware
async def api_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    # A session cookie may have authenticated the request already (desk.session).
    if (
        request.path.startswith("/api/") and request.path not in PUBLIC_API
        and AGENT not in request
    ):
        request[AGENT] = await authenticate(request)
    return await handler(request)


@web.middleware
async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        m = request.app[METRICS]
        m.requests.labels(request.method, route, str(status)).inc()
        m.latency.labels(route).observe(time.perf_counter() - started)


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build_spec(OPERATIONS))


def make_app(ctx: DeskContext, extra: Sequence[RouteHook] = ()) -> web.Application:
    """`extra`: channels that serve pages or webhooks from the desk's port (the web chat, the
    Telegram webhook) add their routes here."""
    # client_max_size: aiohttp refuses bodies over 1 MiB while reading them (413).
    app = web.Application(
        middlewares=[measure, api_errors, desk_pages.page_errors, sessions, api_auth],
        client_max_size=MAX_BODY,
    )
    app[CTX] = ctx
    app[METRICS] = DeskMetrics(ctx.registry)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/openapi.json", openapi)
    for op in OPERATIONS:
        app.router.add_route(op.method, op.path, op.handler)
    desk_pages.setup(app)
    security.install(app)
    # Everything the page modules add needs a desk session (the middleware checks this set).
    before = set(app.router.resources())
    for pages in PAGES:
        pages(app)
    app[PAGE_RESOURCES] = set(app.router.resources()) - before
    for hook in extra:
        hook(app)
    # Unknown /api paths still answer in the error envelope (the middleware wraps the 404).
    return app
