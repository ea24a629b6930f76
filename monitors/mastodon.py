"""The Mastodon adapter, on Mastodon.py: mention notifications and direct messages in, public
replies and direct messages out.

One stream, `mentions`, reads `GET /api/v1/notifications?types[]=mention` with one cursor (the
newest notification id stored): a mention whose status has `direct` visibility becomes a Post of
stream `dms` (a direct message, for the dialogue), every other one a Post of stream `mentions`.
So each notification is fetched and converted once, and the page's mentions, direct messages
and cursor are written in one transaction. From a cursor the read takes the page right after it
(`min_id`), oldest first, page by page; without a cursor it walks back from the newest
(`max_id`) over what the server still serves, up to `backfill` notifications, like X's first
read of the 800 newest mentions. A first read that finds no mention still returns a cursor
(the newest notification of any type, or "0" when there is none), so a later burst is read in
full, forward from it, and never again as a first start.

The notifications list is the one read in bulk, and Mastodon.py 2.x turns every answer into
typed entities, field by field (6-12 ms a notification on our shared machine; no documented
option returns plain JSON). So that list is fetched as plain JSON with the same requests
session, token, user agent and timeout the client uses (`get_json`), and mapped to the same
failures. Everything else (who we are, statuses, accounts, posting) goes through Mastodon.py.

Mastodon.py is synchronous (requests): every call runs in a worker thread with a timeout, one
at a time per client, because the client keeps the rate-limit window of the last answer on
itself and we read it after a 429. `ratelimit_method="throw"` leaves the waiting to the poll
loop (no request before the reset), and `version_check_mode="none"` keeps the constructor from
calling the server.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from typing import Any, Protocol, TypeVar

import requests
from mastodon import Mastodon
from mastodon.errors import (
    MastodonAPIError,
    MastodonError,
    MastodonNetworkError,
    MastodonRatelimitError,
)
from pydantic import SecretStr

from monitors.types import (
    DIRECT,
    MENTIONS,
    Adapter,
    Author,
    CursorRejected,
    MonitorError,
    Page,
    Paused,
    Post,
    RateLimited,
    Unavailable,
)

PLATFORM = "mastodon"
PAGE_SIZE = 80  # Mastodon's largest page of notifications (its default is 40)
BACKFILL = 800
REQUEST_TIMEOUT = 20.0
DEFAULT_MAX_CHARACTERS = 500
# Without a usable reset time a 429 waits this long; Mastodon's windows are 5 minutes, so a
# reset further away than the cap is a broken header, not a real wait.
RATE_LIMIT_FALLBACK = timedelta(seconds=60)
RATE_LIMIT_CAP = timedelta(minutes=15)
VISIBILITY_ORDER = ("direct", "private", "unlisted", "public")
# The cursor of a first read that found no notification at all: everything after it is new.
FROM_THE_START = "0"
_LEADING_MENTIONS = re.compile(r"^(?:\s*@[\w.\-]+(?:@[\w.\-]+)?)+[\s,:]*")

T = TypeVar("T")


class MastodonFailure(MonitorError):
    """A Mastodon call that failed, in words the reader and the sender both map: `status` is
    the HTTP status (None for a network error or an answer that was not JSON), `until` the end
    of a rate-limit window."""

    def __init__(self, reason: str, status: int | None = None,
                 until: datetime | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.until = until


class AccountGone(MastodonFailure):
    """The customer's account no longer exists (deleted, or suspended by its server)."""


# --- calling Mastodon.py ----------------------------------------------------------------

