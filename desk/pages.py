"""What every desk page shares: rendering with the agent, CSRF token and language, the
agent/admin guards and the error page.

Page modules call `render(request, "x.html", {...})`; templates extend base.html and write
every visible string as `{{ t("English", "中文") }}`. Autoescape is on: customer text is data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp_jinja2
import jinja2
from aiohttp import web

from desk import csrf
from desk.auth import AGENT
from desk.context import CTX
from desk.routes import Handler
from desk.session import PUBLIC_PAGES, SESSION, PageError, is_https
from storage.errors import StoreError
from storage.models import Agent

__all__ = [
    "PageError", "found", "page_agent", "redirect", "render", "require_admin_page", "safe_next",
    "setup", "translator",
]

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
LANGUAGES = ("en", "zh")
# The first path segment names the nav section (/tickets/CL-1 is in "tickets").
SECTIONS = ("queue", "tickets", "reports", "admin", "account")


def translator(lang: str) -> Callable[[str, str], str]:
    def t(en: str, zh: str) -> str:
        return zh if lang == "zh" else en

    return t


def page_agent(request: web.Request) -> Agent:
    """The logged-in agent (the session middleware has made sure there is one)."""
    agent = request.get(AGENT)
    if agent is None:
        raise PageError(401, "log in first")
    return agent


def require_admin_page(request: web.Request) -> Agent:
    agent = page_agent(request)
    if agent.role != "admin":
        raise PageError(403, "this page needs the admin role", code="forbidden")
    return agent


def request_lang(request: web.Request) -> str:
    agent = request.get(AGENT)
    if agent is not None and agent.language in LANGUAGES:
        return agent.language
    asked = request.query.get("lang", "")
    return asked if asked in LANGUAGES else "en"


def _nav(request: web.Request) -> str:
    first = request.path.strip("/").split("/", 1)[0]
    return first if first in SECTIONS else ""


async def render(
    request: web.Request, template: str, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    """Renders `desk/templates/<template>` with `agent`, `csrf_token`, `lang`, `t`, `nav` and
    `here` (this page's path and query) added (a key in `context` wins, e.g. `nav`)."""
    secret = request.app[CTX].secret
    session = request.get(SESSION)
    new_pre: str | None = None
    if session is not None:
        token = csrf.token_for(secret, session.nonce)
    else:
        # Before login: a token bound to a random cookie (the login form needs one too).
        # Only the login page sets that cookie: an error page rendered meanwhile (the
        # browser's favicon request, a 404) must not replace it under an open login form.
        nonce = csrf.pre_nonce(request)
        if nonce is None:
            nonce = csrf.new_pre_nonce()
            if request.path in PUBLIC_PAGES:
                new_pre = nonce
        token = csrf.token_for(secret, nonce)
    lang = request_lang(request)
    full = {
        "agent": request.get(AGENT), "csrf_token": token, "lang": lang,
        "t": translator(lang), "nav": _nav(request), "here": request.path_qs,
    } | context
    response = aiohttp_jinja2.render_template(template, request, full, status=status)
    if new_pre is not None:
        csrf.set_pre_cookie(response, new_pre, is_https(request))
    # Pages show one agent's work: never kept by shared caches or the back button after logout.
    response.headers["Cache-Control"] = "no-store"
    return response


def redirect(location: str) -> web.HTTPFound:
    """POST-redirect-GET: `raise redirect("/tickets/CL-1")`."""
    return web.HTTPFound(location)


def found(location: str) -> web.Response:
    """A 302 to return (not raise) when cookies must be set on it."""
    return web.Response(status=302, headers={"Location": location})


def safe_next(target: str | None, default: str = "/queue") -> str:
    """Only a path on this site (never `//evil.example` or a scheme): no open redirect.
    Browsers drop tabs and newlines from URLs and read a backslash as `/`, so `/<tab>/evil`
    would become `//evil`: any control character, space or backslash is refused."""
    if (
        not target or not target.startswith("/") or target.startswith("//")
        or any(c == "\\" or c.isspace() or ord(c) < 32 or ord(c) == 127 for c in target)
        or urlsplit(target).netloc
    ):
        return default
    return target


@web.middleware
async def page_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outside /api, a refused or missing page is an error page in words, not a trace."""
    if request.path.startswith("/api/"):
        return await handler(request)
    try:
        return await handler(request)
    except PageError as exc:
        return await render(
            request, "error.html", {"status": exc.status, "message": exc.message,
                                    "code": exc.code}, status=exc.status,
        )
    except StoreError as exc:
        return await render(
            request, "error.html", {"status": exc.status, "message": str(exc),
                                    "code": exc.code}, status=exc.status,
        )
    except web.HTTPNotFound:
        if request.path.startswith(("/static/", "/chat")):
            raise
        return await render(
            request, "error.html",
            {"status": 404, "message": "there is no such page", "code": "not_found"},
            status=404,
        )


def setup(app: web.Application) -> None:
    """Jinja2 (autoescape on) over desk/templates and the static files under /static/desk/."""
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
    )
    app.router.add_static("/static/desk/", STATIC, append_version=False)
