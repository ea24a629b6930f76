"""A fake Mastodon server that speaks the real REST API, for Mastodon.py to talk HTTP to.

The adapter and the sender under test use the real Mastodon.py client with
`api_base_url=http://127.0.0.1:<port>`; nothing of Mastodon.py is mocked. The entities have
Mastodon 4.x's JSON shapes (Account, Status, Notification, Instance), lists paginate with
`Link` headers (`max_id` for older, `min_id` for newer), every answer carries the
`X-RateLimit-*` headers, and `POST /api/v1/statuses` honours `Idempotency-Key` as Mastodon
does (the same key within an hour returns the status it created, not a second one).

Test controls: accounts (`account`), mentions and direct messages from customers (`mention`,
`dm`), other notification types (`notify`), faults per path (`fail`: any status, a 429 with a
reset time, malformed JSON), a revoked token (`revoke`), deleted accounts (`delete_account`), a
server clock that is off (`clock_skew`); every request is recorded (`requests`) and every status
our account posted is kept (`posted`).
"""

from __future__ import annotations

import html
import itertools
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

TOKEN = "fake-mastodon-token-for-careloop-tests"
MAX_CHARACTERS = 500
RATE_LIMIT = 300
MENTION = re.compile(r"(?<![\w/])@([A-Za-z0-9_]+)(?:@([A-Za-z0-9.\-]+))?")
VISIBILITIES = ("public", "unlisted", "private", "direct")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, Any]
    headers: dict[str, str]
    status: int = 200


@dataclass
class Fault:
    method: str
    path: str  # a prefix of the request path
    status: int
    remaining: int
    body: Any = None
    malformed: bool = False
    reset_in: float | None = None  # seconds until X-RateLimit-Reset, for a 429


@dataclass
class _Server:
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    idempotency: dict[tuple[str, str], str] = field(default_factory=dict)


