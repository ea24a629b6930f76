"""The review queue page (/queue): flagged public mentions, most urgent and widest-reaching first,
with ticket / reply / dismiss / assign per row and in bulk.

Plain forms with the CSRF token and POST-redirect-GET, so the actions work without JavaScript;
desk/static/queue.js only adds keyboard shortcuts and bulk selection. Each row's forms carry the
version the agent saw: a mention someone else changed meanwhile is refused, not overwritten.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from markupsafe import Markup

from desk.api_mentions import PLATFORMS, parse_time
from desk.context import CTX
from desk.drafts import draft_reply
from desk.errors import ApiError
from desk.pages import page_agent, redirect, render, request_lang, safe_next, translator
from desk.schemas import Category
from storage import accounts, review
from storage.errors import Invalid, StoreError
from storage.lifecycle import PRIORITIES, format_number
from storage.review import MentionFilter

PAGE_SIZE = 50
# What the queue shows when no state is chosen: what still needs a person.
DEFAULT_STATES = ("flagged", "new")
CATEGORIES: tuple[str, ...] = Category.__args__  # type: ignore[attr-defined]

STATE_WORDS: dict[str, tuple[str, str]] = {
    "new": ("new", "新"),
    "flagged": ("flagged", "待处理"),
    "ticketed": ("ticketed", "已建工单"),
    "replied": ("replied", "已回复"),
    "dismissed": ("dismissed", "已忽略"),
    "ignored": ("ignored", "无需处理"),
}
# Outcomes shown after a redirect: fixed texts chosen by a code (no text from the URL).
NOTICES: dict[str, tuple[str, str]] = {
    "ticketed": ("Ticket {ticket} created.", "已创建工单 {ticket}。"),
    "replied": (
        "Reply queued; it goes out in the thread shortly.", "回复已排队，稍后发布在该帖下。"
    ),
    "dismissed": ("Mention dismissed.", "已忽略该提及。"),
    "assigned": ("Mention assigned.", "已分配。"),
    "bulk": ("{ok} done, {failed} not possible.", "完成 {ok} 条，{failed} 条无法处理。"),
}
ERRORS: dict[str, tuple[str, str]] = {
    "illegal_move": (
        "That is not possible in the mention's current state (someone may have handled it).",
        "该提及当前状态下无法执行此操作（可能已被他人处理）。",
    ),
    "conflict": (
        "Someone changed this mention meanwhile; look again and retry.",
        "该提及已被他人修改，请查看后重试。",
    ),
    "not_found": ("That mention does not exist.", "该提及不存在。"),
    "invalid": ("The request was not valid: {detail}", "请求无效：{detail}"),
    "empty": ("Choose at least one mention first.", "请先选择至少一条提及。"),
}
ACTION_DONE = {"ticket": "ticketed", "reply": "replied", "dismiss": "dismissed",
               "assign": "assigned"}


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One row of the page: the social_posts row and what the page works out for it once.
    (Attributes, not a dict: Jinja tries attribute access first, and a miss on a dict costs an
    exception per lookup, thousands of them on a 50-row page.)"""

    post: Any
    assignee: str | None
    ticket: str | None
    state_word: str
    posted: str  # "YYYY-MM-DD HH:MM" (UTC)
    posted_iso: str
    draft: str
    reply_limit: int | None
    ticket_allowed: bool
    dismiss_allowed: bool
    reply_allowed: bool
    agent_options: Markup


def agent_options(choices: Sequence[tuple[str, str]]) -> Callable[[str | None], Markup]:
    """The <option>s of an assign select (after "Nobody"), escaped once per page, with the
    row's assignee selected. Rendering 20 agents in each of 50 rows through the template was
    most of the page's time; a page has at most one variant per agent, made on first use."""
    plain = [Markup('<option value="{}">{}</option>').format(name, label)
             for name, label in choices]
    made: dict[str | None, Markup] = {}

    def for_assignee(assignee: str | None) -> Markup:
        found = made.get(assignee)
        if found is None:
            found = made[assignee] = Markup("").join(
                Markup('<option value="{}" selected>{}</option>').format(name, label)
                if name == assignee else option
                for (name, label), option in zip(choices, plain, strict=True)
            )
        return found

    return for_assignee


