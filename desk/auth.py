"""API authentication: `Authorization: Bearer TOKEN` (desk sessions arrive with the desk pages)."""

from __future__ import annotations

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
    ctx = request.app[CTX]
    async with ctx.store.transaction() as session:
        agent = await agent_for_token(session, token.strip(), ctx.rules.clock())
    if agent is None:
        raise ApiError(401, "unauthenticated", "the token is unknown or revoked")
    return agent


def current_agent(request: web.Request) -> Agent:
    return request[AGENT]


def require_admin(request: web.Request) -> Agent:
    agent = request[AGENT]
    if agent.role != "admin":
        raise ApiError(403, "forbidden", "this needs the admin role")
    return agent
