"""/api/tickets: staff-entered tickets, the list, one ticket, status, reply, assign."""

from __future__ import annotations

from typing import get_args

from aiohttp import web

from desk.auth import current_agent
from desk.context import CTX
from desk.errors import ApiError, read_model
from desk.routes import Operation
from desk.schemas import AssignIn, Category, ReplyIn, StatusIn, TicketIn
from desk.serialize import detail_json, message_json, row_json
from storage import conversations, queries, tickets
from storage.accounts import get_agent
from storage.lifecycle import CHANNELS, PRIORITIES, STATUSES, parse_number
from storage.queries import TicketFilter

CATEGORY_VALUES = frozenset(get_args(Category))
MAX_LIMIT = 200


def _number(request: web.Request) -> int:
    ticket_id = parse_number(request.match_info["number"])
    if ticket_id is None:
        raise ApiError(404, "not_found", f"no ticket {request.match_info['number']}")
    return ticket_id


def _many(request: web.Request, name: str, allowed: frozenset[str] | tuple[str, ...]) -> list[str]:
    raw = request.query.get(name, "").strip()
    values = [v.strip() for v in raw.split(",") if v.strip()] if raw else []
    for value in values:
        if value not in allowed:
            raise ApiError(422, "invalid", f"{name}: unknown value {value!r}")
    return values


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(422, "invalid", f"limit: a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


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
    f = TicketFilter(
        statuses=_many(request, "status", STATUSES),
        priorities=_many(request, "priority", PRIORITIES),
        categories=_many(request, "category", CATEGORY_VALUES),
        channels=_many(request, "channel", CHANNELS),
        q=request.query.get("q") or None,
    )
    assignee = request.query.get("assignee")
    ctx = request.app[CTX]
    async with ctx.store.read() as session:
        if assignee == "none":
            f.unassigned = True
        elif assignee:
            name = current_agent(request).username if assignee == "me" else assignee
            agent = await get_agent(session, name)
            if agent is None:
                raise ApiError(422, "invalid", f"assignee: no agent named {name!r}")
            f.assignee_id = agent.id
        rows, next_cursor = await queries.list_tickets(
            session, f, limit=_limit(request), cursor=request.query.get("cursor") or None
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


LIST_QUERY = (
    ("status", "comma-separated statuses"),
    ("priority", "comma-separated P1..P4"),
    ("category", "comma-separated complaint categories"),
    ("channel", "comma-separated channels"),
    ("assignee", "a username, `me` or `none`"),
    ("q", "a ticket number, an order number or words in the subject or description"),
    ("limit", "1 to 200, default 50"),
    ("cursor", "next_cursor of the previous page"),
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
)
