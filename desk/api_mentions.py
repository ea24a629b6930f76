"""/api/mentions: the review queue of public mentions and its actions (ticket, dismiss, reply,
assign, one at a time or in bulk). A public reply goes out only from an explicit /reply call."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any, Literal, get_args

from aiohttp import web
from pydantic import Field, ValidationError

from desk.auth import current_agent
from desk.context import CTX
from desk.drafts import draft_reply
from desk.errors import ApiError, describe_validation, read_json, read_model
from desk.paging import PAGE_QUERY, limit_of
from desk.routes import Operation
from desk.schemas import Category, Strict
from desk.serialize import detail_json, mention_json
from storage import queries, review
from storage.accounts import get_agent
from storage.lifecycle import PRIORITIES
from storage.review import MentionFilter

CATEGORY_VALUES = frozenset(get_args(Category))
PLATFORMS = ("x", "mastodon", "import")


class VersionIn(Strict):
    """Optional: the `version` the client saw; a post changed since then is a 409."""

    version: int | None = Field(default=None, ge=1)


class MentionReplyIn(Strict):
    text: str = Field(min_length=1, max_length=2_000)
    version: int | None = Field(default=None, ge=1)


class MentionAssignIn(Strict):
    agent: str | None = Field(max_length=64)
    version: int | None = Field(default=None, ge=1)


class BulkIn(Strict):
    ids: list[int] = Field(min_length=1, max_length=review.MAX_BULK)
    action: Literal["ticket", "dismiss", "reply", "assign"]
    text: str | None = Field(default=None, min_length=1, max_length=2_000)
    agent: str | None = Field(default=None, max_length=64)


def _many(request: web.Request, name: str, allowed: frozenset[str] | tuple[str, ...]) -> list[str]:
    raw = request.query.get(name, "").strip()
    values = [v.strip() for v in raw.split(",") if v.strip()]
    for value in values:
        if value not in allowed:
            raise ApiError(422, "invalid", f"{name}: unknown value {value!r}")
    return values


def parse_time(name: str, raw: str | None) -> datetime | None:
    """A day (YYYY-MM-DD, midnight UTC) or an ISO time (UTC when no offset is given)."""
    if not raw:
        return None
    try:
        if len(raw) == 10:
            return datetime.combine(datetime.fromisoformat(raw).date(), time(), UTC)
        at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(422, "invalid", f"{name}: a date (YYYY-MM-DD) or ISO time") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def mention_filter(request: web.Request) -> MentionFilter:
    return MentionFilter(
        states=_many(request, "state", review.STATES),
        platforms=_many(request, "platform", PLATFORMS),
        priorities=_many(request, "priority", PRIORITIES),
        categories=_many(request, "category", CATEGORY_VALUES),
        languages=[v.strip() for v in request.query.get("language", "").split(",") if v.strip()],
        since=parse_time("since", request.query.get("since")),
        until=parse_time("until", request.query.get("until")),
    )


def _post_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise ApiError(404, "not_found", f"no mention {raw}")
    return int(raw)


async def _optional(request: web.Request, model: type[Any]) -> Any:
    """Actions without a required body accept none at all, or `{"version": n}`."""
    if request.content_length == 0 or not request.can_read_body:
        return model()
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "invalid", describe_validation(exc)) from None


async def mention_view(request: web.Request, post_id: int) -> dict[str, Any]:
    async with request.app[CTX].store.read() as session:
        detail = await review.mention_detail(session, post_id)
    return mention_json(detail.post, detail.assignee) | {
        "members": [mention_json(m) for m in detail.members],
        "draft": draft_reply(detail.post),
    }


async def list_mentions(request: web.Request) -> web.Response:
    f = mention_filter(request)
    assignee = request.query.get("assignee")
    async with request.app[CTX].store.read() as session:
        if assignee:
            name = current_agent(request).username if assignee == "me" else assignee
            agent = await get_agent(session, name)
            if agent is None:
                raise ApiError(422, "invalid", f"assignee: no agent named {name!r}")
            f.assignee_id = agent.id
        rows, next_cursor = await review.list_mentions(
            session, f, limit=limit_of(request), cursor=request.query.get("cursor") or None
        )
    return web.json_response(
        {"items": [mention_json(r.post, r.assignee) for r in rows], "next_cursor": next_cursor}
    )


async def get_mention(request: web.Request) -> web.Response:
    return web.json_response(await mention_view(request, _post_id(request)))


async def ticket(request: web.Request) -> web.Response:
    post_id = _post_id(request)
    body = await _optional(request, VersionIn)
    ctx, agent = request.app[CTX], current_agent(request)
    ticket_id = await review.run(
        ctx.store,
        lambda s: review.ticket_mention(
            s, ctx.rules, post_id, agent=agent, expected_version=body.version
        ),
        retry=body.version is None,
    )
    async with ctx.store.read() as session:
        made = detail_json(await queries.ticket_detail(session, ticket_id))
    return web.json_response(made | {"mention": await mention_view(request, post_id)}, status=201)


async def dismiss(request: web.Request) -> web.Response:
    post_id = _post_id(request)
    body = await _optional(request, VersionIn)
    ctx, agent = request.app[CTX], current_agent(request)
    await review.run(
        ctx.store,
        lambda s: review.dismiss_mention(
            s, ctx.rules, post_id, agent=agent, expected_version=body.version
        ),
        retry=body.version is None,
    )
    return web.json_response(await mention_view(request, post_id))


async def reply(request: web.Request) -> web.Response:
    post_id = _post_id(request)
    body = await read_model(request, MentionReplyIn)
    ctx, agent = request.app[CTX], current_agent(request)
    await review.run(
        ctx.store,
        lambda s: review.reply_mention(
            s, ctx.rules, post_id, body.text, agent=agent, expected_version=body.version
        ),
        retry=body.version is None,
    )
    return web.json_response(
        {"mention": await mention_view(request, post_id), "delivery": "queued"}, status=202
    )


async def assign(request: web.Request) -> web.Response:
    post_id = _post_id(request)
    body = await read_model(request, MentionAssignIn)
    ctx, agent = request.app[CTX], current_agent(request)
    await review.run(
        ctx.store,
        lambda s: review.assign_mention(
            s, ctx.rules, post_id, body.agent, agent=agent, expected_version=body.version
        ),
        retry=body.version is None,
    )
    return web.json_response(await mention_view(request, post_id))


async def bulk(request: web.Request) -> web.Response:
    body = await read_model(request, BulkIn)
    if body.action == "reply" and not body.text:
        raise ApiError(422, "invalid", "text: required for action reply")
    ctx = request.app[CTX]
    outcomes = await review.bulk(
        ctx.store, ctx.rules, body.ids, body.action, agent=current_agent(request),
        text=body.text, assignee=body.agent,
    )
    results = [
        {"id": o.id, "ok": o.ok, "ticket": o.ticket}
        | ({} if o.ok else {"error": {"code": o.code, "message": o.message}})
        for o in outcomes
    ]
    return web.json_response(
        {"results": results, "done": sum(o.ok for o in outcomes),
         "failed": sum(not o.ok for o in outcomes)}
    )


LIST_QUERY = (
    ("state", "comma-separated review states; without it every state"),
    ("platform", "comma-separated: x, mastodon, import"),
    ("priority", "comma-separated P1..P4"),
    ("category", "comma-separated complaint categories"),
    ("language", "comma-separated language codes (en, zh, ...)"),
    ("since", "posted at or after: YYYY-MM-DD (UTC) or ISO time"),
    ("until", "posted before: YYYY-MM-DD (UTC) or ISO time"),
    ("assignee", "a username or `me`"),
    *PAGE_QUERY,
)

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/api/mentions", list_mentions,
              "Mentions for review: flagged first, then priority, reach and time",
              query=LIST_QUERY, response="MentionPage"),
    Operation("GET", "/api/mentions/{id}", get_mention,
              "One mention with its near-duplicates (members) and a suggested reply draft",
              response="Mention"),
    Operation("POST", "/api/mentions/bulk", bulk,
              "One action on many mentions; each reports its own outcome", body=BulkIn,
              response="MentionBulk"),
    Operation("POST", "/api/mentions/{id}/ticket", ticket,
              "Open a ticket from the mention (and its near-duplicates)", body=VersionIn,
              status=201),
    Operation("POST", "/api/mentions/{id}/dismiss", dismiss, "Dismiss the mention",
              body=VersionIn, response="Mention"),
    Operation("POST", "/api/mentions/{id}/reply", reply,
              "Reply in public in the mention's thread (sent by the outbox)",
              body=MentionReplyIn, status=202, response="MentionReply"),
    Operation("POST", "/api/mentions/{id}/assign", assign,
              "Assign the mention to an agent (null: nobody)", body=MentionAssignIn,
              response="Mention"),
)
