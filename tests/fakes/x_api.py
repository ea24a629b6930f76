"""A fake X API v2 server that speaks the real wire protocol.

The adapter under test is the real tweepy AsyncClient, its requests moved here by
monitors/x_transport.py (`CARELOOP_X_API_BASE`). What the fake answers follows the recorded
exchanges in ../shared/data/x/tweepy_cassette_interactions.jsonl (status codes, rate-limit
headers and limits per endpoint, JSON shapes, default fields, `meta`) — test_x_fake.py replays
them — and every request and answer is checked against x_api_v2_openapi.json (x_spec): a
request the real API would reject gets X's 400 AND lands in `violations`; an answer of the
fake that breaks the spec lands there too. Tests assert `violations` is empty.

Also faithful: OAuth 1.0a signatures are verified (over the public https://api.twitter.com
URL, as X does), app-only bearer tokens are refused where X wants user context, ids are
snowflakes that carry their creation time, pagination tokens are opaque and can expire,
mentions stop at the 800 newest, recent search at 7 days and DM events at 30, rate limits
count down per endpoint in 15-minute windows with x-rate-limit-* headers.

Test controls: seed users, mentions, posts and DMs; `fail` (429 with a reset, 5xx, 502 HTML,
401, 402, 403, malformed JSON), `exhaust` (a window used up until its reset), `revoke`
(credentials), `skew` (the server's clock), `refuse_dms`, `expire_tokens`; every request is
recorded in `requests`.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from oauthlib.oauth1.rfc5849 import signature as oauth_signature
from oauthlib.oauth1.rfc5849 import utils as oauth_utils

from tests.fakes.x_spec import Spec, load_spec

PUBLIC_ROOT = "https://api.twitter.com"
TWITTER_EPOCH_MS = 1288834974657
WINDOW_SECONDS = 15 * 60
MENTIONS_SERVED = 800
SEARCH_DAYS = 7
DM_DAYS = 30
MAX_TWEET_CHARS = 280
PROBLEMS = "https://api.twitter.com/2/problems/"

# Per-endpoint limits, as the recorded exchanges show them (x-rate-limit-limit).
LIMITS = {
    "me": 75, "mentions": 450, "search": 450, "tweet": 300, "create_tweet": 200,
    "delete_tweet": 50, "dm_events": 300, "dm_send": 200,
}
USER_CONTEXT_ONLY = {"me", "create_tweet", "delete_tweet", "dm_events", "dm_send"}


@dataclass
class Credentials:
    consumer_key: str = "fake-consumer-key"
    consumer_secret: str = "fake-consumer-secret"
    access_token: str = "1500000000000000001-fakeaccesstoken"
    access_token_secret: str = "fake-access-token-secret"
    bearer_token: str = "AAAAAAAAAAAAAAAAAAAAAFakeBearerTokenForCareloopTests"


@dataclass
class User:
    id: str
    username: str
    name: str
    followers: int | None = 10  # None: X sends no public_metrics for this user
    protected: bool = False
    suspended: bool = False
    accepts_dms: bool = True

    def json(self, fields: set[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name, "username": self.username}
        if "public_metrics" in fields and self.followers is not None:
            out["public_metrics"] = {
                "followers_count": self.followers, "following_count": 12,
                "tweet_count": 40, "listed_count": 0,
            }
        if "protected" in fields:
            out["protected"] = self.protected
        return out


@dataclass
class Tweet:
    id: str
    text: str
    author_id: str
    created_at: datetime
    conversation_id: str
    in_reply_to_user_id: str | None = None
    replied_to: str | None = None
    mentions: tuple[str, ...] = ()
    deleted: bool = False

    def json(self, fields: set[str]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "edit_history_tweet_ids": [self.id], "id": self.id, "text": self.text,
        }
        if "author_id" in fields:
            out["author_id"] = self.author_id
        if "created_at" in fields:
            out["created_at"] = _iso(self.created_at)
        if "conversation_id" in fields:
            out["conversation_id"] = self.conversation_id
        if "in_reply_to_user_id" in fields and self.in_reply_to_user_id:
            out["in_reply_to_user_id"] = self.in_reply_to_user_id
        if "referenced_tweets" in fields and self.replied_to:
            out["referenced_tweets"] = [{"type": "replied_to", "id": self.replied_to}]
        return out


@dataclass
class DmEvent:
    id: str
    text: str
    sender_id: str
    dm_conversation_id: str
    created_at: datetime
    event_type: str = "MessageCreate"

    def json(self, fields: set[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"event_type": self.event_type, "id": self.id, "text": self.text}
        if "sender_id" in fields:
            out["sender_id"] = self.sender_id
        if "dm_conversation_id" in fields:
            out["dm_conversation_id"] = self.dm_conversation_id
        if "created_at" in fields:
            out["created_at"] = _iso(self.created_at)
        return out


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    endpoint: str
    auth: str  # oauth1 | bearer | none
    at: float  # the fake's clock (time.time() + skew)
    status: int = 200


@dataclass
class Fault:
    endpoint: str
    status: int  # 0: a 200 whose body is not JSON
    remaining: int
    reset_in: float | None
    detail: str | None
    skip: int = 0  # matching requests that succeed before the fault starts


@dataclass
class Window:
    limit: int
    remaining: int
    reset: int


class XError(Exception):
    def __init__(self, status: int, body: dict[str, Any] | str, *,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body
        self.headers = headers or {}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z")


def blank_problem(status: int, title: str, detail: str | None = None) -> dict[str, Any]:
    """RFC 7807 as X sends it for 401, 403, 429, 5xx."""
    return {"title": title, "detail": detail or title, "type": "about:blank", "status": status}


def invalid_request(parameter: str, value: str, message: str) -> dict[str, Any]:
    return {
        "errors": [{"parameters": {parameter: [value]}, "message": message}],
        "title": "Invalid Request",
        "detail": "One or more parameters to your request was invalid.",
        "type": PROBLEMS + "invalid-request",
    }


def snowflake_time(snowflake: str) -> datetime:
    return datetime.fromtimestamp(((int(snowflake) >> 22) + TWITTER_EPOCH_MS) / 1000, UTC)


class FakeX:
    def __init__(self, credentials: Credentials | None = None, *,
                 spec: Spec | None = None) -> None:
        self.credentials = credentials or Credentials()
        self.spec = spec or load_spec()
        self.skew = 0.0  # seconds the server's clock is ahead of ours
        self.requests: list[Request] = []
        self.violations: list[str] = []
        self.unimplemented: list[str] = []
        self.users: dict[str, User] = {}
        self.tweets: dict[str, Tweet] = {}
        self.dms: list[DmEvent] = []
        self.revoked = False
        self._faults: list[Fault] = []
        self._windows: dict[str, Window] = {}
        self._tokens: dict[str, tuple[str, str, str]] = {}  # token -> (endpoint, id, way)
        self._sequence = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.api_base = ""
        self.me = self.add_user("CareloopShop", "Careloop Shop", followers=5200,
                                user_id=self.credentials.access_token.split("-")[0])

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.api_base = f"http://{host}:{self._runner.addresses[0][1]}"
        return self.api_base

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def now(self) -> float:
        return time.time() + self.skew

    # --- seeding -----------------------------------------------------------------------------

    def snowflake(self, at: datetime | None = None) -> str:
        moment = at or datetime.fromtimestamp(self.now(), UTC)
        ms = int(moment.timestamp() * 1000) - TWITTER_EPOCH_MS
        return str((ms << 22) | (next(self._sequence) % (1 << 22)))

    def add_user(self, username: str, name: str | None = None, *, followers: int | None = 10,
                 user_id: str | None = None, protected: bool = False,
                 suspended: bool = False) -> User:
        user = User(user_id or self.snowflake(), username, name or username, followers,
                    protected, suspended)
        self.users[user.id] = user
        return user

    def post(self, author: User, text: str, *, at: datetime | None = None,
             mentions: Iterable[User] = (), reply_to: Tweet | None = None,
             tweet_id: str | None = None) -> Tweet:
        tweet_id = tweet_id or self.snowflake(at)
        tweet = Tweet(
            id=tweet_id, text=text, author_id=author.id,
            created_at=snowflake_time(tweet_id),
            conversation_id=reply_to.conversation_id if reply_to else tweet_id,
            in_reply_to_user_id=reply_to.author_id if reply_to else None,
            replied_to=reply_to.id if reply_to else None,
            mentions=tuple(u.id for u in mentions),
        )
        self.tweets[tweet_id] = tweet
        return tweet

    def mention(self, author: User, text: str, *, at: datetime | None = None,
                reply_to: Tweet | None = None) -> Tweet:
        """A post by `author` that mentions our account."""
        return self.post(author, f"@{self.me.username} {text}" if text else f"@{self.me.username}",
                         at=at, mentions=[self.me], reply_to=reply_to)

    def direct_message(self, sender: User, text: str, *, to: User | None = None,
                       at: datetime | None = None) -> DmEvent:
        other = to or self.me
        event_id = self.snowflake(at)
        low, high = sorted((sender.id, other.id), key=int)
        event = DmEvent(event_id, text, sender.id, f"{low}-{high}", snowflake_time(event_id))
        self.dms.append(event)
        return event

    def delete(self, tweet: Tweet) -> None:
        tweet.deleted = True

    def refuse_dms(self, user: User) -> None:
        user.accepts_dms = False

    def revoke(self) -> None:
        """The account owner revoked our app: every user-context request gets 401."""
        self.revoked = True

    def expire_tokens(self) -> None:
        self._tokens.clear()

    # --- faults ------------------------------------------------------------------------------

    def fail(self, endpoint: str, status: int, *, times: int = 1, reset_in: float = 60.0,
             detail: str | None = None, after: int = 0) -> None:
        """The next `times` requests to `endpoint` fail: 429 (reset `reset_in` seconds after
        the server's now), 500/503, 502 (the HTML page of X's front end), 401, 402, 403, or
        0 for a 200 whose body is malformed JSON. With `after`, that many succeed first."""
        self._faults.append(Fault(endpoint, status, times, reset_in, detail, after))

    def exhaust(self, endpoint: str, *, reset_in: float = 60.0) -> None:
        """The endpoint's window is used up: 429 for everything until its reset."""
        self._windows[endpoint] = Window(LIMITS[endpoint], 0, int(self.now() + reset_in))

    # --- inspection --------------------------------------------------------------------------

    def requests_to(self, endpoint: str) -> list[Request]:
        return [r for r in self.requests if r.endpoint == endpoint]

    def sent_tweets(self) -> list[Tweet]:
        return [t for t in self.tweets.values() if t.author_id == self.me.id]

    def sent_dms(self, to: User | None = None) -> list[DmEvent]:
        return [
            d for d in self.dms if d.sender_id == self.me.id
            and (to is None or to.id in d.dm_conversation_id.split("-"))
        ]

    # --- the wire ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["path"]
        query = dict(request.query)
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        route = self._route(request.method, path)
        endpoint = route[0] if route else "unknown"
        record = Request(request.method, path, query, body, endpoint, "none", self.now())
        self.requests.append(record)
        try:
            if route is None:
                self.unimplemented.append(f"{request.method} {path}")
                raise XError(404, blank_problem(404, "Not Found Error",
                                                f"The fake has no {request.method} {path}"))
            record.auth = self._authenticate(request, path, endpoint)
            problems = self.spec.check_request(request.method, path, query,
                                               body if raw else None)
            if problems:
                self.violations.extend(problems)
                raise XError(400, invalid_request("request", path, "; ".join(problems)[:500]))
            window = self._count(endpoint)
            fault = self._take_fault(endpoint)
            if fault is not None:
                return self._fault_response(record, fault, window)
            handler, params = route[1], route[2]
            status, result = await handler(query, body, **params)
        except XError as exc:
            record.status = exc.status
            return self._respond(request.method, path, exc.status, exc.body,
                                 self._windows.get(endpoint), exc.headers)
        record.status = status
        return self._respond(request.method, path, status, result, self._windows.get(endpoint))

    def _respond(self, method: str, path: str, status: int, body: dict[str, Any] | str,
                 window: Window | None, extra: dict[str, str] | None = None) -> web.Response:
        headers = {
            "date": formatdate(self.now(), usegmt=True),
            "cache-control": "no-cache, no-store, max-age=0",
            "content-disposition": "attachment; filename=json.json",
            "api-version": "2.55",
            "x-access-level": "read-write-directmessages",
            "x-content-type-options": "nosniff",
            "x-frame-options": "SAMEORIGIN",
            "x-xss-protection": "0",
            "x-transaction-id": hashlib.sha1(str(time.monotonic()).encode()).hexdigest()[:16],
            "strict-transport-security": "max-age=631138519",
            "server": "tsa_b",
        }
        if window is not None:
            headers.update({
                "x-rate-limit-limit": str(window.limit),
                "x-rate-limit-remaining": str(window.remaining),
                "x-rate-limit-reset": str(window.reset),
            })
        headers.update(extra or {})
        if isinstance(body, str):
            return web.Response(status=status, text=body, headers=headers,
                                content_type="text/html")
        problem = status >= 400
        content_type = "application/problem+json" if problem and "type" in body else (
            "application/json")
        if self.spec.operation(method, path) is not None:
            self.violations.extend(
                self.spec.check_response(method, path, status, body, content_type))
        return web.Response(status=status, body=json.dumps(body).encode(), headers=headers,
                            content_type=content_type, charset="utf-8")

    def _authenticate(self, request: web.Request, path: str, endpoint: str) -> str:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            if header[7:] != self.credentials.bearer_token or self.revoked:
                raise XError(401, blank_problem(401, "Unauthorized"))
            if endpoint in USER_CONTEXT_ONLY:
                raise XError(403, {
                    "title": "Unsupported Authentication",
                    "detail": "Authenticating with OAuth 2.0 Application-Only is forbidden for "
                              "this endpoint.  Supported authentication types are [OAuth 1.0a "
                              "User Context, OAuth 2.0 User Context].",
                    "type": PROBLEMS + "unsupported-authentication",
                    "status": 403,
                })
            return "bearer"
        if header.startswith("OAuth "):
            if not self._oauth_valid(request, path, header) or self.revoked:
                raise XError(401, blank_problem(401, "Unauthorized"))
            return "oauth1"
        raise XError(401, blank_problem(401, "Unauthorized"))

    def _oauth_valid(self, request: web.Request, path: str, header: str) -> bool:
        """OAuth 1.0a HMAC-SHA1 over the public URL (X sits behind https://api.twitter.com)."""
        oauth = dict(oauth_utils.parse_authorization_header(header))
        creds = self.credentials
        if oauth.get("oauth_consumer_key") != creds.consumer_key or oauth.get(
                "oauth_token") != creds.access_token:
            return False
        query = request.rel_url.raw_query_string
        uri = f"{PUBLIC_ROOT}{request.rel_url.raw_path}" + (f"?{query}" if query else "")
        params = oauth_signature.collect_parameters(
            uri_query=query, headers={"Authorization": header}, exclude_oauth_signature=True)
        base = oauth_signature.signature_base_string(
            request.method, oauth_signature.base_string_uri(uri),
            oauth_signature.normalize_parameters(params))
        expected = oauth_signature.sign_hmac_sha1_with_client(base, SimpleNamespace(
            client_secret=creds.consumer_secret, resource_owner_secret=creds.access_token_secret))
        return oauth_signature.safe_string_equals(expected, unquote(oauth.get(
            "oauth_signature", "")))

    def _count(self, endpoint: str) -> Window:
        now = self.now()
        window = self._windows.get(endpoint)
        if window is None or now >= window.reset:
            window = Window(LIMITS[endpoint], LIMITS[endpoint], int(now + WINDOW_SECONDS))
            self._windows[endpoint] = window
        if window.remaining <= 0:
            raise XError(429, blank_problem(429, "Too Many Requests"))
        window.remaining -= 1
        return window

    def _take_fault(self, endpoint: str) -> Fault | None:
        for fault in self._faults:
            if fault.endpoint == endpoint and fault.remaining > 0:
                if fault.skip > 0:
                    fault.skip -= 1
                    return None
                fault.remaining -= 1
                return fault
        return None

    def _fault_response(self, record: Request, fault: Fault, window: Window) -> web.Response:
        status = fault.status or 200
        record.status = status
        if fault.status == 0:  # a 200 cut short by a proxy
            return web.Response(status=200, body=b'{"data": [{"id": "1", "te',
                                content_type="application/json")
        if status == 502:
            return web.Response(status=502, text="<html><body><h1>502 Bad Gateway</h1>"
                                "</body></html>", content_type="text/html")
        if status == 429:
            window.remaining = 0
            window.reset = int(self.now() + (fault.reset_in or 0))
            body = blank_problem(429, "Too Many Requests")
        elif status == 402:
            body = {
                "title": "CreditsDepleted",
                "detail": fault.detail or "Your enrolled account does not have any credits to "
                                          "fulfill this request.",
                "type": PROBLEMS + "credits",
            }
        else:
            titles = {401: "Unauthorized", 403: "Forbidden", 500: "Internal Server Error",
                      503: "Service Unavailable"}
            body = blank_problem(status, titles.get(status, "Error"), fault.detail)
        return self._respond(record.method, record.path, status, body, window)

    def _route(self, method: str, path: str) -> tuple[str, Any, dict[str, str]] | None:
        parts = path.strip("/").split("/")
        if parts[:1] != ["2"]:
            return None
        rest = parts[1:]
        routes: list[tuple[str, list[str], str, Any]] = [
            ("GET", ["users", "me"], "me", self._get_me),
            ("GET", ["users", "{id}", "mentions"], "mentions", self._get_mentions),
            ("GET", ["tweets", "search", "recent"], "search", self._get_search),
            ("GET", ["tweets", "{id}"], "tweet", self._get_tweet),
            ("POST", ["tweets"], "create_tweet", self._post_tweet),
            ("DELETE", ["tweets", "{id}"], "delete_tweet", self._delete_tweet),
            ("GET", ["dm_events"], "dm_events", self._get_dm_events),
            ("GET", ["dm_conversations", "with", "{participant_id}", "dm_events"], "dm_events",
             self._get_dm_events),
            ("GET", ["dm_conversations", "{dm_conversation_id}", "dm_events"], "dm_events",
             self._get_dm_events),
            ("POST", ["dm_conversations", "with", "{participant_id}", "messages"], "dm_send",
             self._post_dm),
            ("POST", ["dm_conversations", "{dm_conversation_id}", "messages"], "dm_send",
             self._post_dm),
            ("POST", ["dm_conversations"], "dm_send", self._post_dm_conversation),
        ]
        for verb, pattern, endpoint, handler in routes:
            if verb != method or len(pattern) != len(rest):
                continue
            params: dict[str, str] = {}
            for want, got in zip(pattern, rest, strict=True):
                if want.startswith("{"):
                    params[want[1:-1]] = got
                elif want != got:
                    break
            else:
                return endpoint, handler, params
        return None

    # --- reading -----------------------------------------------------------------------------

    @staticmethod
    def _fields(query: dict[str, str], name: str) -> set[str]:
        return set(filter(None, query.get(name, "").split(",")))

    def _visible_user(self, user_id: str) -> User | None:
        user = self.users.get(user_id)
        if user is None or user.suspended:
            return None
        return user

    def _expand_users(self, ids: Iterable[str], query: dict[str, str], field_name: str,
                      resource: str = "user") -> tuple[list[dict[str, Any]], list[Any]]:
        fields = self._fields(query, "user.fields")
        users, errors, seen = [], [], set()
        for user_id in ids:
            if user_id in seen:
                continue
            seen.add(user_id)
            user = self._visible_user(user_id)
            if user is None:
                errors.append({
                    "value": user_id, "detail": f"Could not find user with {field_name}: "
                                                f"[{user_id}].",
                    "title": "Not Found Error", "resource_type": resource,
                    "parameter": field_name, "resource_id": user_id,
                    "type": PROBLEMS + "resource-not-found",
                })
            else:
                users.append(user.json(fields))
        return users, errors

    def _page(self, items: list[Any], query: dict[str, str], endpoint: str, *,
              default_max: int, bounds: tuple[int, int], token_param: str,
              dm: bool = False, previous: bool = False
              ) -> tuple[list[Any], str | None, str | None]:
        """Newest first, from the token's position: the page, a token for older items when
        there are more, and (where X gives one) a token for newer items."""
        try:
            count = int(query.get("max_results", default_max))
        except ValueError:
            count = default_max
        low, high = bounds
        if not low <= count <= high:
            raise XError(400, invalid_request(
                "max_results", str(count),
                f"The `max_results` query parameter value [{count}] is not between {low} "
                f"and {high}"))
        token = query.get(token_param) or query.get("pagination_token")
        if token:
            known = self._tokens.get(token)
            if known is None or known[0] != endpoint:
                raise XError(400, invalid_request(
                    token_param, token, f"The `{token_param}` query parameter value "
                                        f"[{token}] is not valid"))
            _, ref, direction = known
            if direction == "older":
                items = [i for i in items if int(i.id) < int(ref)]
            else:
                items = [i for i in items if int(i.id) > int(ref)][-count:]
        page = items[:count]
        older = self._token(endpoint, page[-1].id, "older", dm) if len(items) > count and (
            page) else None
        newer = None
        if page and (previous or dm):
            newer = self._token(endpoint, page[0].id, "newer", dm)
        return page, older, newer

    def _token(self, endpoint: str, ref: str, direction: str, dm: bool) -> str:
        digest = hashlib.sha256(f"{endpoint}:{ref}:{direction}:{time.time()}".encode())
        # X's tokens: base32hex upper case with Z padding for DMs, lower case otherwise.
        token = (digest.hexdigest()[:20].upper() + "ZZZZ" if dm
                 else _base36(int.from_bytes(digest.digest()[:28])))
        self._tokens[token] = (endpoint, ref, direction)
        return token

    def _tweets_answer(self, tweets: list[Tweet], query: dict[str, str], endpoint: str,
                       *, default_max: int, bounds: tuple[int, int],
                       token_param: str, previous: bool = False) -> dict[str, Any]:
        tweets = sorted(tweets, key=lambda t: int(t.id), reverse=True)
        since, until = query.get("since_id"), query.get("until_id")
        if since:
            tweets = [t for t in tweets if int(t.id) > int(since)]
        if until:
            tweets = [t for t in tweets if int(t.id) < int(until)]
        page, next_token, previous_token = self._page(
            tweets, query, endpoint, default_max=default_max, bounds=bounds,
            token_param=token_param, previous=previous)
        fields = self._fields(query, "tweet.fields")
        expansions = self._fields(query, "expansions")
        answer: dict[str, Any] = {}
        if page:
            answer["data"] = [t.json(fields | ({"author_id"} & expansions)) for t in page]
            if "author_id" in expansions:
                users, errors = self._expand_users([t.author_id for t in page], query,
                                                   "author_id")
                if users:
                    answer["includes"] = {"users": users}
                if errors:
                    answer["errors"] = errors
        meta: dict[str, Any] = {"result_count": len(page)}
        if page:
            meta["newest_id"], meta["oldest_id"] = page[0].id, page[-1].id
        if next_token:
            meta["next_token"] = next_token
        if previous_token:
            meta["previous_token"] = previous_token
        answer["meta"] = meta
        return answer

    async def _get_me(self, query: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        return 200, {"data": self.me.json(self._fields(query, "user.fields"))}

    async def _get_mentions(self, query: dict[str, str], body: Any, *,
                            id: str) -> tuple[int, dict[str, Any]]:
        user = self.users.get(id)
        if user is None:
            return 200, {"errors": [{
                "value": id, "detail": f"Could not find user with id: [{id}].",
                "title": "Not Found Error", "resource_type": "user", "parameter": "id",
                "resource_id": id, "type": PROBLEMS + "resource-not-found",
            }]}
        mentions = [t for t in self.tweets.values() if id in t.mentions and not t.deleted
                    and not self.users[t.author_id].protected]
        mentions = sorted(mentions, key=lambda t: int(t.id), reverse=True)[:MENTIONS_SERVED]
        return 200, self._tweets_answer(mentions, query, "mentions", default_max=10,
                                        bounds=(5, 100), token_param="pagination_token",
                                        previous="pagination_token" in query)

    async def _get_search(self, query: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        oldest = datetime.fromtimestamp(self.now(), UTC) - timedelta(days=SEARCH_DAYS)
        since = query.get("since_id")
        if since and snowflake_time(since) < oldest:
            raise XError(400, invalid_request(
                "since_id", since, f"Invalid 'since_id':'{since}'. 'since_id' must be a tweet "
                                   f"id created after {_iso(oldest)}."))
        terms = _search_terms(query["query"])
        hits = [t for t in self.tweets.values() if not t.deleted and t.created_at >= oldest
                and not self.users[t.author_id].protected
                and any(term in t.text.lower() for term in terms)]
        return 200, self._tweets_answer(hits, query, "search", default_max=10,
                                        bounds=(10, 100), token_param="next_token")

    async def _get_tweet(self, query: dict[str, str], body: Any, *,
                         id: str) -> tuple[int, dict[str, Any]]:
        tweet = self.tweets.get(id)
        if tweet is None or tweet.deleted:
            return 200, {"errors": [{
                "value": id, "detail": f"Could not find tweet with id: [{id}].",
                "title": "Not Found Error", "resource_type": "tweet", "parameter": "id",
                "resource_id": id, "type": PROBLEMS + "resource-not-found",
            }]}
        if self.users[tweet.author_id].protected:
            return 200, {"errors": [{
                "value": id, "detail": f"Sorry, you are not authorized to see the Tweet with "
                                       f"id: [{id}].",
                "title": "Authorization Error", "resource_type": "tweet", "parameter": "id",
                "resource_id": id, "type": PROBLEMS + "not-authorized-for-resource",
            }]}
        return 200, {"data": tweet.json(self._fields(query, "tweet.fields"))}

    async def _get_dm_events(self, query: dict[str, str], body: Any, *,
                             participant_id: str | None = None,
                             dm_conversation_id: str | None = None
                             ) -> tuple[int, dict[str, Any]]:
        oldest = datetime.fromtimestamp(self.now(), UTC) - timedelta(days=DM_DAYS)
        kinds = self._fields(query, "event_types") or {"MessageCreate", "ParticipantsJoin",
                                                       "ParticipantsLeave"}
        events = [e for e in self.dms if self.me.id in e.dm_conversation_id.split("-")
                  and e.created_at >= oldest and e.event_type in kinds]
        if participant_id is not None:
            low, high = sorted((participant_id, self.me.id), key=int)
            events = [e for e in events if e.dm_conversation_id == f"{low}-{high}"]
        if dm_conversation_id is not None:
            events = [e for e in events if e.dm_conversation_id == dm_conversation_id]
        events.sort(key=lambda e: int(e.id), reverse=True)
        page, next_token, previous_token = self._page(
            events, query, "dm_events", default_max=100, bounds=(1, 100),
            token_param="pagination_token", dm=True)
        fields = self._fields(query, "dm_event.fields")
        expansions = self._fields(query, "expansions")
        answer: dict[str, Any] = {}
        if page:
            answer["data"] = [e.json(fields | ({"sender_id"} & expansions)) for e in page]
            if "sender_id" in expansions:
                users, errors = self._expand_users([e.sender_id for e in page], query,
                                                   "sender_id")
                if users:
                    answer["includes"] = {"users": users}
                if errors:
                    answer["errors"] = errors
        meta: dict[str, Any] = {"result_count": len(page)}
        if next_token:
            meta["next_token"] = next_token
        if previous_token:
            meta["previous_token"] = previous_token
        answer["meta"] = meta
        return 200, answer

    # --- writing -----------------------------------------------------------------------------

    async def _post_tweet(self, query: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        text = str(body.get("text", ""))
        if len(text) > MAX_TWEET_CHARS:
            raise XError(400, invalid_request("text", text[:20], "Your Tweet text is too long."))
        reply = body.get("reply") or {}
        parent = self.tweets.get(str(reply.get("in_reply_to_tweet_id", ""))) if reply else None
        if reply and (parent is None or parent.deleted):
            raise XError(403, blank_problem(403, "Forbidden", "You attempted to reply to a "
                                            "Tweet that is deleted or not visible to you."))
        if any(t.text == text and t.author_id == self.me.id and not t.deleted
               for t in self.tweets.values()):
            raise XError(403, blank_problem(403, "Forbidden", "You are not allowed to create "
                                            "a Tweet with duplicate content."))
        tweet = self.post(self.me, text, reply_to=parent)
        data = {"id": tweet.id, "text": tweet.text}
        if body.get("community_id"):  # a post to a Community says where it went
            data["community_id"] = str(body["community_id"])
        return 201, {"data": data}

    async def _delete_tweet(self, query: dict[str, str], body: Any, *,
                            id: str) -> tuple[int, dict[str, Any]]:
        tweet = self.tweets.get(id)
        if tweet is None or tweet.author_id != self.me.id:
            raise XError(403, blank_problem(403, "Forbidden", "You are not allowed to delete "
                                            "this Tweet."))
        tweet.deleted = True
        return 200, {"data": {"deleted": True}}

    async def _post_dm(self, query: dict[str, str], body: Any, *,
                       participant_id: str | None = None,
                       dm_conversation_id: str | None = None) -> tuple[int, dict[str, Any]]:
        if participant_id is not None:
            recipient = self.users.get(participant_id)
        else:
            ids = (dm_conversation_id or "").split("-")
            others = [i for i in ids if i != self.me.id]
            recipient = self.users.get(others[0]) if len(ids) == 2 and others else None
            if self.me.id not in ids and dm_conversation_id not in {
                    e.dm_conversation_id for e in self.dms}:
                raise XError(403, blank_problem(403, "Forbidden", "You are not a participant "
                                                "of this conversation."))
        if recipient is not None and (not recipient.accepts_dms or recipient.suspended):
            raise XError(403, blank_problem(403, "Forbidden", "You cannot send messages to "
                                            "this user."))
        if recipient is None and participant_id is not None:
            raise XError(400, invalid_request("participant_id", participant_id,
                                              f"Could not find user with id: [{participant_id}]."))
        if recipient is not None:
            event = self.direct_message(self.me, str(body.get("text", "")), to=recipient)
        else:
            event = DmEvent(self.snowflake(), str(body.get("text", "")), self.me.id,
                            str(dm_conversation_id), datetime.fromtimestamp(self.now(), UTC))
            self.dms.append(event)
        return 201, {"data": {"dm_conversation_id": event.dm_conversation_id,
                              "dm_event_id": event.id}}

    async def _post_dm_conversation(self, query: dict[str, str],
                                    body: Any) -> tuple[int, dict[str, Any]]:
        conversation = self.snowflake()
        event = DmEvent(self.snowflake(), str(body.get("message", {}).get("text", "")),
                        self.me.id, conversation, datetime.fromtimestamp(self.now(), UTC))
        self.dms.append(event)
        return 201, {"data": {"dm_conversation_id": conversation, "dm_event_id": event.id}}


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = []
    while number:
        number, rest = divmod(number, 36)
        out.append(digits[rest])
    return "".join(reversed(out)) or "0"


def _search_terms(query: str) -> list[str]:
    """The OR of terms and "quoted phrases" X search would match (case-insensitive)."""
    terms: list[str] = []
    for part in query.strip("()").split(" OR "):
        part = part.strip().strip('"').lower()
        if part and not part.startswith("-"):
            terms.append(part)
    return terms


def fake_settings_env(fake: FakeX, *, keywords: str | None = None) -> dict[str, str]:
    """CARELOOP_X_* for a careloop process that talks to this fake."""
    creds = fake.credentials
    env = {
        "CARELOOP_X_API_BASE": fake.api_base,
        "CARELOOP_X_CONSUMER_KEY": creds.consumer_key,
        "CARELOOP_X_CONSUMER_SECRET": creds.consumer_secret,
        "CARELOOP_X_ACCESS_TOKEN": creds.access_token,
        "CARELOOP_X_ACCESS_TOKEN_SECRET": creds.access_token_secret,
    }
    if keywords:
        env["CARELOOP_X_KEYWORDS"] = keywords
    return env




@contextlib.asynccontextmanager
async def running_fake() -> AsyncIterator[FakeX]:
    """A started fake; on the way out, the test fails if anything broke the spec."""
    fake = FakeX()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()
    assert fake.violations == [], fake.violations
    assert fake.unimplemented == [], fake.unimplemented