class FakeMastodon:
    def __init__(self, *, token: str = TOKEN, username: str = "shop") -> None:
        self.token = token
        self.requests: list[Request] = []
        self.posted: list[dict[str, Any]] = []  # statuses our account created, in order
        self.clock_skew = timedelta(0)  # how far the server's clock is ahead of ours
        self.revoked = False
        self.max_characters = MAX_CHARACTERS
        self._faults: list[Fault] = []
        self._data = _Server()
        # Snowflake-like ids: numeric strings that grow, as Mastodon's do.
        self._ids = itertools.count(110_000_000_000_000_001)
        self._runner: web.AppRunner | None = None
        self.base_url = "http://127.0.0.1:0"
        self.me = self.account(username, display_name="Our Shop", followers=1200)

    # --- server lifecycle ----------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get("/api/v1/instance", self._instance_v1)
        r.add_get("/api/v2/instance", self._instance_v2)
        r.add_get("/api/v2/instance/", self._instance_v2)
        r.add_get("/api/v1/accounts/verify_credentials", self._verify_credentials)
        r.add_get("/api/v1/accounts/{id}", self._get_account)
        r.add_get("/api/v1/notifications", self._notifications)
        r.add_get("/api/v1/statuses/{id}", self._get_status)
        r.add_post("/api/v1/statuses", self._post_status)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.base_url = f"http://{host}:{bound[1]}"
        # Accounts made before start got a placeholder host in their URLs.
        for account in self._data.accounts.values():
            self._address(account)
        return self.base_url

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    # --- test controls -------------------------------------------------------------------

    def account(
        self,
        username: str,
        *,
        domain: str | None = None,
        display_name: str = "",
        followers: int | None = 10,
    ) -> dict[str, Any]:
        account_id = str(next(self._ids))
        acct = f"{username}@{domain}" if domain else username
        account: dict[str, Any] = {
            "id": account_id, "username": username, "acct": acct,
            "display_name": display_name, "locked": False, "bot": False,
            "discoverable": True, "group": False, "created_at": "2022-11-01T00:00:00.000Z",
            "note": "", "url": "", "uri": "", "avatar": "", "avatar_static": "",
            "header": "", "header_static": "", "followers_count": followers,
            "following_count": 3, "statuses_count": 42, "last_status_at": "2024-05-01",
            "emojis": [], "fields": [],
        }
        if followers is None:  # some servers (and privacy settings) leave the count out
            del account["followers_count"]
        self._address(account)
        self._data.accounts[account_id] = account
        return account

    def mention(
        self,
        author: dict[str, Any],
        text: str,
        *,
        visibility: str = "public",
        in_reply_to: str | None = None,
        html_content: str | None = None,
        media: tuple[str, ...] = (),
        spoiler: str = "",
        language: str | None = "en",
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """A status by `author` that mentions us (leading `@shop`), and its notification."""
        content = html_content if html_content is not None else (
            f"<p>{self._mention_html(self.me)} {html.escape(text)}</p>"
        )
        status = self._status(
            author, content, visibility=visibility, in_reply_to=in_reply_to,
            mentions=[self.me], media=media, spoiler=spoiler, language=language, at=at,
        )
        self.notify("mention", author, status)
        return status

    def dm(self, author: dict[str, Any], text: str, **kw: Any) -> dict[str, Any]:
        """A direct message to us: a direct-visibility status mentioning us."""
        return self.mention(author, text, visibility="direct", **kw)

    def notify(
        self, kind: str, author: dict[str, Any], status: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        notification = {
            "id": str(next(self._ids)), "type": kind,
            "created_at": _iso(status["created_at"] if status else None),
            "account": author, "group_key": f"ungrouped-{len(self._data.notifications)}",
        }
        if status is not None:
            notification["status"] = status
        self._data.notifications.append(notification)
        return notification

    def fail(
        self,
        path: str,
        status: int,
        *,
        method: str = "GET",
        times: int = 1,
        body: Any = None,
        malformed: bool = False,
        reset_in: float | None = None,
    ) -> None:
        """The next `times` requests to a path starting with `path` get this answer."""
        self._faults.append(Fault(method, path, status, times, body, malformed, reset_in))

    def revoke(self) -> None:
        self.revoked = True

    def delete_account(self, account: dict[str, Any]) -> None:
        self._data.accounts.pop(account["id"], None)

    def delete_status(self, status: dict[str, Any]) -> None:
        self._data.statuses.pop(status["id"], None)
        self._data.notifications = [
            n for n in self._data.notifications if (n.get("status") or {}).get("id") != status["id"]
        ]

    def sent_to(self, account: dict[str, Any]) -> list[dict[str, Any]]:
        """Statuses we posted that mention this account (what the customer would see)."""
        return [
            s for s in self.posted if any(m["id"] == account["id"] for m in s["mentions"])
        ]

    def notification_ids(self, kind: str) -> list[str]:
        return [n["id"] for n in self._data.notifications if n["type"] == kind]

    def calls(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path == path]

    @staticmethod
    def text_of(status: dict[str, Any]) -> str:
        """The status text as written (our fake keeps it beside the HTML)."""
        return str(status["_text"])

    # --- entities --------------------------------------------------------------------------

    def _address(self, account: dict[str, Any]) -> None:
        account["url"] = f"{self.base_url}/@{account['acct']}"
        account["uri"] = f"{self.base_url}/users/{account['username']}"

    def _mention_html(self, account: dict[str, Any]) -> str:
        return (
            f'<span class="h-card" translate="no"><a href="{html.escape(account["url"])}" '
            f'class="u-url mention">@<span>{html.escape(account["username"])}</span></a></span>'
        )

    def _status(
        self,
        author: dict[str, Any],
        content: str,
        *,
        visibility: str,
        in_reply_to: str | None,
        mentions: list[dict[str, Any]],
        media: tuple[str, ...] = (),
        spoiler: str = "",
        language: str | None = "en",
        at: datetime | None = None,
        text: str = "",
    ) -> dict[str, Any]:
        status_id = str(next(self._ids))
        parent = self._data.statuses.get(in_reply_to or "")
        created = at or (datetime.now(UTC) + self.clock_skew)
        status: dict[str, Any] = {
            "id": status_id, "created_at": _iso(created),
            "in_reply_to_id": in_reply_to,
            "in_reply_to_account_id": parent["account"]["id"] if parent else None,
            "sensitive": False, "spoiler_text": spoiler, "visibility": visibility,
            "language": language,
            "uri": f"{self.base_url}/users/{author['username']}/statuses/{status_id}",
            "url": f"{self.base_url}/@{author['acct']}/{status_id}",
            "replies_count": 0, "reblogs_count": 0, "favourites_count": 0, "edited_at": None,
            "content": content, "reblog": None, "application": None, "account": author,
            "media_attachments": [
                {"id": str(next(self._ids)), "type": kind, "url": f"{self.base_url}/m/{i}",
                 "preview_url": None, "remote_url": None, "description": None,
                 "meta": {}, "blurhash": None}
                for i, kind in enumerate(media)
            ],
            "mentions": [
                {"id": m["id"], "username": m["username"], "url": m["url"], "acct": m["acct"]}
                for m in mentions
            ],
            "tags": [], "emojis": [], "card": None, "poll": None,
            "_text": text,
        }
        self._data.statuses[status_id] = status
        return status

    # --- HTTP --------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        form = await _form(request)
        record = Request(
            method=request.method, path=request.path,
            query={k: request.query.getall(k) for k in set(request.query.keys())},
            form=form, headers=dict(request.headers),
        )
        self.requests.append(record)
        response = self._fault(request) or self._unauthorized(request)
        if response is None:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                response = _error(exc.status, exc.reason)
        self._rate_headers(response)
        record.status = response.status
        return response

    def _fault(self, request: web.Request) -> web.StreamResponse | None:
        for fault in self._faults:
            if (
                fault.remaining > 0 and fault.method == request.method
                and request.path.startswith(fault.path)
            ):
                fault.remaining -= 1
                if fault.malformed:
                    return web.Response(
                        status=fault.status, text='{"id": "1", "type": "ment',
                        content_type="application/json",
                    )
                response = _error(fault.status, fault.body or _REASONS.get(fault.status, "Error"))
                if fault.status == 429:
                    reset = self._now() + timedelta(seconds=fault.reset_in or 300)
                    response.headers["X-RateLimit-Reset"] = _iso(reset)
                    response.headers["X-RateLimit-Remaining"] = "0"
                return response
        return None

    def _unauthorized(self, request: web.Request) -> web.StreamResponse | None:
        if request.path.startswith("/api/v1/instance") or request.path.startswith(
            "/api/v2/instance"
        ):
            return None
        if self.revoked or request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "The access token is invalid")
        return None

    def _now(self) -> datetime:
        return datetime.now(UTC) + self.clock_skew

    def _rate_headers(self, response: web.StreamResponse) -> None:
        now = self._now()
        response.headers["Date"] = format_datetime(now, usegmt=True)
        response.headers.setdefault("X-RateLimit-Limit", str(RATE_LIMIT))
        response.headers.setdefault("X-RateLimit-Remaining", str(RATE_LIMIT - 1))
        window_end = now.replace(second=0, microsecond=0) + timedelta(
            minutes=5 - now.minute % 5
        )
        response.headers.setdefault("X-RateLimit-Reset", _iso(window_end))

    def _instance(self) -> dict[str, Any]:
        return {
            "domain": "127.0.0.1", "title": "Fake Mastodon", "version": "4.3.2",
            "source_url": "https://github.com/mastodon/mastodon", "description": "",
            "usage": {"users": {"active_month": 2}}, "thumbnail": {"url": ""},
            "languages": ["en"], "api_versions": {"mastodon": 2},
            "configuration": {
                "urls": {"streaming": ""},
                "accounts": {"max_featured_tags": 10},
                "statuses": {"max_characters": self.max_characters,
                             "max_media_attachments": 4, "characters_reserved_per_url": 23},
            },
            "registrations": {"enabled": False, "approval_required": False, "message": None},
            "contact": {"email": "", "account": None}, "rules": [],
        }

    async def _instance_v1(self, request: web.Request) -> web.StreamResponse:
        body = self._instance()
        body["uri"] = body.pop("domain")
        return _json(body)

    async def _instance_v2(self, request: web.Request) -> web.StreamResponse:
        return _json(self._instance())

    async def _verify_credentials(self, request: web.Request) -> web.StreamResponse:
        return _json(self.me | {"source": {"privacy": "public", "sensitive": False,
                                           "language": "en", "note": "", "fields": []}})

    async def _get_account(self, request: web.Request) -> web.StreamResponse:
        account = self._data.accounts.get(request.match_info["id"])
        if account is None:
            return _error(404, "Record not found")
        return _json(account)

    async def _get_status(self, request: web.Request) -> web.StreamResponse:
        status = self._data.statuses.get(request.match_info["id"])
        if status is None:
            return _error(404, "Record not found")
        return _json(_public(status))

    async def _notifications(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        types = q.getall("types[]", [])
        excluded = q.getall("exclude_types[]", [])
        try:
            limit = min(max(int(q.get("limit", "40")), 1), 80)
        except ValueError:
            return _error(422, "limit is invalid")
        bounds = {}
        for key in ("min_id", "since_id", "max_id"):
            if key in q:
                if not q[key].isdigit():
                    return _error(404, "Record not found")
                bounds[key] = int(q[key])
        items = [
            n for n in self._data.notifications
            if (not types or n["type"] in types) and n["type"] not in excluded
        ]
        items.sort(key=lambda n: int(n["id"]))
        if "max_id" in bounds:
            items = [n for n in items if int(n["id"]) < bounds["max_id"]]
        lower = max(bounds.get("min_id", -1), bounds.get("since_id", -1))
        items = [n for n in items if int(n["id"]) > lower]
        # min_id: the page right after it; otherwise the newest page. Newest first either way.
        page = items[:limit] if "min_id" in bounds else items[-limit:]
        page.reverse()
        response = _json([_public_notification(n) for n in page])
        if page:
            response.headers["Link"] = self._links(request, page[-1]["id"], page[0]["id"])
        return response

    def _links(self, request: web.Request, oldest: str, newest: str) -> str:
        keep = [(k, v) for k in request.query for v in request.query.getall(k)
                if k not in ("min_id", "max_id", "since_id")]
        keep = list(dict.fromkeys(keep))
        base = f"{self.base_url}{request.path}"
        older = urlencode([*keep, ("max_id", oldest)])
        newer = urlencode([*keep, ("min_id", newest)])
        return f'<{base}?{older}>; rel="next", <{base}?{newer}>; rel="prev"'

    async def _post_status(self, request: web.Request) -> web.StreamResponse:
        form = await _form(request)
        key = request.headers.get("Idempotency-Key")
        if key and (self.me["id"], key) in self._data.idempotency:
            return _json(_public(self._data.statuses[self._data.idempotency[(self.me["id"], key)]]))
        text = str(form.get("status") or "")
        if not text.strip():
            return _error(422, "Validation failed: Text can't be blank")
        if len(text) > self.max_characters:
            return _error(
                422, f"Validation failed: Text character limit of {self.max_characters} exceeded"
            )
        visibility = str(form.get("visibility") or "public")
        if visibility not in VISIBILITIES:
            return _error(422, "Validation failed: Visibility is not included in the list")
        in_reply_to = form.get("in_reply_to_id") or None
        if in_reply_to is not None and str(in_reply_to) not in self._data.statuses:
            return _error(404, "Record not found")
        mentioned = self._mentioned(text)
        content = "<p>" + MENTION.sub(
            lambda m: self._mention_link(m, mentioned), html.escape(text)
        ).replace("\n", "<br />") + "</p>"
        status = self._status(
            self.me, content, visibility=visibility,
            in_reply_to=str(in_reply_to) if in_reply_to else None, mentions=mentioned,
            language=form.get("language"), text=text,
        )
        self.posted.append(status)
        if key:
            self._data.idempotency[(self.me["id"], key)] = status["id"]
        return _json(_public(status))

    def _mentioned(self, text: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for match in MENTION.finditer(text):
            acct = match.group(1) + (f"@{match.group(2)}" if match.group(2) else "")
            for account in self._data.accounts.values():
                if account["acct"] == acct and account not in found:
                    found.append(account)
        return found

    def _mention_link(self, match: re.Match[str], mentioned: list[dict[str, Any]]) -> str:
        acct = match.group(1) + (f"@{match.group(2)}" if match.group(2) else "")
        for account in mentioned:
            if account["acct"] == acct:
                return self._mention_html(account)
        return match.group(0)


_REASONS = {
    401: "The access token is invalid", 403: "This action is not allowed",
    404: "Record not found", 422: "Validation failed", 429: "Too many requests",
    500: "We're sorry, but something went wrong", 502: "Bad Gateway",
    503: "Service Unavailable",
}


async def _form(request: web.Request) -> dict[str, Any]:
    """The body of a POST, form-encoded (what Mastodon.py sends) or JSON; aiohttp caches the
    body, so the middleware and the handler may both read it."""
    form: dict[str, Any] = {}
    if request.method not in ("POST", "PUT"):
        return form
    if request.content_type == "application/json":
        body = await request.json()
        return body if isinstance(body, dict) else {}
    posted = await request.post()
    for key in set(posted.keys()):
        values = posted.getall(key)
        form[key] = values if key.endswith("[]") else values[-1]
    return form


def _iso(value: datetime | str | None) -> str:
    if isinstance(value, str):
        return value
    when = value or datetime.now(UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _public(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if not k.startswith("_")}


def _public_notification(notification: dict[str, Any]) -> dict[str, Any]:
    out = dict(notification)
    if out.get("status") is not None:
        out["status"] = _public(out["status"])
    return out


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json"
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)