@dataclass
class MastodonApi:
    """One Mastodon.py client and the rules for calling it from asyncio."""

    client: Mastodon
    timeout: float = REQUEST_TIMEOUT
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    max_characters: int | None = None

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async with self.lock:
            try:
                # requests has its own timeout; this one covers a thread that hangs anyway.
                return await asyncio.wait_for(
                    asyncio.to_thread(fn, *args, **kwargs), self.timeout * 2 + 5
                )
            except TimeoutError as exc:
                raise MastodonFailure("Mastodon did not answer in time") from exc
            except MastodonError as exc:
                raise self._failure(exc) from exc

    def _failure(self, exc: MastodonError) -> MastodonFailure:
        now = self.clock()
        if isinstance(exc, MastodonRatelimitError):
            if "calculations failed" in str(exc):  # an unreadable reset header on any answer
                return MastodonFailure("Mastodon sent a malformed rate-limit header")
            return MastodonFailure("rate limited", 429, self._reset(now))
        if isinstance(exc, MastodonNetworkError):
            return MastodonFailure(f"network error: {type(exc).__name__}")
        if isinstance(exc, MastodonAPIError):
            status = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
            if status is None:
                return MastodonFailure("Mastodon sent an answer that is not JSON")
            detail = exc.args[3] if len(exc.args) > 3 and exc.args[3] else exc.args[2]
            return MastodonFailure(f"HTTP {status}: {str(detail)[:200]}", status)
        return MastodonFailure(f"{type(exc).__name__}: {str(exc)[:200]}")

    def _reset(self, now: datetime) -> datetime:
        # Mastodon.py read X-RateLimit-Reset and moved it onto our clock with the Date header,
        # so a server whose clock is off still gives the right wait.
        raw = self.client.ratelimit_reset
        return _bounded_reset(
            None if raw is None else datetime.fromtimestamp(float(raw), UTC), now
        )

    async def get_json(self, path: str, params: Sequence[tuple[str, str]]) -> Any:
        """GET `path` as plain JSON (dicts and lists), not Mastodon.py entities: for the lists
        read in bulk, where the entity conversion would cost far more than the request."""
        async with self.lock:
            try:
                return await asyncio.wait_for(
                    asyncio.to_thread(self._get_json, path, params), self.timeout * 2 + 5
                )
            except TimeoutError as exc:
                raise MastodonFailure("Mastodon did not answer in time") from exc

    def _get_json(self, path: str, params: Sequence[tuple[str, str]]) -> Any:
        # The client's own session, token, user agent and timeout: the same connection pool
        # and the same identity as every Mastodon.py call.
        client = self.client
        try:
            response = client.session.get(
                f"{client.api_base_url}{path}", params=list(params),
                headers={"Authorization": f"Bearer {client.access_token}",
                         "User-Agent": client.user_agent},
                timeout=client.request_timeout,
            )
        except requests.RequestException as exc:
            raise MastodonFailure(f"network error: {type(exc).__name__}") from exc
        status = response.status_code
        if status == 429:
            until = _server_reset(response.headers, self.clock())
            raise MastodonFailure("rate limited", 429, until)
        if status >= 400:
            raise MastodonFailure(f"HTTP {status}: {_error_text(response)[:200]}", status)
        try:
            return response.json()
        except ValueError as exc:
            raise MastodonFailure("Mastodon sent an answer that is not JSON") from exc

    async def status_limit(self) -> int:
        """The instance's characters per status (500 unless it says otherwise)."""
        if self.max_characters is None:
            try:
                instance = await self.call(self.client.instance_v2)
                limit = instance["configuration"]["statuses"]["max_characters"]
                self.max_characters = int(limit) if int(limit) >= 100 else DEFAULT_MAX_CHARACTERS
            except (MastodonFailure, KeyError, TypeError, ValueError):
                return DEFAULT_MAX_CHARACTERS  # asked again next time
        return self.max_characters

    async def close(self) -> None:
        await asyncio.to_thread(self.client.session.close)


def _bounded_reset(until: datetime | None, now: datetime) -> datetime:
    """A reset in the past or missing waits the fallback; one absurdly far is capped."""
    if until is None or until <= now:
        return now + RATE_LIMIT_FALLBACK
    return min(until, now + RATE_LIMIT_CAP)


def _server_reset(headers: Mapping[str, str], now: datetime) -> datetime:
    """X-RateLimit-Reset (ISO 8601, or epoch seconds) moved onto our clock with the answer's
    Date header, as Mastodon.py does: a server whose clock is off still gives the right wait."""
    raw = headers.get("X-RateLimit-Reset") or ""
    try:
        reset = (datetime.fromtimestamp(int(raw), UTC) if raw.isdigit()
                 else datetime.fromisoformat(raw.replace("Z", "+00:00")))
        if reset.tzinfo is None:
            reset = reset.replace(tzinfo=UTC)
    except ValueError:
        return _bounded_reset(None, now)
    try:
        server_now = parsedate_to_datetime(headers.get("Date") or "")
        if server_now.tzinfo is not None:
            reset += now - server_now
    except (TypeError, ValueError):
        pass  # no usable Date: take the server's clock as ours
    return _bounded_reset(reset, now)


