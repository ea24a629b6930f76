"""/api/agents: desk accounts (admin only)."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from desk.auth import require_admin
from desk.context import CTX
from desk.errors import read_model
from desk.paging import PAGE_QUERY, short_page
from desk.routes import Operation
from desk.schemas import AgentIn
from desk.serialize import agent_json
from storage.accounts import upsert_agent
from storage.models import Agent


async def list_agents(request: web.Request) -> web.Response:
    require_admin(request)
    async with request.app[CTX].store.read() as session:
        agents = (await session.scalars(select(Agent).order_by(Agent.username))).all()
    page = short_page(request, [agent_json(a) for a in agents], lambda a: [a["username"]])
    return web.json_response(page)


async def create_agent(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_model(request, AgentIn)
    ctx = request.app[CTX]
    async with ctx.store.transaction() as session:
        agent = await upsert_agent(
            session,
            ctx.hasher,
            username=body.username,
            role=body.role,
            password=body.password,
            display_name=body.display_name,
            language=body.language,
            now=ctx.rules.clock(),
        )
    return web.json_response(agent_json(agent), status=201)


OPERATIONS = (
    Operation("GET", "/api/agents", list_agents, "List desk accounts", roles=("admin",),
              query=PAGE_QUERY, response="AgentPage"),
    Operation("POST", "/api/agents", create_agent, "Create or update a desk account",
              body=AgentIn, status=201, roles=("admin",), response="Agent"),
)
