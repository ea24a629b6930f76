"""Helpers for desk page tests: build the desk on a store, add accounts, log a client in.

    async def test_something(store: Store) -> None:
        await add_agent(store, "alice")
        client = await desk_client(store)
        try:
            token = await login(client, "alice", PASSWORD)
            resp = await client.post("/tickets/CL-1/status", data={"csrf_token": token, ...})
        finally:
            await client.close()

or, as a fixture, `async with open_desk(store) as client: ...`. `desk_ctx(client)` gives the
DeskContext (its `rules.clock` is a ManualClock unless you pass rules).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher

from desk.app import RouteHook, make_app
from desk.context import CTX, DeskContext
from storage.accounts import upsert_agent
from storage.db import Store
from storage.intake import TicketIntake
from storage.models import Agent
from storage.tickets import TicketRules
from tests.integration.helpers import rules as default_rules

PASSWORD = "correct-horse-1"
SECRET = "desk-test-secret-key"
# Cheap argon2 parameters: tests log in dozens of times.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


async def add_agent(
    store: Store,
    username: str,
    *,
    password: str = PASSWORD,
    role: str = "agent",
    language: str = "en",
    display_name: str | None = None,
) -> Agent:
    async with store.transaction() as session:
        agent = await upsert_agent(
            session, FAST_HASHER, username=username, role=role, password=password,
            now=default_rules().clock(), display_name=display_name, language=language,
        )
        agent.language = language
        return agent


def desk_context(store: Store, rules: TicketRules | None = None) -> DeskContext:
    r = rules or default_rules()
    return DeskContext(
        store=store, rules=r, hasher=FAST_HASHER, intake=TicketIntake(store, r), secret=SECRET
    )


async def desk_client(
    store: Store,
    *,
    rules: TicketRules | None = None,
    ctx: DeskContext | None = None,
    extra: Sequence[RouteHook] = (),
) -> TestClient:
    """A started TestClient on the whole desk app; `await client.close()` also closes the
    intake."""
    context = ctx or desk_context(store, rules)
    app = make_app(context, extra=extra)

    async def close_intake(_: web.Application) -> None:
        await context.intake.close()

    app.on_cleanup.append(close_intake)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@asynccontextmanager
async def open_desk(
    store: Store, *, rules: TicketRules | None = None, extra: Sequence[RouteHook] = ()
) -> AsyncIterator[TestClient]:
    client = await desk_client(store, rules=rules, extra=extra)
    try:
        yield client
    finally:
        await client.close()


def desk_ctx(client: TestClient) -> DeskContext:
    return client.app[CTX]


def csrf_from(html: str) -> str:
    """The CSRF token of a rendered page (the meta tag, else the first form field)."""
    found = _META.search(html) or _FIELD.search(html)
    if found is None:
        raise AssertionError("the page carries no CSRF token")
    return found.group(1)


async def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Logs the client in through the login form; returns the session's CSRF token (what
    the page's <meta name="csrf-token"> holds and forms post as `csrf_token`)."""
    form = await client.get("/login")
    assert form.status == 200, form.status
    pre_token = csrf_from(await form.text())
    resp = await client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": pre_token},
        allow_redirects=False,
    )
    if resp.status != 302:
        raise AssertionError(f"login as {username} failed: {resp.status} {await resp.text()}")
    page = await client.get("/account")
    assert page.status == 200, page.status
    return csrf_from(await page.text())
