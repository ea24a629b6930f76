"""API authentication: `Authorization: Bearer TOKEN` (desk sessions arrive with the desk pages)."""

from __future__ import annotations

import time

from aiohttp import web

from desk.context import CTX
from desk.errors import ApiError
from storage.accounts import agent_for_token
from storage.models import Agent

AGENT = web.RequestKey("careloop_agent", Agent)
PUBLIC_API = frozenset({"/api/openapi.json"})


async def authenticate(request: web.Request) -> Agent:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthenticated", "send Authorization: Bearer <token>")
    token = token.strip()
    ctx = request.app[CTX]
    now = time.monotonic()
    agent = ctx.tokens.get(token, now)
    if agent is None:
        async with ctx.store.transaction() as session:
            agent = await agent_for_token(session, token, ctx.rules.clock())
        if agent is None:
            raise ApiError(401, "unauthenticated", "the token is unknown or revoked")
        ctx.tokens.put(token, agent, now)
    return agent


def current_agent(request: web.Request) -> Agent:
    return request[AGENT]


def require_admin(request: web.Request) -> Agent:
    agent = request[AGENT]
    if agent.role != "admin":
        raise ApiError(403, "forbidden", "this needs the admin role")
    return agent
