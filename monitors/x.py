"""The X (Twitter) adapter: mentions, direct messages and keyword search read with tweepy's
AsyncClient (API v2), replies and direct messages sent with it.

Rate limits are ours, not tweepy's (`wait_on_rate_limit` stays off): a 429 records the
endpoint's reset time and no request goes to that endpoint before it, even when the poll loop
or the outbox asks again early. Responses are read raw (tweepy's `return_type` is the aiohttp
response) so the rate-limit headers and malformed bodies are ours to see.

Cursors are strings the poll loop stores. At rest a cursor is the newest id read (X's
`since_id`). While a read is paginating, the cursor also carries where the pagination is, so
each page is stored with its own cursor and a crash resumes at the page it was on, neither
skipping nor repeating a page (see `Cursor`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from tweepy.asynchronous import AsyncClient
from tweepy.errors import HTTPException, TooManyRequests

from monitors.types import (
    DIRECT,
    MENTIONS,
    SEARCH,
    Author,
    CursorRejected,
    Page,
    Paused,
    Post,
    RateLimited,
    Unavailable,
)
from monitors.x_transport import make_session
from storage.clock import Clock, utc_now

log = logging.getLogger("careloop.monitors.x")

PLATFORM = "x"
PAGE_SIZE = 100  # the most X serves per request on every endpoint we read
FIRST_START_POSTS = 800  # CONTRACT §5: a first start reads the 800 newest
DEFAULT_RATE_WAIT = timedelta(minutes=15)  # X's window, when a 429 has no reset header
LONGEST_RATE_WAIT = timedelta(hours=24)  # the longest window X has (daily app caps)
SHORTEST_RATE_WAIT = timedelta(seconds=1)
TWEET_FIELDS = [
    "author_id", "created_at", "conversation_id", "in_reply_to_user_id", "referenced_tweets",
]
USER_FIELDS = ["name", "public_metrics", "username"]
DM_FIELDS = ["created_at", "dm_conversation_id", "event_type", "id", "sender_id", "text"]
TWITTER_EPOCH_MS = 1288834974657  # snowflake ids carry their creation time from here


class Refused(Paused):
    """X answered 4xx: wrong or revoked credentials (401), no plan or credits (402), not
    allowed (403), not found (404), a request X will not take (400). `status` lets the
    outbox sender tell a customer who doesn't accept DMs from a revoked token."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a stream is. `since`: the newest id stored before this read began (None on a
    first start). Mid-pagination also `token` (X's next page), `newest` (the newest id of
    this read's first page: the next read's `since`) and `read` (posts read so far in it)."""

    since: str | None = None
    token: str | None = None
    newest: str | None = None
    read: int = 0

    PREFIX = "page"

    @classmethod
    def parse(cls, value: str | None) -> Cursor:
        if not value:
            return cls()
        if value.isdigit():
            return cls(since=value)
        parts = value.split(":", 4)
        if len(parts) != 5 or parts[0] != cls.PREFIX or not parts[3].isdigit():
            raise CursorRejected(f"not an X cursor: {value[:40]!r}")
        _, since, newest, read, token = parts
        return cls(since=since or None, token=token or None, newest=newest or None,
                   read=int(read))

    def encode(self) -> str | None:
        if self.token is None:
            return self.since
        return f"{self.PREFIX}:{self.since or ''}:{self.newest or ''}:{self.read}:{self.token}"


def _newer(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return a if int(a) >= int(b) else b


def _snowflake_time(post_id: str) -> datetime | None:
    try:
        ms = (int(post_id) >> 22) + TWITTER_EPOCH_MS
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _time(value: Any, post_id: str, clock: Clock) -> datetime:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            pass
    return _snowflake_time(post_id) or clock()


def _author(author_id: str, users: Mapping[str, dict[str, Any]]) -> Author:
    user = users.get(author_id) or {}
    metrics = user.get("public_metrics")
    followers = metrics.get("followers_count") if isinstance(metrics, dict) else None
    return Author(
        id=author_id,
        username=user.get("username") if isinstance(user.get("username"), str) else None,
        name=user.get("name") if isinstance(user.get("name"), str) else None,
        followers=followers if isinstance(followers, int) else None,
    )


def _users(body: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    includes = body.get("includes")
    users = includes.get("users") if isinstance(includes, dict) else None
    if not isinstance(users, list):
        return {}
    return {str(u["id"]): u for u in users if isinstance(u, dict) and "id" in u}


def _items(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The data array, minus anything without an id (X sends partial objects for withheld
    or deleted posts only in `errors`, but we don't trust every proxy in between)."""
    data = body.get("data")
    if not isinstance(data, list):
        return []
    return [d for d in data if isinstance(d, dict) and isinstance(d.get("id"), str)]