def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason or ""
    if isinstance(body, dict) and body.get("error"):
        return str(body.get("error_description") or body["error"])
    return response.reason or ""


def make_client(base_url: str, token: str, *, timeout: float = REQUEST_TIMEOUT) -> Mastodon:
    return Mastodon(
        access_token=token,
        api_base_url=base_url.rstrip("/"),
        ratelimit_method="throw",
        version_check_mode="none",
        request_timeout=timeout,
        user_agent="careloop",
    )


# --- reading ------------------------------------------------------------------------------

class _Text(HTMLParser):
    """Status HTML to plain text: paragraphs and line breaks kept, every tag dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in ("p", "li", "blockquote", "pre") and self.parts:
            self.parts.append("\n\n")
        elif tag == "span" and ("class", "invisible") in attrs:
            # Mastodon hides the scheme and tail of long links in invisible spans; keep them,
            # a person reading the text wants the whole link.
            pass

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def plain_text(content: str | None) -> str:
    if not content:
        return ""
    parser = _Text()
    parser.feed(content)
    parser.close()
    text = "".join(parser.parts).replace("\r", "")
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def without_leading_mentions(text: str) -> str:
    """`@shop yes` → `yes`: in a direct message the addressee is not part of what was said."""
    return _LEADING_MENTIONS.sub("", text, count=1).strip()


def _id_key(value: Any) -> tuple[int, str]:
    # Mastodon ids are numeric strings of growing length; compare them as numbers.
    text = str(value)
    return (len(text), text) if text.isdigit() else (0, text)


def _when(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.now(UTC)


def _followers(account: Mapping[str, Any]) -> int | None:
    value = account.get("followers_count")
    return value if isinstance(value, int) and value >= 0 else None


def author_of(account: Mapping[str, Any]) -> Author:
    return Author(
        id=str(account["id"]),
        username=account.get("acct") or account.get("username"),
        name=account.get("display_name") or None,
        followers=_followers(account),
    )


def post_of(notification: Mapping[str, Any]) -> Post | None:
    """A mention notification as a Post: of stream `dms` when its status is `direct`, else of
    stream `mentions`; None without a status (deleted since)."""
    status = notification.get("status")
    if notification.get("type") != "mention" or not status or not status.get("account"):
        return None
    direct = status.get("visibility") == "direct"
    stream = DIRECT if direct else MENTIONS
    text = plain_text(status.get("content"))
    media = [str(m.get("type") or "unknown") for m in status.get("media_attachments") or ()]
    if direct:
        text = without_leading_mentions(text)
    else:
        spoiler = str(status.get("spoiler_text") or "").strip()
        if spoiler:
            text = f"{spoiler}\n\n{text}".strip()
        if not text and media:  # only pictures: the review queue still needs a line
            text = "[" + ", ".join(media) + "]"
    status_id = str(status["id"])
    return Post(
        platform=PLATFORM,
        stream=stream,
        external_id=status_id,
        text=text,
        author=author_of(status["account"]),
        posted_at=_when(status.get("created_at")),
        url=status.get("url") or status.get("uri"),
        in_reply_to=str(status["in_reply_to_id"]) if status.get("in_reply_to_id") else None,
        conversation=status_id if direct else None,
        raw={
            "notification_id": str(notification.get("id")),
            "visibility": status.get("visibility"),
            "language": status.get("language"),
            "media": media,
        },
    )


class MastodonAdapter:
    """monitors.types.Adapter for one Mastodon account."""

    platform = PLATFORM

    def __init__(
        self, api: MastodonApi, *, page_size: int = PAGE_SIZE, backfill: int = BACKFILL
    ) -> None:
        self.api = api
        self.page_size = page_size
        self.backfill = backfill
        self._me: Author | None = None

    def streams(self) -> Sequence[str]:
        # One read serves both: the `mentions` stream's posts carry stream `dms` for direct
        # messages, which the store and the poll loop's dialogue hook go by.
        return (MENTIONS,)

    async def whoami(self) -> Author:
        if self._me is None:
            try:
                me = await self.api.call(self.api.client.account_verify_credentials)
            except MastodonFailure as exc:
                raise _read_error(exc, cursor=None) from exc
            self._me = author_of(me)
        return self._me

    async def read(self, stream: str, cursor: str | None) -> Page:
        """`mentions`: mentions and direct messages, each Post of its own stream. `dms`: the
        direct messages alone (for a caller that wants only them; the poll loop reads
        `mentions`)."""
        if stream not in (MENTIONS, DIRECT):
            raise ValueError(f"Mastodon has no stream {stream!r}")
        try:
            if cursor is None:
                page = await self._first_read()
            else:
                batch = await self._notifications(min_id=cursor)
                newest = max((str(n["id"]) for n in batch), key=_id_key, default=cursor)
                page = Page(posts=_posts(batch), cursor=newest,
                            more=len(batch) >= self.page_size)
        except MastodonFailure as exc:
            raise _read_error(exc, cursor) from exc
        if stream == DIRECT:
            page = Page(posts=[p for p in page.posts if p.stream == DIRECT],
                        cursor=page.cursor, more=page.more)
        return page

    async def _first_read(self) -> Page:
        seen: list[Mapping[str, Any]] = []
        max_id: str | None = None
        while len(seen) < self.backfill:
            batch = await self._notifications(max_id=max_id)
            seen.extend(batch)
            if len(batch) < self.page_size:
                break
            max_id = min((str(n["id"]) for n in batch), key=_id_key)
        newest = max((str(n["id"]) for n in seen), key=_id_key, default=None)
        if newest is None:
            # Nothing to read yet. Without a cursor every later read would be a first start
            # again (the newest `backfill` only) and a burst bigger than that would lose its
            # oldest part; from this cursor it is read in full, page by page.
            newest = await self._newest_notification()
        return Page(posts=_posts(seen), cursor=newest, more=False)

    async def _newest_notification(self) -> str:
        """The newest notification of any type (mentions come after it), or FROM_THE_START
        when the account has none at all."""
        batch = await self._fetch([("limit", "1")])
        return max((str(n["id"]) for n in batch), key=_id_key, default=FROM_THE_START)

    async def _notifications(self, **bounds: str | None) -> list[Mapping[str, Any]]:
        params = [("types[]", "mention"), ("limit", str(self.page_size))]
        params += [(k, v) for k, v in bounds.items() if v is not None]
        return await self._fetch(params)

    async def _fetch(self, params: list[tuple[str, str]]) -> list[Mapping[str, Any]]:
        batch = await self.api.get_json("/api/v1/notifications", params)
        if not isinstance(batch, list) or any(
            not isinstance(n, Mapping) or "id" not in n for n in batch
        ):
            raise MastodonFailure("Mastodon sent notifications of an unexpected shape")
        return batch

    async def reply(self, in_reply_to: str, text: str, *, key: str | None = None) -> str:
        return await public_reply(self.api, in_reply_to, text, key=key)

    async def send_direct(
        self, recipient: str, text: str, conversation: str | None, *, key: str | None = None
    ) -> str:
        ids = await direct_message(self.api, recipient, text, conversation, key=key)
        return ids[-1]

    async def close(self) -> None:
        await self.api.close()


def _posts(batch: Sequence[Mapping[str, Any]]) -> list[Post]:
    posts = []
    for notification in sorted(batch, key=lambda n: _id_key(n["id"])):
        post = post_of(notification)
        if post is not None:
            posts.append(post)
    return posts


def _read_error(exc: MastodonFailure, cursor: str | None) -> MonitorError:
    if exc.status == 429:
        return RateLimited(exc.until or datetime.now(UTC) + RATE_LIMIT_FALLBACK, str(exc))
    if exc.status in (401, 403):
        return Paused(f"Mastodon refused the token ({exc})")
    if cursor is not None and exc.status in (404, 410, 422):
        return CursorRejected(f"Mastodon no longer accepts cursor {cursor} ({exc})")
    return Unavailable(str(exc))


# --- writing ------------------------------------------------------------------------------

def split_text(text: str, limit: int) -> list[str]:
    """Text cut into statuses of at most `limit` characters, at paragraph, line or word
    boundaries when it can be."""
    text = text.strip()
    parts: list[str] = []
    while len(text) > limit:
        window = text[: limit + 1]
        for sep in ("\n\n", "\n", " "):
            cut = window.rfind(sep)
            if cut >= limit // 3:
                break
        else:
            cut = limit
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        parts.append(text)
    return parts


def idempotency_key(key: str | None, part: int) -> str | None:
    """Mastodon keeps an Idempotency-Key for an hour: a retried send returns the status it
    created instead of posting it twice. Outbox keys can be long; a hash is short."""
    if key is None:
        return None
    return hashlib.sha256(f"{key}#{part}".encode()).hexdigest()


async def account_acct(api: MastodonApi, account_id: str) -> str:
    try:
        account = await api.call(api.client.account, account_id)
    except MastodonFailure as exc:
        if exc.status in (404, 410):
            raise AccountGone(f"Mastodon account {account_id} is gone", exc.status) from exc
        raise
    return str(account.get("acct") or account["username"])


async def direct_message(
    api: MastodonApi, recipient: str, text: str, conversation: str | None,
    *, key: str | None = None,
) -> list[str]:
    """A direct-visibility status (or a thread of them, when long) to account `recipient`,
    in reply to `conversation` when given; returns the new status ids."""
    acct = await account_acct(api, recipient)
    mention = f"@{acct} "
    limit = await api.status_limit()
    ids: list[str] = []
    reply_to = conversation
    for part, chunk in enumerate(split_text(text, max(limit - len(mention), 50))):
        try:
            status = await _post(api, mention + chunk, reply_to, "direct", key, part)
        except MastodonFailure as exc:
            if exc.status != 404 or reply_to is None:
                raise
            # The message we answer was deleted: start a new conversation instead.
            status = await _post(api, mention + chunk, None, "direct", key, part)
        ids.append(str(status["id"]))
        reply_to = ids[-1]
    return ids


async def public_reply(
    api: MastodonApi, in_reply_to: str, text: str, *, key: str | None = None
) -> str:
    """A reply in the thread, addressed to the post's author (Mastodon notifies only the
    accounts a status mentions), never more public than the post it answers."""
    original = await api.call(api.client.status, in_reply_to)
    acct = str(original["account"].get("acct") or original["account"]["username"])
    body = text if re.search(rf"(?<![\w@])@{re.escape(acct)}\b", text) else f"@{acct} {text}"
    visibility = str(original.get("visibility") or "public")
    if visibility not in VISIBILITY_ORDER:
        visibility = "public"
    limit = await api.status_limit()
    reply_to = in_reply_to
    first: str | None = None
    for part, chunk in enumerate(split_text(body, limit)):
        status = await _post(api, chunk, reply_to, visibility, key, part)
        reply_to = str(status["id"])
        first = first or reply_to
    if first is None:
        raise MastodonFailure("empty reply", 422)
    return first


async def _post(
    api: MastodonApi, text: str, in_reply_to: str | None, visibility: str, key: str | None,
    part: int,
) -> Any:
    return await api.call(
        api.client.status_post, text, in_reply_to_id=in_reply_to, visibility=visibility,
        idempotency_key=idempotency_key(key, part),
    )


class MastodonSettings(Protocol):
    @property
    def mastodon_base_url(self) -> str | None: ...
    @property
    def mastodon_token(self) -> SecretStr | None: ...


def make_mastodon_adapter(settings: MastodonSettings) -> Adapter:
    """The adapter for `CARELOOP_MASTODON_BASE_URL` / `CARELOOP_MASTODON_TOKEN`."""
    if not settings.mastodon_base_url or settings.mastodon_token is None:
        raise ValueError("Mastodon needs CARELOOP_MASTODON_BASE_URL and CARELOOP_MASTODON_TOKEN")
    client = make_client(settings.mastodon_base_url, settings.mastodon_token.get_secret_value())
    return MastodonAdapter(MastodonApi(client))
