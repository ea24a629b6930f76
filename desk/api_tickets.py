"""/api/tickets: staff-entered tickets, the list (with views), one ticket, status, reply,
assign, priority and category overrides, merge; canned replies and saved views."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import Field

from desk.auth import current_agent, require_admin
from desk.context import CTX
from desk.errors import ApiError, read_model
from desk.paging import PAGE_QUERY, limit_of, short_page
from desk.routes import Operation
from desk.schemas import AssignIn, Category, Priority, ReplyIn, StatusIn, Strict, TicketIn
from desk.serialize import detail_json, message_json, row_json
from storage import canned, conversations, queries, tickets, views
from storage.lifecycle import parse_number
from storage.merge import merge_tickets
from storage.models import CannedReply, SavedView


class PriorityIn(Strict):
    priority: Priority
    # The priority the caller saw: if it changed meanwhile, 409 instead of overwriting.
    expected: Priority | None = None
    note: str | None = Field(default=None, max_length=5_000)


class CategoryIn(Strict):
    category: Category | None
    # The category the caller saw ("" for none); omitted, no check.
    expected: Category | Literal[""] | None = None
    note: str | None = Field(default=None, max_length=5_000)


class MergeIn(Strict):
    into: str = Field(min_length=1, max_length=30, description="the ticket that carries on")
    note: str | None = Field(default=None, max_length=5_000)


class CannedIn(Strict):
    name: str = Field(min_length=1, max_length=canned.MAX_NAME)
    body: str = Field(min_length=1, max_length=canned.MAX_BODY)
    language: str | None = Field(default=None, pattern="^(en|zh)$")


class ViewIn(Strict):
    name: str = Field(min_length=1, max_length=views.MAX_NAME)
    query: str = Field(max_length=views.MAX_QUERY)
    shared: bool = False


def _number(request: web.Request) -> int:
    ticket_id = parse_number(request.match_info["number"])
    if ticket_id is None:
        raise ApiError(404, "not_found", f"no ticket {request.match_info['number']}")
    return ticket_id


async def _detail(request: web.Request, ticket_id: int) -> dict:  # type: ignore[type-arg]
    async with request.app[CTX].store.read() as session:
        return detail_json(await queries.ticket_detail(session, ticket_id))


async def create_ticket(request: web.Request) -> web.Response:
    body = await read_model(request, TicketIn)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 100:
        raise ApiError(422, "invalid", "Idempotency-Key: 1 to 100 characters")
    ctx = request.app[CTX]
    agent = current_agent(request)
    async with ctx.store.transaction() as session:
        customer = await tickets.find_or_create_customer(
            session,
            name=body.customer.name,
            phone=body.customer.phone,
            email=body.customer.email,
            now=ctx.rules.clock(),
        )
    made = await ctx.intake.create(
        tickets.NewTicket(
            kind=body.kind,
            channel=body.channel,
            description=body.description,
            customer_id=customer.id,
            subject=body.subject,
            category=body.category,
            priority=body.priority,
            order_number=body.order_number,
            store=body.store,
            language=body.language,
            actor=f"agent:{agent.username}",
            # A client that retries a timed-out create with the same key gets the same ticket.
            intake_key=f"api:{agent.id}:{key}" if key else None,
        )
    )
    return web.json_response(await _detail(request, made.id), status=201 if made.created else 200)


async def list_tickets(request: web.Request) -> web.Response:
    spec = views.parse_filters(request.query)
    limit = limit_of(request)
    ctx = request.app[CTX]
    async with ctx.store.read() as session:
        f = await views.resolve(
            session, spec, agent_id=current_agent(request).id, now=ctx.rules.clock(),
            policy=ctx.rules.sla,
        )
        rows, next_cursor = await queries.list_tickets(
            session, f, limit=limit, cursor=request.query.get("cursor") or None
        )
    return web.json_response({"items": [row_json(r) for r in rows], "next_cursor": next_cursor})


async def get_ticket(request: web.Request) -> web.Response:
    return web.json_response(await _detail(request, _number(request)))


async def change_status(request: web.Request) -> web.Response:
    ticket_id = _number(request)
    body = await read_model(request, StatusIn)
    ctx = request.app[CTX]
    async with ctx.store.transaction() as session:
        await tickets.move_ticket(
            session,
            ctx.rules,
            ticket_id,
            body.status,
            actor=f"agent:{current_agent(request).username}",
            note=body.note,
        )
    return web.json_response(await _detail(request, ticket_id))


async def reply(request: web.Request) -> web.Response:
    ticket_id = _number(request)
    body = await read_model(request, ReplyIn)
    ctx = request.app[CTX]
    async with ctx.store.transaction() as session:
        message = await tickets.reply(
            session, ctx.rules, ticket_id, body.text, public=body.public,
            agent=current_agent(request),
        )
        ticket = await tickets.load_ticket(session, ticket_id)
        deliverable = body.public and ticket.identity_id is not None
    return web.json_response(
        {
            "message": message_json(message),
            "delivery": "queued" if deliverable else ("internal" if not body.public else "none"),
        },
        status=202,
    )


async def assign(request: web.Request) -> web.Response:
    ticket_id = _number(request)
    body = await read_model(request, AssignIn)
    ctx = request.app[CTX]
    async with ctx.store.transaction() as session:
        await tickets.assign(
            session, ctx.rules, ticket_id, body.agent,
            actor=f"agent:{current_agent(request).username}",
        )
    return web.json_response(await _detail(request, ticket_id))


async def hand_back(request: web.Request) -> web.Response:
    """After a customer's /human, the agent gives the conversation back to the bot."""
    ticket_id = _number(request)
    ctx = request.app[CTX]
    async with ctx.store.transaction() as session:
        await tickets.load_ticket(session, ticket_id)  # 404 for an unknown number
        changed = await conversations.hand_back(
            session, ticket_id, actor=f"agent:{current_agent(request).username}",
            now=ctx.rules.clock(),
        )
    if not changed:
        raise ApiError(409, "conflict", "this ticket is not waiting for a person")
    return web.json_response(await _detail(request, ticket_id))


