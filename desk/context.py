"""What the desk needs, handed over by the composition root (config/bootstrap.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from argon2 import PasswordHasher
from prometheus_client import CollectorRegistry

from storage.db import Store
from storage.tickets import TicketRules

HealthProbe = Callable[[], dict[str, Any]]


@dataclass
class DeskContext:
    store: Store
    rules: TicketRules
    hasher: PasswordHasher
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    # Extra parts of /healthz (the NLU backend, the monitors' streams, the workers).
    health: Mapping[str, HealthProbe] = field(default_factory=dict)


CTX = web.AppKey("careloop_ctx", DeskContext)