def _item(row: review.MentionRow, options: Callable[[str | None], Markup],
          state_words: dict[str, str]) -> QueueItem:
    post = row.post
    posted = post.posted_at.isoformat() if post.posted_at else ""
    return QueueItem(
        post=post,
        assignee=row.assignee,
        ticket=format_number(post.ticket_id) if post.ticket_id is not None else None,
        state_word=state_words.get(post.state, post.state),
        posted=posted[:16].replace("T", " "),
        posted_iso=posted,
        draft=draft_reply(post),
        reply_limit=review.REPLY_LIMITS.get(post.platform),
        ticket_allowed=post.state in review.MOVES["ticketed"],
        dismiss_allowed=post.state in review.MOVES["dismissed"],
        reply_allowed=post.reply_text is None
        and post.state in review.MOVES["replied"]
        and post.platform in review.REPLY_LIMITS,
        agent_options=options(row.assignee),
    )


def _values(request: web.Request, name: str, allowed: tuple[str, ...]) -> list[str]:
    raw = request.query.get(name, "")
    return [v for v in (p.strip() for p in raw.split(",")) if v in allowed]


def _filter(request: web.Request) -> tuple[MentionFilter, dict[str, str]]:
    """The filter, and the form's values (what the agent chose, to show it back)."""
    q = request.query
    chosen = {k: q.get(k, "").strip() for k in (
        "state", "platform", "priority", "category", "language", "since", "until", "assignee"
    )}
    if chosen["state"] == "all":
        states: list[str] = []
    else:
        states = _values(request, "state", review.STATES) or list(DEFAULT_STATES)
    try:
        since = parse_time("since", chosen["since"] or None)
        until = parse_time("until", chosen["until"] or None)
    except ApiError as exc:
        raise Invalid(exc.message) from None
    f = MentionFilter(
        states=states,
        platforms=_values(request, "platform", PLATFORMS),
        priorities=_values(request, "priority", PRIORITIES),
        categories=_values(request, "category", CATEGORIES),
        languages=[chosen["language"]] if chosen["language"] else [],
        since=since,
        until=until,
    )
    return f, chosen


def _notice(request: web.Request) -> tuple[str, str] | None:
    code = request.query.get("done", "")
    if code not in NOTICES:
        return None
    ticket = request.query.get("ticket", "")
    fill = {
        "ticket": ticket if ticket.startswith("CL-") and ticket[3:].isdigit() else "",
        "ok": request.query.get("ok", "0")[:6], "failed": request.query.get("failed", "0")[:6],
    }
    en, zh = NOTICES[code]
    return en.format(**fill), zh.format(**fill)


def _error(request: web.Request) -> tuple[str, str] | None:
    code = request.query.get("error", "")
    if code not in ERRORS:
        return None
    en, zh = ERRORS[code]
    # The detail is one of our own validation messages; it is shown escaped like all text.
    detail = request.query.get("detail", "")[:200]
    return en.format(detail=detail), zh.format(detail=detail)


async def queue_page(request: web.Request) -> web.Response:
    agent = page_agent(request)
    f, chosen = _filter(request)
    cursor = request.query.get("cursor") or None
    ctx = request.app[CTX]
    async with ctx.store.read() as session:
        if chosen["assignee"] == "me":
            f.assignee_id = agent.id
        rows, next_cursor = await review.list_mentions(
            session, f, limit=PAGE_SIZE, cursor=cursor
        )
        agents = [a for a in await accounts.list_agents(session) if a.active]
    options = agent_options([(a.username, a.display_name or a.username) for a in agents])
    t = translator(request_lang(request))
    state_words = {s: t(en, zh) for s, (en, zh) in STATE_WORDS.items()}
    items = [_item(r, options, state_words) for r in rows]
    kept = {k: v for k, v in chosen.items() if v}
    return await render(
        request,
        "queue.html",
        {
            "items": items,
            "chosen": chosen,
            "agent_options": options(None),
            "states": review.QUEUE_ORDER,
            "state_words": STATE_WORDS,
            "platforms": PLATFORMS,
            "priorities": PRIORITIES,
            "categories": CATEGORIES,
            "next_url": "/queue?" + urlencode(kept | {"cursor": next_cursor})
            if next_cursor else None,
            "first_url": "/queue?" + urlencode(kept) if cursor else None,
            "back": request.path_qs,
            "notice": _notice(request),
            "error": _error(request),
            "nav": "queue",
        },
    )


