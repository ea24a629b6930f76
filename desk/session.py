"""Desk sessions: a signed cookie, and the middleware that turns it into the logged-in agent.

The cookie is `<base64url JSON>.<base64url HMAC-SHA256>` carrying the agent id, the agent's
session epoch when it was issued, a random session nonce (CSRF tokens are bound to it), the
issue time and the last time it was seen. Nothing secret is in it; the signature stops anyone
from forging or editing one. The agent row is read on every request, so a deactivated account
or a bumped epoch (password change, reset, deactivation) is refused at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from aiohttp import web
from sqlalchemy import select

from desk import csrf
from desk.auth import AGENT, PUBLIC_API
from desk.context import CTX
from desk.errors import ApiError
from desk.routes import Handler
from storage import accounts
from storage.models import Agent

COOKIE_NAME = "careloop_session"
# A session ends after 12 hours without a request, and after 7 days whatever happens.
IDLE_TIMEOUT = timedelta(hours=12)
MAX_AGE = timedelta(days=7)
# The last-seen time is refreshed at most this often, so most responses set no cookie.
REFRESH_EVERY = timedelta(minutes=5)
# The service secret also signs the web chat's visitor cookie and CSRF tokens: a purpose
# prefix keeps a signature made for one of them from ever validating as another.
_PURPOSE = b"careloop.desk.session.v1\x00"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Route resources that are desk pages (login required); make_app fills it in.
PAGE_RESOURCES: web.AppKey[set[web.AbstractResource]] = web.AppKey("careloop_page_resources")
# Paths among the desk pages that anyone may open (the login form).
PUBLIC_PAGES = frozenset({"/login"})


class PageError(Exception):
    """A desk page that cannot be shown (403, 404…): desk.pages renders it as error.html."""

    def __init__(self, status: int, message: str, code: str = "error") -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


CSRF_MESSAGE = "the form or request had no valid CSRF token; reload the page and try again"


def csrf_failure(request: web.Request) -> Exception:
    if request.path.startswith("/api/"):
        return ApiError(403, "csrf_failed", CSRF_MESSAGE)
    return PageError(403, CSRF_MESSAGE, code="csrf_failed")


@dataclass(frozen=True)
class SessionData:
    agent_id: int
    epoch: int
    nonce: str
    issued_at: int  # unix seconds
    seen_at: int

    @classmethod
    def new(cls, agent: Agent, now: datetime) -> SessionData:
        ts = int(now.timestamp())
        return cls(agent.id, agent.session_epoch, secrets.token_urlsafe(16), ts, ts)


SESSION = web.RequestKey("careloop_session", SessionData)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload: str) -> str:
    return _b64(hmac.new(secret.encode(), _PURPOSE + payload.encode(), hashlib.sha256).digest())


def encode(secret: str, data: SessionData) -> str:
    payload = _b64(
        json.dumps(
            {"a": data.agent_id, "e": data.epoch, "n": data.nonce, "i": data.issued_at,
             "t": data.seen_at},
            separators=(",", ":"),
        ).encode()
    )
    return f"{payload}.{_mac(secret, payload)}"


def decode(secret: str, value: str | None, now: datetime) -> SessionData | None:
    """The session in a cookie, or None when it is missing, forged, tampered with or expired."""
    if not value or value.count(".") != 1 or len(value) > 1024:
        return None
    payload, signature = value.split(".")
    if not hmac.compare_digest(signature, _mac(secret, payload)):
        return None
    try:
        raw = json.loads(_unb64(payload))
        data = SessionData(
            int(raw["a"]), int(raw["e"]), str(raw["n"]), int(raw["i"]), int(raw["t"])
        )
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    ts = now.timestamp()
    if ts - data.seen_at > IDLE_TIMEOUT.total_seconds():
        return None
    if ts - data.issued_at > MAX_AGE.total_seconds():
        return None
    return data


def is_https(request: web.Request) -> bool:
    # Behind a TLS-terminating proxy the app sees http; X-Forwarded-Proto is trusted only to
    # add the Secure flag, which can never weaken anything.
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def set_session_cookie(
    response: web.StreamResponse, request: web.Request, data: SessionData
) -> None:
    response.set_cookie(
        COOKIE_NAME, encode(request.app[CTX].secret, data), path="/", httponly=True,
        samesite="Lax", secure=is_https(request), max_age=int(MAX_AGE.total_seconds()),
    )


def clear_session_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE_NAME, path="/")


async def _load_agent(request: web.Request, data: SessionData) -> Agent | None:
    ctx = request.app[CTX]
    async with ctx.store.read() as session:
        # One round trip: the agent, and whether this session was logged out.
        found = (await session.execute(
            select(Agent, accounts.session_ended(data.nonce)).where(Agent.id == data.agent_id)
        )).first()
    if found is None:
        return None
    agent, ended = found
    if ended or not agent.active or agent.session_epoch != data.epoch:
        return None
    return agent


def session_expires_at(data: SessionData) -> datetime:
    """When the session's cookie stops working whatever happens (MAX_AGE after login)."""
    return datetime.fromtimestamp(data.issued_at, UTC) + MAX_AGE


def _is_page(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    return resource is not None and resource in request.app[PAGE_RESOURCES]


def _login_redirect(request: web.Request) -> web.HTTPFound:
    target = request.path_qs if request.method == "GET" else "/"
    return web.HTTPFound(f"/login?next={quote(target, safe='')}")


@web.middleware
async def sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Pages: the session is required (else 302 to /login); /api: a session cookie is used when
    there is no Authorization header. Cookie-authenticated writes need the CSRF token."""
    is_api = request.path.startswith("/api/") and request.path not in PUBLIC_API
    if not is_api and not _is_page(request):
        return await handler(request)
    if is_api and "Authorization" in request.headers:
        return await handler(request)  # Bearer token: desk.auth checks it; no CSRF needed
    ctx = request.app[CTX]
    now = ctx.rules.clock()
    cookie = request.cookies.get(COOKIE_NAME)
    data = decode(ctx.secret, cookie, now)
    agent = await _load_agent(request, data) if data is not None else None
    if agent is None or data is None:
        if is_api:
            if cookie is None:
                return await handler(request)  # desk.auth answers 401 in the envelope
            raise ApiError(401, "unauthenticated", "the session expired; log in again")
        if request.path in PUBLIC_PAGES:
            # The login form: its token is bound to the pre-session cookie instead.
            if request.method in UNSAFE_METHODS and not await csrf.request_token_ok(
                request, ctx.secret, csrf.pre_nonce(request)
            ):
                raise csrf_failure(request)
            return await handler(request)
        redirect = _login_redirect(request)
        if cookie is not None:
            clear_session_cookie(redirect)
        raise redirect
    request[AGENT] = agent
    request[SESSION] = data
    if request.method in UNSAFE_METHODS and not await csrf.request_token_ok(
        request, ctx.secret, data.nonce
    ):
        raise csrf_failure(request)
    response = await handler(request)
    # Sliding idle expiry: refresh the last-seen time now and then (not on logout, which
    # clears the cookie, nor on a response that already set a new session).
    if (
        now.timestamp() - data.seen_at > REFRESH_EVERY.total_seconds()
        and COOKIE_NAME not in response.cookies
        and not response.prepared  # a streamed download has sent its headers already
    ):
        set_session_cookie(response, request, replace(data, seen_at=int(now.timestamp())))
    return response
