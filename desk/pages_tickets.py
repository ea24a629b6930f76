"""Desk pages: the ticket list (filters, built-in and saved views, SLA badges), the ticket page
(conversation, timeline, reply, canned replies, moves, assign, overrides, merge), staff-entered
tickets and the canned-reply admin page.

Every form posts here and redirects back (POST-redirect-GET); CSRF is checked by the session
middleware. A change refused by the ticket service (a move §5 does not allow, a ticket changed
meanwhile) re-renders the page with the reason in words and the status code (409, 422)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web
from multidict import MultiMapping

from desk.context import CTX
from desk.pages import page_agent, redirect, render, require_admin_page
from storage import accounts, canned, queries, ticket_messages, tickets, views
from storage.errors import Invalid, NotFound, StoreError
from storage.lifecycle import (
    CHANNELS,
    DONE_STATUSES,
    KINDS,
    OPEN_STATUSES,
    PRIORITIES,
    STAFF_CHANNELS,
    STATUSES,
    allowed_moves,
    format_number,
    parse_number,
)
from storage.merge import merge_tickets
from storage.models import Agent
from storage.ticket_messages import IdentityView
from storage.tickets import CATEGORIES

PAGE_SIZE = 50
T = Callable[[str, str], str]
# Success notices after a redirect (?done=...), in both languages.
DONE: dict[str, tuple[str, str]] = {
    "reply": ("Reply sent to the customer.", "回复已发送给顾客。"),
    "note": ("Internal note added.", "内部备注已添加。"),
    "status": ("Status changed.", "状态已更改。"),
    "assign": ("Assignee changed.", "处理人已更改。"),
    "priority": ("Priority changed; deadlines moved with it.", "优先级已更改，期限随之调整。"),
    "category": ("Category changed.", "类别已更改。"),
    "merged": ("Tickets merged.", "工单已合并。"),
    "created": ("Ticket created.", "工单已创建。"),
    "view_saved": ("View saved.", "视图已保存。"),
    "view_deleted": ("View deleted.", "视图已删除。"),
    "canned_saved": ("Canned reply saved.", "快捷回复已保存。"),
    "canned_deleted": ("Canned reply deleted.", "快捷回复已删除。"),
}


# --- SLA badges ------------------------------------------------------------------------------

def span_words(delta: timedelta, t: T) -> str:
    """2 d 4 h, 3 h 5 min, 12 min (two units at most: a badge, not a report)."""
    minutes = max(int(delta.total_seconds() // 60), 0)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return t(f"{days} d {hours} h", f"{days}天{hours}小时")
    if hours:
        return t(f"{hours} h {mins} min", f"{hours}小时{mins}分")
    return t(f"{mins} min", f"{mins}分")


@dataclass(frozen=True, slots=True)
class Badge:
    css: str  # ok | warn | danger | off
    text: str


def sla_badge(
    ticket: Any, now: datetime, horizons: Mapping[str, tuple[timedelta, timedelta]], t: T
) -> Badge:
    """The deadline the team owes next, as time left or time since it passed."""
    if ticket.status in DONE_STATUSES:
        late = ticket.resolution_breached_at is not None
        return Badge("off", t("resolved late", "逾期解决") if late else t("met", "已达标"))
    if ticket.status not in OPEN_STATUSES:
        return Badge("off", t("paused: waiting on the customer", "暂停：等待顾客"))
    first_owed = ticket.first_response_at is None
    due = ticket.first_response_due if first_owed else ticket.resolution_due
    what = t("first response", "首次响应") if first_owed else t("resolution", "解决")
    if due <= now:
        return Badge("danger", t(f"{what} breached {span_words(now - due, t)} ago",
                                 f"{what}已超时 {span_words(now - due, t)}"))
    first_h, resolution_h = horizons.get(ticket.priority, (timedelta(hours=1),) * 2)
    soon = (first_h if first_owed else resolution_h) >= due - now
    return Badge("warn" if soon else "ok",
                 t(f"{what} in {span_words(due - now, t)}",
                   f"{what}剩余 {span_words(due - now, t)}"))


# --- helpers ---------------------------------------------------------------------------------

def _filters(query: MultiMapping[str]) -> dict[str, str]:
    """Repeated form keys (a multiple select) become the comma lists the views speak."""
    keys = (*views.FILTER_KEYS,)
    return {k: ",".join(v for v in query.getall(k) if v) for k in keys if k in query}


def _ticket_id(request: web.Request) -> int:
    ticket_id = parse_number(request.match_info["number"])
    if ticket_id is None:
        raise NotFound(f"no ticket {request.match_info['number']}")
    return ticket_id


def _done(request: web.Request) -> tuple[str, str] | None:
    return DONE.get(request.query.get("done", ""))


def _actor(agent: Agent) -> str:
    return f"agent:{agent.username}"


def _field(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


# --- the list ----------------------------------------------------------------------------------

async def ticket_list(request: web.Request) -> web.Response:
    agent = page_agent(request)
    ctx = request.app[CTX]
    now = ctx.rules.clock()
    raw = _filters(request.query)
    error = None
    rows: list[queries.TicketRow] = []
    next_cursor = None
    spec = views.FilterSpec()
    async with ctx.store.read() as session:
        agents = [a for a in await accounts.list_agents(session) if a.active]
        saved = await views.list_views(session, agent.id)
        try:
            spec = views.parse_filters(raw)
            f = await views.resolve(session, spec, agent_id=agent.id, now=now,
                                    policy=ctx.rules.sla)
            rows, next_cursor = await queries.list_tickets(
                session, f, limit=PAGE_SIZE, cursor=request.query.get("cursor") or None
            )
        except StoreError as exc:
            error = str(exc)
    current = views.to_query(spec)
    t = _t(agent)
    horizons = views.horizons(ctx.rules.sla)
    return await render(
        request,
        "tickets.html",
        {
            "rows": [
                (r, sla_badge(r.ticket, now, horizons, t),
                 r.customer.name or r.customer.phone or r.customer.email
                 or channel_words(r.ticket.channel, t))
                for r in rows
            ],
            "number": format_number,
            "spec": spec,
            "current": current,
            "next_url": f"/tickets?{current}&" + urlencode({"cursor": next_cursor})
            if next_cursor else None,
            "built_in": list(views.BUILT_IN.values()),
            "saved": saved,
            "agents": agents,
            "statuses": STATUSES,
            "priorities": PRIORITIES,
            "categories": CATEGORIES,
            "channels": CHANNELS,
            "error": error,
            "done": _done(request),
        },
        status=422 if error else 200,
    )


def _t(agent: Agent) -> T:
    def t(en: str, zh: str) -> str:
        return zh if agent.language == "zh" else en

    return t


async def save_view(request: web.Request) -> web.Response:
    agent = page_agent(request)
    form = await request.post()
    ctx = request.app[CTX]
    query = _field(form, "query")
    async with ctx.store.transaction() as session:
        view = await views.save_view(
            session, agent, _field(form, "name"), query, shared=form.get("shared") == "on",
            now=ctx.rules.clock(),
        )
    raise redirect(f"/tickets?{view.query}&done=view_saved")


async def delete_view(request: web.Request) -> web.Response:
    agent = page_agent(request)
    raw = request.match_info["id"]
    if not raw.isdigit():
        raise NotFound(f"no saved view {raw}")
    async with request.app[CTX].store.transaction() as session:
        await views.delete_view(session, agent, int(raw))
    raise redirect("/tickets?done=view_deleted")


# --- one ticket ----------------------------------------------------------------------------------

# Channels whose customers are known by a handle rather than a name.
SOCIAL = ("x", "mastodon")
# Who a customer is when they gave no name: their channel, in words.
NAMELESS: dict[str, tuple[str, str]] = {
    "webchat": ("web chat visitor", "网页聊天访客"),
    "telegram": ("Telegram user", "Telegram 用户"),
    "x": ("X user", "X 用户"),
    "mastodon": ("Mastodon user", "Mastodon 用户"),
}


def channel_words(channel: str, t: T) -> str:
    """A nameless customer of a channel ("web chat visitor"); '' for staff channels."""
    words = NAMELESS.get(channel)
    return t(*words) if words else ""


def handle(identity: IdentityView | None) -> str | None:
    """The @username of an X or Mastodon customer, when known."""
    if identity is None or identity.channel not in SOCIAL:
        return None
    if identity.username:
        return "@" + identity.username.lstrip("@")
    # Without the post, only an identity keyed by its @username (no author id) says it.
    return identity.external_id if identity.external_id.startswith("@") else None


def customer_words(name: str | None, identity: IdentityView | None, channel: str, t: T) -> str:
    """The customer as the page names them: their name (with the @handle on X/Mastodon),
    else their channel identity: Telegram display name, @username, "web chat visitor"."""
    at = handle(identity)
    if name:
        return f"{name} · {at}" if at and at != name else name
    if at:
        return at
    if identity is not None and identity.display_name:
        return identity.display_name
    return channel_words(identity.channel if identity is not None else channel, t)


# A button press is stored as "[button <data>]" (bot/flows/turn.py): without the bot's question
# it says nothing to an agent, so the intake shows what the customer wrote and sent.
BUTTON_PRESS = re.compile(r"\[button [^\]]*\]")


def _written(messages: list[Any]) -> list[Any]:
    return [m for m in messages if not BUTTON_PRESS.fullmatch(m.text or "")]


def _source_post(events: list[Any]) -> int | None:
    """The social post a ticket was opened from (its `source` event), if any."""
    for e in events:
        if e.type == "source" and isinstance(e.data, dict):
            post_id = e.data.get("post_id")
            return post_id if isinstance(post_id, int) else None
    return None


async def _ticket_context(request: web.Request, ticket_id: int) -> dict[str, Any]:
    agent = page_agent(request)
    ctx = request.app[CTX]
    async with ctx.store.read() as session:
        detail = await queries.ticket_detail(session, ticket_id)
        ticket = detail.ticket
        source_post = _source_post(detail.events)
        identity = None
        # Only read when it changes what is shown: a nameless customer, or a social handle.
        if not detail.customer.name or ticket.channel in SOCIAL:
            identity = await ticket_messages.channel_identity(
                session, ticket.identity_id, source_post_id=source_post
            )
        # A ticket opened from a post has no chat intake behind it.
        intake = [] if source_post is not None else _written(
            await ticket_messages.intake_messages(
                session, ticket_id=ticket.id, identity_id=ticket.identity_id,
                customer_id=ticket.customer_id, created_at=ticket.created_at,
            )
        )
        agents = [a for a in await accounts.list_agents(session) if a.active]
        replies = canned.for_language(await canned.list_canned(session), ticket.language)
    values = canned.variables_for(detail.ticket, detail.customer, agent)
    filled = [(c, canned.fill(c.body, values)) for c in replies]
    chosen = request.query.get("canned", "")
    draft = next((text for c, text in filled if str(c.id) == chosen), "")
    merged_into = detail.ticket.merged_into_id
    now = ctx.rules.clock()
    t = _t(agent)
    return {
        "d": detail,
        "ticket": detail.ticket,
        "customer": customer_words(detail.customer.name, identity, detail.ticket.channel, t),
        "intake": intake,
        "number": format_number,
        "moves": sorted(allowed_moves(detail.ticket.status), key=STATUSES.index),
        "agents": agents,
        "canned": filled,
        "draft": draft,
        "priorities": PRIORITIES,
        "categories": CATEGORIES,
        "merged_into": format_number(merged_into) if merged_into else None,
        "badge": sla_badge(detail.ticket, now, views.horizons(ctx.rules.sla), t),
        "done": _done(request),
        "error": None,
    }


async def ticket_page(request: web.Request) -> web.Response:
    return await render(request, "ticket.html", await _ticket_context(request, _ticket_id(request)))


# Shown in the browser: raster images only. Anything else a customer sent (SVG, HTML, PDF) is
# downloaded, never rendered as a page of the desk's origin.
INLINE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


async def ticket_file(request: web.Request) -> web.Response:
    """An attachment of the ticket (or of one merged into it), for the agents working it."""
    ticket_id = _ticket_id(request)
    number = format_number(ticket_id)
    try:
        attachment_id = int(request.match_info["id"])
    except ValueError:
        raise NotFound(f"no such file on {number}") from None
    async with request.app[CTX].store.read() as session:
        found = await ticket_messages.ticket_file(session, ticket_id, attachment_id)
    if found is None or found.content is None:
        raise NotFound(f"no such file on {number}")
    mime = (found.mime_type or "").lower()
    inline = mime in INLINE_TYPES
    name = found.file_name or f"{number}-file-{found.id}"
    return web.Response(
        body=found.content,
        content_type=mime if inline else "application/octet-stream",
        headers={
            "Content-Disposition": (
                f"{'inline' if inline else 'attachment'}; filename*=UTF-8''{quote(name, safe='')}"
            ),
            # Customers' photos: not kept by shared caches or the browser's disk cache.
            "Cache-Control": "private, no-store",
        },
    )


async def ticket_action(request: web.Request) -> web.Response:
    """One form on the ticket page. The hidden `seen_*` fields carry what the person was
    looking at; the service refuses (409, in words) a change to something that moved meanwhile,
    while additions (replies, notes) always go through."""
    ticket_id = _ticket_id(request)
    action = request.match_info["action"]
    agent = page_agent(request)
    form = await request.post()
    ctx = request.app[CTX]
    actor = _actor(agent)
    number = format_number(ticket_id)
    target = f"/tickets/{number}"
    try:
        async with ctx.store.transaction() as session:
            if action == "reply":
                public = form.get("public") != "internal"
                await tickets.reply(session, ctx.rules, ticket_id, _field(form, "text"),
                                    public=public, agent=agent)
                done = "reply" if public else "note"
            elif action == "status":
                await tickets.move_ticket(
                    session, ctx.rules, ticket_id, _field(form, "status"), actor=actor,
                    note=_field(form, "note") or None,
                    expected=_field(form, "seen_status") or None,
                )
                done = "status"
            elif action == "assign":
                await tickets.assign(session, ctx.rules, ticket_id,
                                     _field(form, "agent") or None, actor=actor)
                done = "assign"
            elif action == "priority":
                await tickets.set_priority(
                    session, ctx.rules, ticket_id, _field(form, "priority"), actor=actor,
                    note=_field(form, "note") or None,
                    expected=_field(form, "seen_priority") or None,
                )
                done = "priority"
            elif action == "category":
                seen = form.get("seen_category")
                await tickets.set_category(
                    session, ctx.rules, ticket_id, _field(form, "category") or None,
                    actor=actor, note=_field(form, "note") or None,
                    expected=seen.strip() if isinstance(seen, str) else None,
                )
                done = "category"
            elif action == "merge":
                into = parse_number(_field(form, "into"))
                if into is None:
                    raise Invalid(f"{_field(form, 'into') or 'that'} is not a ticket "
                                        "number (CL-…)")
                await merge_tickets(session, ctx.rules, ticket_id, into, actor=actor,
                                    note=_field(form, "note") or None)
                target = f"/tickets/{format_number(into)}"
                done = "merged"
            else:
                raise NotFound("there is no such action")
    except StoreError as exc:
        if isinstance(exc, NotFound) and action not in ("merge",):
            raise
        page = await _ticket_context(request, ticket_id)
        page["error"] = str(exc)
        if action == "reply":
            page["draft"] = _field(form, "text")
        return await render(request, "ticket.html", page, status=exc.status)
    raise redirect(f"{target}?done={done}")


# --- staff-entered tickets ---------------------------------------------------------------------

async def new_form(request: web.Request) -> web.Response:
    page_agent(request)
    return await render(request, "ticket_new.html", _new_context({}, None))


def _new_context(values: Mapping[str, Any], error: str | None) -> dict[str, Any]:
    return {
        "channels": STAFF_CHANNELS, "kinds": KINDS, "priorities": PRIORITIES,
        "categories": CATEGORIES, "values": values, "error": error,
    }


async def create(request: web.Request) -> web.Response:
    """The same path as POST /api/tickets: find or make the customer, then the batched intake."""
    agent = page_agent(request)
    form = await request.post()
    values = {k: _field(form, k) for k in (
        "channel", "kind", "name", "phone", "email", "description", "category", "priority",
        "order_number", "store", "language")}
    ctx = request.app[CTX]
    try:
        _check_new(values)
        async with ctx.store.transaction() as session:
            customer = await tickets.find_or_create_customer(
                session, name=values["name"], phone=values["phone"] or None,
                email=values["email"] or None, now=ctx.rules.clock(),
            )
        made = await ctx.intake.create(
            tickets.NewTicket(
                kind=values["kind"] or "complaint",
                channel=values["channel"],
                description=values["description"],
                customer_id=customer.id,
                category=values["category"] or None,
                priority=values["priority"] or None,
                order_number=values["order_number"] or None,
                store=values["store"] or None,
                language=values["language"] or None,
                actor=_actor(agent),
            )
        )
    except StoreError as exc:
        return await render(request, "ticket_new.html", _new_context(values, str(exc)),
                            status=exc.status)
    raise redirect(f"/tickets/{format_number(made.id)}?done=created")


def _check_new(v: Mapping[str, str]) -> None:
    """The rules of the API's TicketIn, for a form (the intake checks the rest)."""
    if v["channel"] not in STAFF_CHANNELS:
        raise Invalid("channel: phone, email or in store")
    if not v["name"] or len(v["name"]) > 200:
        raise Invalid("customer name: 1 to 200 characters")
    if len(v["phone"]) > 40:
        raise Invalid("phone: at most 40 characters")
    if v["email"] and ("@" not in v["email"] or " " in v["email"] or len(v["email"]) > 254):
        raise Invalid("email: not an e-mail address")
    if v["category"] and v["category"] not in CATEGORIES:
        raise Invalid("category: unknown value")
    if v["language"] not in ("", "en", "zh"):
        raise Invalid("language: en or zh")
    if len(v["order_number"]) > 64 or len(v["store"]) > 200:
        raise Invalid("order number: at most 64 characters; store: at most 200")


