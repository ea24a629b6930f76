"""How tweepy's requests reach `CARELOOP_X_API_BASE`.

tweepy's AsyncClient builds every URL on the hard-coded root https://api.twitter.com. It
accepts an aiohttp session of ours (its documented `session` attribute), so we hand it one
whose client middleware moves each request to the configured root — a self-hosted proxy, or
the fake X server in the tests — keeping path and query byte for byte. The OAuth 1.0a
signature tweepy computed over the original URL stays valid: the receiver verifies it against
the public URL (https://api.twitter.com/...), which is what a proxy in front of X forwards.
"""

from __future__ import annotations

import aiohttp
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, hdrs
from yarl import URL

TWEEPY_ROOT = URL("https://api.twitter.com")
DEFAULT_TIMEOUT_SECONDS = 30.0


def _is_default(api_base: URL) -> bool:
    return (
        api_base.scheme == TWEEPY_ROOT.scheme
        and api_base.host == TWEEPY_ROOT.host
        and api_base.port == TWEEPY_ROOT.port
        and api_base.path in ("", "/")
    )


def rebase(url: URL, api_base: URL) -> URL:
    """`url` (on tweepy's root) moved onto `api_base`, path prefix included."""
    prefix = api_base.raw_path.rstrip("/")
    origin = str(api_base.origin())
    return URL(f"{origin}{prefix}{url.raw_path_qs}", encoded=True)


def api_base_middleware(
    api_base: str,
) -> aiohttp.ClientMiddlewareType:
    base = URL(api_base)

    async def to_api_base(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        if request.url.host == TWEEPY_ROOT.host:
            request.url = rebase(request.url, base)
            # The Host header was built from tweepy's URL; the receiver expects its own.
            request.headers[hdrs.HOST] = request.url.host_port_subcomponent or ""
        return await handler(request)

    return to_api_base


def make_session(
    api_base: str, *, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
) -> aiohttp.ClientSession:
    """The session tweepy uses for every X request. Call inside the running event loop."""
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    if _is_default(URL(api_base)):
        return aiohttp.ClientSession(timeout=timeout)
    return aiohttp.ClientSession(timeout=timeout, middlewares=(api_base_middleware(api_base),))
