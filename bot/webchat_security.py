"""The web chat's defences: the signed visitor cookie, the Origin check and the page headers.

Kept apart from the socket handling so each rule can be read (and tested) on its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Collection
from urllib.parse import urlsplit

from aiohttp import web

COOKIE_NAME = "careloop_visitor"
# A returning visitor is the same customer for a year; a new visit renews the cookie.
COOKIE_MAX_AGE = 365 * 24 * 3600
# The service secret also signs desk sessions and CSRF tokens: a purpose prefix keeps a
# signature made for one of them from ever validating as another.
_PURPOSE = b"careloop.webchat.visitor.v1\x00"
_VISITOR = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
# What may appear in a Host header we echo into the CSP (anything else is not a host).
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


class VisitorCookie:
    """`<visitor id>.<HMAC-SHA256>`: the visitor id is random, so knowing one tells nothing
    about another, and the signature stops anyone from choosing someone else's."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("the web chat needs the service secret key")
        self._key = secret.encode()

    @staticmethod
    def new_visitor() -> str:
        return secrets.token_urlsafe(18)  # 144 bits, 24 URL-safe characters

    def _sign(self, visitor: str) -> str:
        mac = hmac.new(self._key, _PURPOSE + visitor.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def sign(self, visitor: str) -> str:
        return f"{visitor}.{self._sign(visitor)}"

    def verify(self, value: str | None) -> str | None:
        """The visitor id, or None for a missing, malformed or tampered cookie."""
        if not value or value.count(".") != 1:
            return None
        visitor, signature = value.split(".")
        if not _VISITOR.match(visitor):
            return None
        if not hmac.compare_digest(signature, self._sign(visitor)):
            return None
        return visitor


def is_https(request: web.Request) -> bool:
    # Behind a TLS-terminating proxy the app sees http; X-Forwarded-Proto is trusted only to
    # add the Secure flag, which can never weaken anything.
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def set_visitor_cookie(response: web.StreamResponse, request: web.Request, value: str) -> None:
    response.set_cookie(
        COOKIE_NAME, value, max_age=COOKIE_MAX_AGE, path="/chat", httponly=True,
        samesite="Lax", secure=is_https(request),
    )


def origin_allowed(request: web.Request, extra: Collection[str] = ()) -> bool:
    """Cross-site websocket hijacking defence. Browsers always send Origin on a websocket
    handshake and a page on another site cannot forge it, so: the same host, or an origin the
    operator listed. A handshake without Origin (not a browser) is refused too, so nothing
    depends on the visitor cookie alone."""
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return False
    if origin.rstrip("/") in extra:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return parts.netloc.lower() == (request.host or "").lower()


def page_headers(request: web.Request) -> dict[str, str]:
    """Headers for everything under /chat: no inline script or style, nothing from elsewhere,
    never framed (clickjacking), no MIME sniffing, no referrer leaking the chat URL."""
    host = request.host if _HOST.match(request.host or "") else ""
    # 'self' covers ws(s) of the same host in CSP 3 browsers; older ones need it spelled out.
    sockets = f" ws://{host} wss://{host}" if host else ""
    csp = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        f"connect-src 'self'{sockets}; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    }