# --- canned replies (admins) -------------------------------------------------------------------

async def canned_page(request: web.Request) -> web.Response:
    require_admin_page(request)
    return await render(request, "canned.html", await _canned_context(request, None, None))


async def _canned_context(
    request: web.Request, error: str | None, values: Mapping[str, Any] | None
) -> dict[str, Any]:
    async with request.app[CTX].store.read() as session:
        rows = await canned.list_canned(session)
    edit = request.query.get("edit", "")
    editing = next((r for r in rows if str(r.id) == edit), None)
    return {"rows": rows, "variables": canned.VARIABLES, "editing": editing,
            "values": values or {}, "error": error, "done": _done(request)}


async def canned_save(request: web.Request) -> web.Response:
    require_admin_page(request)
    form = await request.post()
    values = {k: _field(form, k) for k in ("id", "name", "body", "language")}
    ctx = request.app[CTX]
    try:
        async with ctx.store.transaction() as session:
            if values["id"].isdigit():
                await canned.update_canned(
                    session, int(values["id"]), name=values["name"], body=values["body"],
                    language=values["language"] or None,
                )
            else:
                await canned.create_canned(
                    session, name=values["name"], body=values["body"],
                    language=values["language"] or None, now=ctx.rules.clock(),
                )
    except StoreError as exc:
        page = await _canned_context(request, str(exc), values)
        return await render(request, "canned.html", page, status=exc.status)
    raise redirect("/tickets/canned?done=canned_saved")


async def canned_delete(request: web.Request) -> web.Response:
    require_admin_page(request)
    raw = request.match_info["id"]
    if not raw.isdigit():
        raise NotFound(f"no canned reply {raw}")
    async with request.app[CTX].store.transaction() as session:
        await canned.delete_canned(session, int(raw))
    raise redirect("/tickets/canned?done=canned_deleted")


def routes(app: web.Application) -> None:
    """Adds this module's page routes to the desk app (fixed paths before /tickets/{number})."""
    app.router.add_get("/tickets", ticket_list)
    app.router.add_post("/tickets/views", save_view)
    app.router.add_post("/tickets/views/{id}/delete", delete_view)
    app.router.add_get("/tickets/new", new_form)
    app.router.add_post("/tickets/new", create)
    app.router.add_get("/tickets/canned", canned_page)
    app.router.add_post("/tickets/canned", canned_save)
    app.router.add_post("/tickets/canned/{id}/delete", canned_delete)
    app.router.add_get("/tickets/{number}", ticket_page)
    app.router.add_get("/tickets/{number}/files/{id}", ticket_file)
    app.router.add_post("/tickets/{number}/{action}", ticket_action)