def tweet_post(stream: str, tweet: dict[str, Any], users: Mapping[str, dict[str, Any]],
               clock: Clock = utc_now) -> Post:
    tweet_id = tweet["id"]
    author = _author(str(tweet.get("author_id") or ""), users)
    replied_to = next(
        (str(r.get("id")) for r in tweet.get("referenced_tweets") or []
         if isinstance(r, dict) and r.get("type") == "replied_to"),
        None,
    )
    # x.com/i/web/status/ID opens any post without knowing the author's handle.
    handle = author.username or "i/web"
    return Post(
        platform=PLATFORM,
        stream=stream,
        external_id=tweet_id,
        text=str(tweet.get("text") or ""),  # media-only posts can come without text
        author=author,
        posted_at=_time(tweet.get("created_at"), tweet_id, clock),
        url=f"https://x.com/{handle}/status/{tweet_id}",
        in_reply_to=replied_to,
        conversation=str(tweet["conversation_id"]) if tweet.get("conversation_id") else None,
        raw=tweet,
    )


def dm_post(event: dict[str, Any], users: Mapping[str, dict[str, Any]],
            clock: Clock = utc_now) -> Post:
    event_id = event["id"]
    return Post(
        platform=PLATFORM,
        stream=DIRECT,
        external_id=event_id,
        text=str(event.get("text") or ""),
        author=_author(str(event.get("sender_id") or ""), users),
        posted_at=_time(event.get("created_at"), event_id, clock),
        conversation=str(event["dm_conversation_id"]) if event.get("dm_conversation_id")
        else None,
        raw=event,
    )


def search_query(keywords: str | None) -> str | None:
    """`CARELOOP_X_KEYWORDS` ("acme, acme support") as an X search query."""
    terms = [t.strip() for t in (keywords or "").split(",") if t.strip()]
    if not terms:
        return None
    quoted = [f'"{t}"' if " " in t else t for t in terms]
    return quoted[0] if len(quoted) == 1 else "(" + " OR ".join(quoted) + ")"


@dataclass(frozen=True, slots=True)
class Credentials:
    bearer_token: str | None = None
    consumer_key: str | None = None
    consumer_secret: str | None = None
    access_token: str | None = None
    access_token_secret: str | None = None

    @property
    def user_context(self) -> bool:
        return all((self.consumer_key, self.consumer_secret, self.access_token,
                    self.access_token_secret))