async def set_priority(request: web.Request) -> web.Response:
    ticket_id = _number(request)
    body = await read_model(request, PriorityIn)
    ctx = request.app[CTX]
    async with ctx.store.transaction() as session:
        await tickets.set_priority(
            session, ctx.rules, ticket_id, body.priority, note=body.note,
            expected=body.expected, actor=f"agent:{current_agent(request).username}",
        )
    return web.json_response(await _detail(request, ticket_id))


async def set_category(request: web.Request) -> web.Response:
    ticket_id = _number(request)
    body = await read_model(request, CategoryIn)
    ctx = request.app[CTX]
    async with ctx.store.transaction() as session:
        await tickets.set_category(
            session, ctx.rules, ticket_id, body.category, note=body.note, expected=body.expected,
            actor=f"agent:{current_agent(request).username}",
        )
    return web.json_response(await _detail(request, ticket_id))


async def merge(request: web.Request) -> web.Response:
    """Merges this ticket into `into` (same customer); answers with the ticket that goes on."""
    ticket_id = _number(request)
    body = await read_model(request, MergeIn)
    target = parse_number(body.into)
    if target is None:
        raise ApiError(422, "invalid", f"into: {body.into!r} is not a ticket number")
    ctx = request.app[CTX]
    async with ctx.store.transaction() as session:
        await merge_tickets(
            session, ctx.rules, ticket_id, target, note=body.note,
            actor=f"agent:{current_agent(request).username}",
        )
    return web.json_response(await _detail(request, target))


def canned_json(row: CannedReply, text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": row.id, "name": row.name, "language": row.language,
                           "body": row.body}
    if text is not None:
        out["text"] = text
    return out


def _id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise ApiError(404, "not_found", f"no such id {raw!r}")
    return int(raw)


async def list_canned(request: web.Request) -> web.Response:
    async with request.app[CTX].store.read() as session:
        rows = await canned.list_canned(session)
    return web.json_response(short_page(request, [canned_json(r) for r in rows], _by_name))


