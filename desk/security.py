"""Security headers on every response of the desk's port (pages, API, static, errors).

Set on `on_response_prepare`, so redirects, 404s and error envelopes get them too. A handler
that sets its own (the web chat needs `connect-src` for its websocket) keeps its values.
"""

from __future__ import annotations

from aiohttp import web

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)


def install(app: web.Application) -> None:
    app.on_response_prepare.append(add_security_headers)