class XAdapter:
    """monitors.types.Adapter for X. One instance per account; holds the tweepy client, the
    aiohttp session and the per-endpoint rate-limit resets (instance state, never global)."""

    platform = PLATFORM

    def __init__(
        self,
        credentials: Credentials,
        *,
        api_base: str = "https://api.twitter.com",
        keywords: str | None = None,
        clock: Clock = utc_now,
        timeout_seconds: float = 30.0,
    ) -> None:
        self._credentials = credentials
        self._api_base = api_base
        self._query = search_query(keywords)
        self._clock = clock
        self._timeout = timeout_seconds
        self._client = AsyncClient(
            bearer_token=credentials.bearer_token,
            consumer_key=credentials.consumer_key,
            consumer_secret=credentials.consumer_secret,
            access_token=credentials.access_token,
            access_token_secret=credentials.access_token_secret,
            return_type=aiohttp.ClientResponse,
            wait_on_rate_limit=False,
        )
        self._me: Author | None = None
        self._limited_until: dict[str, datetime] = {}

    # --- the Adapter interface -----------------------------------------------------------

    def streams(self) -> Sequence[str]:
        streams = [MENTIONS, DIRECT] if self._credentials.user_context else []
        if self._query and (self._credentials.user_context or self._credentials.bearer_token):
            streams.append(SEARCH)
        return streams

    async def whoami(self) -> Author:
        if self._me is None:
            body, _ = await self._request("me", lambda: self._client.get_me(
                user_fields=USER_FIELDS, user_auth=True))
            data = body.get("data")
            if not isinstance(data, dict) or not isinstance(data.get("id"), str):
                raise Unavailable("X answered /2/users/me without a user")
            self._me = _author(data["id"], {data["id"]: data})
        return self._me

    async def read(self, stream: str, cursor: str | None) -> Page:
        at = Cursor.parse(cursor)
        if stream == MENTIONS:
            return await self._read_mentions(at)
        if stream == DIRECT:
            return await self._read_direct(at)
        if stream == SEARCH:
            return await self._read_search(at)
        raise ValueError(f"X has no stream {stream!r}")

    async def reply(self, in_reply_to: str, text: str) -> str:
        body, _ = await self._request("tweet", lambda: self._client.create_tweet(
            text=text, in_reply_to_tweet_id=in_reply_to, user_auth=True))
        return self._created_id(body, "id")

    async def send_direct(self, recipient: str, text: str, conversation: str | None) -> str:
        if recipient:
            call = lambda: self._client.create_direct_message(  # noqa: E731
                participant_id=recipient, text=text, user_auth=True)
        elif conversation:
            call = lambda: self._client.create_direct_message(  # noqa: E731
                dm_conversation_id=conversation, text=text, user_auth=True)
        else:
            raise Refused(400, "a direct message needs a recipient or a conversation")
        body, _ = await self._request("dm_send", call)
        return self._created_id(body, "dm_event_id")

    async def close(self) -> None:
        session = self._client.session
        self._client.session = None
        if session is not None:
            await session.close()

    # --- streams ---------------------------------------------------------------------------

    async def _read_mentions(self, at: Cursor) -> Page:
        me = await self.whoami()
        body, headers = await self._request("mentions", lambda: self._client.get_users_mentions(
            me.id, since_id=at.since, pagination_token=at.token, max_results=PAGE_SIZE,
            expansions=["author_id"], tweet_fields=TWEET_FIELDS, user_fields=USER_FIELDS,
            user_auth=True), cursor=at)
        return self._tweet_page(MENTIONS, body, headers, at)

    async def _read_search(self, at: Cursor) -> Page:
        if self._query is None:
            return Page(posts=(), cursor=at.encode())
        query = self._query
        body, headers = await self._request("search", lambda: self._client.search_recent_tweets(
            query, since_id=at.since, next_token=at.token, max_results=PAGE_SIZE,
            expansions=["author_id"], tweet_fields=TWEET_FIELDS, user_fields=USER_FIELDS,
            user_auth=not self._credentials.bearer_token), cursor=at)
        return self._tweet_page(SEARCH, body, headers, at)

    def _tweet_page(
        self, stream: str, body: dict[str, Any], headers: Mapping[str, str], at: Cursor
    ) -> Page:
        tweets = _items(body)
        users = _users(body)
        self._log_partial(stream, body)
        posts = [tweet_post(stream, t, users, self._clock) for t in reversed(tweets)]
        meta = _meta(body)
        page_newest = str(meta["newest_id"]) if meta.get("newest_id") else None
        for t in tweets:
            page_newest = _newer(page_newest, t["id"])
        token = meta.get("next_token") if isinstance(meta.get("next_token"), str) else None
        return self._page(posts, at, page_newest, token, len(tweets), headers)

    async def _read_direct(self, at: Cursor) -> Page:
        """X's DM events have no since_id: read newest first and stop at the stored id."""
        me = await self.whoami()
        body, headers = await self._request("dms", lambda: self._client.get_direct_message_events(
            pagination_token=at.token, max_results=PAGE_SIZE, event_types=["MessageCreate"],
            dm_event_fields=DM_FIELDS, expansions=["sender_id"], user_fields=USER_FIELDS,
            user_auth=True), cursor=at)
        events = _items(body)
        users = _users(body)
        page_newest: str | None = None
        fresh: list[dict[str, Any]] = []
        reached_known = False
        for event in events:
            page_newest = _newer(page_newest, event["id"])
            if at.since is not None and int(event["id"]) <= int(at.since):
                reached_known = True
                continue
            if event.get("event_type", "MessageCreate") != "MessageCreate":
                continue
            if str(event.get("sender_id")) == me.id:  # what we sent ourselves
                continue
            fresh.append(event)
        posts = [dm_post(e, users, self._clock) for e in reversed(fresh)]
        meta = _meta(body)
        token = meta.get("next_token") if isinstance(meta.get("next_token"), str) else None
        if reached_known:
            token = None
        return self._page(posts, at, page_newest, token, len(events), headers)

    def _page(
        self,
        posts: list[Post],
        at: Cursor,
        page_newest: str | None,
        token: str | None,
        billed: int,
        headers: Mapping[str, str],
    ) -> Page:
        newest = at.newest if at.token else page_newest
        read = at.read + billed
        # A first start stops at the 800 newest; a later read follows X to the stored id.
        if token and (at.since is not None or read < FIRST_START_POSTS) and billed:
            cursor = Cursor(since=at.since, token=token, newest=newest or at.since, read=read)
            return Page(posts=posts, cursor=cursor.encode(), more=True, reads=billed,
                        extra=_rate_extra(headers))
        done = replace(Cursor(), since=_newer(at.since, newest))
        return Page(posts=posts, cursor=done.encode(), more=False, reads=billed,
                    extra=_rate_extra(headers))

    # --- one request, its errors and its rate limit --------------------------------------

    async def _request(
        self,
        endpoint: str,
        call: Callable[[], Awaitable[Any]],
        *,
        cursor: Cursor | None = None,
    ) -> tuple[dict[str, Any], Mapping[str, str]]:
        now = self._clock()
        until = self._limited_until.get(endpoint)
        if until is not None and now < until:
            raise RateLimited(until, f"X {endpoint} rate limited until {until.isoformat()}")
        if self._client.session is None:
            self._client.session = make_session(self._api_base, timeout_seconds=self._timeout)
        try:
            response = await call()
        except TooManyRequests as exc:
            until = self._reset_at(exc.response.headers)
            self._limited_until[endpoint] = until
            raise RateLimited(until, f"X {endpoint} rate limited (429)") from exc
        except HTTPException as exc:
            raise self._refusal(endpoint, _status(exc), _detail(exc), cursor) from exc
        except aiohttp.ContentTypeError as exc:  # an error page that isn't JSON
            if exc.status == 429:
                until = self._reset_at(exc.headers or {})
                self._limited_until[endpoint] = until
                raise RateLimited(until, f"X {endpoint} rate limited (429)") from exc
            raise self._refusal(endpoint, exc.status, "the error body was not JSON",
                                cursor) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unavailable(f"X {endpoint}: {type(exc).__name__}") from exc
        except ValueError as exc:  # an error body claiming JSON that isn't
            raise Unavailable(f"X {endpoint}: malformed JSON in an error") from exc
        headers = response.headers
        self._note_remaining(endpoint, headers)
        try:
            # tweepy read the body before releasing the connection; json() decodes it.
            body = await response.json(content_type=None)
        except (ValueError, aiohttp.ClientError) as exc:
            raise Unavailable(f"X {endpoint}: malformed JSON") from exc
        if not isinstance(body, dict):
            raise Unavailable(f"X {endpoint}: the answer was not a JSON object")
        return body, headers

    def _refusal(
        self, endpoint: str, status: int, detail: str, cursor: Cursor | None
    ) -> Exception:
        if status >= 500:
            return Unavailable(f"X {endpoint}: {status} {detail}")
        if status == 400 and cursor is not None and _about_cursor(detail):
            return CursorRejected(f"X no longer accepts the {endpoint} cursor: {detail}")
        what = {
            401: "X rejected the credentials (401): the access token was revoked or is wrong",
            402: "X wants payment (402): the plan or the credits do not cover this endpoint",
            403: "X refused (403)",
            404: "X does not know it (404)",
        }.get(status, f"X refused the request ({status})")
        return Refused(status, f"{what}: {detail}" if detail else what)

    def _reset_at(self, headers: Mapping[str, str]) -> datetime:
        """When X's window resets, on our clock. The reset header is X's clock: measure the
        wait against X's Date header, so a skewed clock on either side changes nothing."""
        now = self._clock()
        try:
            reset = float(headers["x-rate-limit-reset"])
        except (KeyError, TypeError, ValueError):
            return now + DEFAULT_RATE_WAIT
        server_now = now.timestamp()
        date = headers.get("date")
        if date:
            try:
                server_now = parsedate_to_datetime(date).timestamp()
            except (TypeError, ValueError, IndexError):
                pass
        wait = timedelta(seconds=reset - server_now)
        return now + min(max(wait, SHORTEST_RATE_WAIT), LONGEST_RATE_WAIT)

    def _note_remaining(self, endpoint: str, headers: Mapping[str, str]) -> None:
        """The window is used up: the next call would be a 429, so don't make it."""
        if headers.get("x-rate-limit-remaining") == "0":
            self._limited_until[endpoint] = self._reset_at(headers)

    @staticmethod
    def _created_id(body: dict[str, Any], key: str) -> str:
        data = body.get("data")
        if not isinstance(data, dict) or not data.get(key):
            raise Unavailable(f"X did not say the {key} of what it created")
        return str(data[key])

    @staticmethod
    def _log_partial(stream: str, body: Mapping[str, Any]) -> None:
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            # Deleted, protected or withheld posts: X lists them apart from the data.
            log.info("X %s: %d item(s) not readable (deleted, protected or withheld)",
                     stream, len(errors))


