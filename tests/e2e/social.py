"""Helpers for end-to-end tests of the social monitors: the service's API as the team uses it,
waiting for what a user would eventually see, and a recording proxy that tells which
`careloop` process sent which request to a fake platform."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from yarl import URL

from tests.e2e.service import careloop

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T | None]], what: str, *, within: float = 30.0,
    every: float = 0.2,
) -> T:
    """The first truthy answer of `check` within `within` seconds (a user waits too)."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"never happened within {within:.0f} s: {what} (last: {last!r})")


async def agent_token(env: dict[str, str], name: str = "social") -> str:
    """A bearer token for a new agent, as an operator makes one (`careloop agents`)."""
    added = await asyncio.to_thread(careloop, "agents", "add", name, "--role", "agent", env=env)
    assert added.returncode == 0, added.stderr
    made = await asyncio.to_thread(careloop, "agents", "token", name, env=env)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


@dataclass
class Desk:
    """The service's HTTP API with an agent's bearer token."""

    http: aiohttp.ClientSession

    async def get(self, path: str) -> Any:
        async with self.http.get(path) as r:
            assert r.status == 200, (path, r.status, await r.text())
            return await r.json()

    async def post(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        async with self.http.post(path, json=body or {}) as r:
            return r.status, await r.json()

    async def mentions(self, query: str = "") -> list[dict[str, Any]]:
        """Every review item the filter shows, all pages."""
        items: list[dict[str, Any]] = []
        cursor = ""
        while True:
            page = await self.get(f"/api/mentions?limit=200{query}{cursor}")
            items += page["items"]
            if not page["next_cursor"]:
                return items
            cursor = f"&cursor={page['next_cursor']}"

    async def streams(self) -> dict[str, str]:
        """Stream name (`x/<account>/mentions`) -> its health line in /healthz."""
        health = await self.get("/healthz")
        monitors = health.get("monitors", {})
        return {k: v["health"] for k, v in monitors.get("streams", {}).items()}


@asynccontextmanager
async def desk(port: int, token: str) -> AsyncIterator[Desk]:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=headers) as http:
        yield Desk(http)


@dataclass
class Forwarded:
    path: str
    started: float
    ended: float = 0.0


@dataclass
class RecordingProxy:
    """Forwards everything to `target` and keeps, per request, its path and when it ran: one
    proxy per `careloop` process tells which process polled what."""

    target: str
    seen: list[Forwarded] = field(default_factory=list)
    base: str = ""
    _runner: web.AppRunner | None = None
    _client: aiohttp.ClientSession | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._client = aiohttp.ClientSession(auto_decompress=False)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.base

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    def paths(self, fragment: str) -> list[Forwarded]:
        return [f for f in self.seen if fragment in f.path]

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._client is not None
        record = Forwarded(request.path, time.monotonic())
        self.seen.append(record)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding")}
        async with self._client.request(
            request.method, URL(self.target + request.raw_path, encoded=True), headers=headers,
            data=await request.read(), allow_redirects=False,
        ) as answer:
            body = await answer.read()
            out = {k: v for k, v in answer.headers.items()
                   if k.lower() not in ("content-length", "transfer-encoding",
                                        "content-encoding", "connection")}
        record.ended = time.monotonic()
        return web.Response(status=answer.status, body=body, headers=out)