def _back(form: Any, **params: str) -> web.HTTPFound:
    """Back to the queue as the agent was looking at it, with the outcome."""
    target = safe_next(str(form.get("next", "")), "/queue")
    path, _, query = target.partition("?")
    if path != "/queue":
        path, query = "/queue", ""
    kept = [p for p in query.split("&") if p and p.split("=", 1)[0] not in (
        "done", "error", "detail", "ticket", "ok", "failed"
    )]
    return redirect(path + "?" + "&".join([*kept, urlencode(params)]))


def _post_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise web.HTTPNotFound()
    return int(raw)


def _version(form: Any) -> int | None:
    raw = str(form.get("version", ""))
    return int(raw) if raw.isdigit() else None


def _failed(form: Any, exc: StoreError) -> web.HTTPFound:
    code = exc.code if exc.code in ERRORS else "invalid"
    return _back(form, error=code, **({"detail": str(exc)[:200]} if code == "invalid" else {}))


async def act(request: web.Request) -> web.Response:
    """POST /queue/{id}/{action}: one action on one mention, then back to the queue."""
    agent = page_agent(request)
    post_id = _post_id(request)
    action = request.match_info["action"]
    form = await request.post()
    version = _version(form)
    ctx = request.app[CTX]

    def run_one(session: Any) -> Any:
        if action == "ticket":
            return review.ticket_mention(
                session, ctx.rules, post_id, agent=agent, expected_version=version
            )
        if action == "dismiss":
            return review.dismiss_mention(
                session, ctx.rules, post_id, agent=agent, expected_version=version
            )
        if action == "reply":
            return review.reply_mention(
                session, ctx.rules, post_id, str(form.get("text", "")), agent=agent,
                expected_version=version,
            )
        username = str(form.get("agent", "")) or None
        return review.assign_mention(
            session, ctx.rules, post_id, username, agent=agent, expected_version=version
        )

    try:
        result = await review.run(ctx.store, run_one, retry=version is None)
    except StoreError as exc:
        raise _failed(form, exc) from None
    extra = {"ticket": format_number(result)} if action == "ticket" else {}
    raise _back(form, done=ACTION_DONE[action], **extra)


async def act_in_bulk(request: web.Request) -> web.Response:
    agent = page_agent(request)
    form = await request.post()
    raw_ids = [str(v) for v in form.getall("ids", [])]
    ids = [int(v) for v in raw_ids if v.isdigit() and len(v) <= 18]
    action = str(form.get("action", ""))
    if not ids:
        raise _back(form, error="empty")
    ctx = request.app[CTX]
    try:
        outcomes = await review.bulk(
            ctx.store, ctx.rules, ids, action, agent=agent,
            text=str(form.get("text", "")) or None, assignee=str(form.get("agent", "")) or None,
        )
    except StoreError as exc:
        raise _failed(form, exc) from None
    ok = sum(o.ok for o in outcomes)
    raise _back(form, done="bulk", ok=str(ok), failed=str(len(outcomes) - ok))


def routes(app: web.Application) -> None:
    """Adds this module's page routes to the desk app."""
    app.router.add_get("/queue", queue_page)
    app.router.add_post("/queue/bulk", act_in_bulk)
    app.router.add_post(r"/queue/{id}/{action:ticket|dismiss|reply|assign}", act)
