"""CSRF tokens: an HMAC of the session's nonce with the service secret.

Logged in, the nonce is the session's own (so a token is worthless for any other session);
on the login form, before any session exists, it is a random value in a short-lived cookie
(`careloop_csrf`), so a page elsewhere cannot log a browser into an account of its choosing.
A write carries the token in the form field `csrf_token` or the header `X-CSRF-Token`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from aiohttp import web

FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
PRE_COOKIE = "careloop_csrf"
PRE_COOKIE_MAX_AGE = 2 * 3600
_PURPOSE = b"careloop.desk.csrf.v1\x00"
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


def token_for(secret: str, nonce: str) -> str:
    mac = hmac.new(secret.encode(), _PURPOSE + nonce.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def token_ok(secret: str, nonce: str | None, token: str | None) -> bool:
    if not nonce or not token or len(token) > 200:
        return False
    return hmac.compare_digest(token, token_for(secret, nonce))


async def sent_token(request: web.Request) -> str | None:
    """The token the request carries: the header first, else the form field (the parsed form
    is cached by aiohttp, so the handler can read it again)."""
    header = request.headers.get(HEADER)
    if header:
        return header
    if request.content_type in _FORMS:
        value = (await request.post()).get(FIELD)
        return value if isinstance(value, str) else None
    return None


async def request_token_ok(request: web.Request, secret: str, nonce: str | None) -> bool:
    return token_ok(secret, nonce, await sent_token(request))


def new_pre_nonce() -> str:
    return secrets.token_urlsafe(16)


def pre_nonce(request: web.Request) -> str | None:
    value = request.cookies.get(PRE_COOKIE)
    return value if value and len(value) <= 64 else None


def set_pre_cookie(response: web.StreamResponse, nonce: str, secure: bool) -> None:
    response.set_cookie(
        PRE_COOKIE, nonce, path="/login", httponly=True, samesite="Lax", secure=secure,
        max_age=PRE_COOKIE_MAX_AGE,
    )
