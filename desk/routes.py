"""The operations of the JSON API, as data: the router and /api/openapi.json both read them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    status: int = 200
    roles: tuple[str, ...] = ("admin", "agent")
    query: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (name, description)
    response: str = "Ticket"