async def create_canned(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_model(request, CannedIn)
    ctx = request.app[CTX]
    async with ctx.store.transaction() as session:
        row = await canned.create_canned(
            session, name=body.name, body=body.body, language=body.language,
            now=ctx.rules.clock(),
        )
    return web.json_response(canned_json(row), status=201)


async def update_canned(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_model(request, CannedIn)
    async with request.app[CTX].store.transaction() as session:
        row = await canned.update_canned(
            session, _id(request), name=body.name, body=body.body, language=body.language
        )
    return web.json_response(canned_json(row))


async def delete_canned(request: web.Request) -> web.Response:
    require_admin(request)
    canned_id = _id(request)
    async with request.app[CTX].store.transaction() as session:
        await canned.delete_canned(session, canned_id)
    return web.json_response({"deleted": canned_id})


async def ticket_canned(request: web.Request) -> web.Response:
    """The canned replies that suit this ticket's customer, variables filled in."""
    ticket_id = _number(request)
    agent = current_agent(request)
    async with request.app[CTX].store.read() as session:
        detail = await queries.ticket_detail(session, ticket_id)
        rows = canned.for_language(await canned.list_canned(session), detail.ticket.language)
    values = canned.variables_for(detail.ticket, detail.customer, agent)
    items = [canned_json(r, canned.fill(r.body, values)) for r in rows]
    # The customer's language first, then the language-neutral ones (canned.for_language).
    return web.json_response(short_page(
        request, items, lambda c: [0 if c["language"] else 1, c["name"], c["id"]]))


def _by_name(item: dict[str, Any]) -> list[Any]:
    return [item["name"], item["id"]]


def view_json(view: SavedView) -> dict[str, Any]:
    return {"id": view.id, "key": None, "name": view.name, "query": view.query,
            "shared": view.agent_id is None, "built_in": False}


async def list_views(request: web.Request) -> web.Response:
    built_in = [
        {"id": None, "key": v.key, "name": v.en, "query": f"view={v.key}", "shared": True,
         "built_in": True}
        for v in views.BUILT_IN.values()
    ]
    async with request.app[CTX].store.read() as session:
        saved = await views.list_views(session, current_agent(request).id)
    rank = {key: i for i, key in enumerate(views.BUILT_IN)}

    def position(v: dict[str, Any]) -> list[Any]:
        # Built-in views first, then the person's own, then the team's shared, each by name.
        if v["built_in"]:
            return [0, rank[v["key"]], "", 0]
        return [2 if v["shared"] else 1, 0, v["name"], v["id"]]

    return web.json_response(
        short_page(request, built_in + [view_json(v) for v in saved], position)
    )


async def save_view(request: web.Request) -> web.Response:
    body = await read_model(request, ViewIn)
    ctx = request.app[CTX]
    async with ctx.store.transaction() as session:
        view = await views.save_view(
            session, current_agent(request), body.name, body.query, shared=body.shared,
            now=ctx.rules.clock(),
        )
    return web.json_response(view_json(view), status=201)


async def delete_view(request: web.Request) -> web.Response:
    view_id = _id(request)
    async with request.app[CTX].store.transaction() as session:
        await views.delete_view(session, current_agent(request), view_id)
    return web.json_response({"deleted": view_id})


LIST_QUERY = (
    ("view", "a built-in view: mine, unassigned, breaching_soon, breached (other filters "
             "override its defaults)"),
    ("sla", "breached or soon: open tickets past, or near, an SLA deadline"),
    ("status", "comma-separated statuses"),
    ("priority", "comma-separated P1..P4"),
    ("category", "comma-separated complaint categories"),
    ("channel", "comma-separated channels"),
    ("assignee", "a username, `me` or `none`"),
    ("q", "a ticket number, an order number or words in the subject or description"),
    *PAGE_QUERY,
)

OPERATIONS = (
    Operation("POST", "/api/tickets", create_ticket, "Create a staff-entered ticket",
              body=TicketIn, status=201),
    Operation("GET", "/api/tickets", list_tickets, "List tickets, most urgent first",
              query=LIST_QUERY, response="TicketPage"),
    Operation("GET", "/api/tickets/{number}", get_ticket, "One ticket with events and messages"),
    Operation("POST", "/api/tickets/{number}/status", change_status, "Move a ticket",
              body=StatusIn),
    Operation("POST", "/api/tickets/{number}/reply", reply,
              "Reply to the customer (public) or add an internal note", body=ReplyIn,
              status=202, response="Reply"),
    Operation("POST", "/api/tickets/{number}/assign", assign, "Assign to an agent (null: nobody)",
              body=AssignIn),
    Operation("POST", "/api/tickets/{number}/handback", hand_back,
              "Give a /human conversation back to the bot"),
    Operation("POST", "/api/tickets/{number}/priority", set_priority,
              "Override the priority (deadlines move with it)", body=PriorityIn),
    Operation("POST", "/api/tickets/{number}/category", set_category,
              "Override the category (deadlines move with it)", body=CategoryIn),
    Operation("POST", "/api/tickets/{number}/merge", merge,
              "Merge this ticket into another of the same customer; returns that one",
              body=MergeIn),
    Operation("GET", "/api/tickets/{number}/canned-replies", ticket_canned,
              "Canned replies for this ticket, variables filled in",
              query=PAGE_QUERY, response="CannedReplyPage"),
    Operation("GET", "/api/canned-replies", list_canned, "Canned replies",
              query=PAGE_QUERY, response="CannedReplyPage"),
    Operation("POST", "/api/canned-replies", create_canned, "Add a canned reply",
              body=CannedIn, status=201, roles=("admin",), response="CannedReply"),
    Operation("PUT", "/api/canned-replies/{id}", update_canned, "Change a canned reply",
              body=CannedIn, roles=("admin",), response="CannedReply"),
    Operation("DELETE", "/api/canned-replies/{id}", delete_canned, "Delete a canned reply",
              roles=("admin",), response="Deleted"),
    Operation("GET", "/api/views", list_views, "Built-in and saved ticket views",
              query=PAGE_QUERY, response="ViewPage"),
    Operation("POST", "/api/views", save_view,
              "Save a ticket-list filter (query string) as a personal or shared view",
              body=ViewIn, status=201, response="View"),
    Operation("DELETE", "/api/views/{id}", delete_view,
              "Delete a saved view (shared ones: admins only)", response="Deleted"),
)