def _status(exc: HTTPException) -> int:
    response = exc.response
    return int(getattr(response, "status", None) or getattr(response, "status_code", 0) or 0)


def _detail(exc: HTTPException) -> str:
    return "; ".join(str(m) for m in exc.api_messages)[:300]


def _about_cursor(detail: str) -> bool:
    lowered = detail.lower()
    return any(word in lowered for word in ("since_id", "pagination_token", "next_token",
                                            "pagination token"))


def _meta(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("meta")
    return meta if isinstance(meta, dict) else {}


def _rate_extra(headers: Mapping[str, str]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for header, key in (("x-rate-limit-remaining", "rate_limit_remaining"),
                        ("x-rate-limit-reset", "rate_limit_reset")):
        value = headers.get(header)
        if value is not None and value.isdigit():
            extra[key] = int(value)
    return extra


def make_x_adapter(settings: Any, *, clock: Clock = utc_now) -> XAdapter:
    """The X adapter from settings (config/settings.py: CARELOOP_X_*)."""

    def secret(name: str) -> str | None:
        value = getattr(settings, name, None)
        return value.get_secret_value() if value is not None else None

    return XAdapter(
        Credentials(
            bearer_token=secret("x_bearer_token"),
            consumer_key=secret("x_consumer_key"),
            consumer_secret=secret("x_consumer_secret"),
            access_token=secret("x_access_token"),
            access_token_secret=secret("x_access_token_secret"),
        ),
        api_base=settings.x_api_base,
        keywords=settings.x_keywords,
        clock=clock,
    )
