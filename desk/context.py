"""What the desk needs, handed over by the composition root (config/bootstrap.py)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from argon2 import PasswordHasher
from prometheus_client import CollectorRegistry

from desk.client_address import Network
from storage.db import Store
from storage.intake import TicketIntake
from storage.tickets import TicketRules

HealthProbe = Callable[[], dict[str, Any]]


@dataclass
class TokenCache:
    """API token -> agent id, role and name for a short while, so a busy integration does not
    pay a database round trip per request. A revoked token stops working within `ttl`."""

    ttl: float = 30.0
    max_entries: int = 10_000
    entries: dict[str, tuple[float, Any]] = field(default_factory=dict)

    def get(self, token: str, now: float) -> Any | None:
        hit = self.entries.get(token)
        if hit is None or hit[0] < now:
            return None
        return hit[1]

    def put(self, token: str, agent: Any, now: float) -> None:
        if len(self.entries) >= self.max_entries:
            self.entries.clear()
        self.entries[token] = (now + self.ttl, agent)

    def clear(self) -> None:
        self.entries.clear()


@dataclass
class DeskContext:
    store: Store
    rules: TicketRules
    hasher: PasswordHasher
    intake: TicketIntake
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    tokens: TokenCache = field(default_factory=TokenCache)
    # Extra parts of /healthz (the NLU backend, the monitors' streams, the workers).
    health: Mapping[str, HealthProbe] = field(default_factory=dict)
    # Signs desk session cookies and CSRF tokens (CARELOOP_SECRET_KEY or the one kept in the
    # database). The random default only suits tests: sessions would not survive a restart.
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    # Reverse proxies whose X-Forwarded-For is believed (CARELOOP_DESK_TRUSTED_PROXIES).
    trusted_proxies: tuple[Network, ...] = ()


CTX = web.AppKey("careloop_ctx", DeskContext)
