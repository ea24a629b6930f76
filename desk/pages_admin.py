"""Desk pages for admins: the accounts list; create, change role, deactivate, reset password.

Every route here starts with require_admin_page (an agent gets the 403 page), and every form
carries the CSRF token (the session middleware refuses a write without it).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from desk.context import CTX
from desk.pages import redirect, render, require_admin_page
from storage import accounts
from storage.errors import StoreError
from storage.models import Agent

NOTICES = {
    "created": ("Account created.", "账户已创建。"),
    "role": ("Role changed.", "角色已修改。"),
    "deactivated": (
        "Account deactivated; its sessions were logged out.", "账户已停用，其会话已退出。"
    ),
    "activated": ("Account activated.", "账户已启用。"),
    "password": (
        "Password reset; the account's sessions were logged out.",
        "密码已重置，该账户的会话已退出。",
    ),
}


def _account_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise web.HTTPNotFound()
    return int(raw)


async def _page(
    request: web.Request, *, status: int = 200, error: tuple[str, str] | None = None,
    form: dict[str, str] | None = None, shown_password: tuple[str, str] | None = None,
) -> web.Response:
    async with request.app[CTX].store.read() as session:
        agents = await accounts.list_agents(session)
    notice = NOTICES.get(request.query.get("done", "")) if status == 200 else None
    context: dict[str, Any] = {
        "agents": agents, "error": error, "notice": notice, "form": form or {},
        "shown_password": shown_password, "roles": accounts.ROLES,
        "languages": accounts.LANGUAGES, "nav": "admin",
    }
    return await render(request, "accounts.html", context, status=status)


def _store_error(exc: StoreError) -> tuple[str, str]:
    # The store's messages are English; the Chinese page shows them with a short lead-in.
    return (str(exc), f"无法完成：{exc}")


async def accounts_page(request: web.Request) -> web.Response:
    require_admin_page(request)
    return await _page(request)


async def admin_home(request: web.Request) -> web.Response:
    require_admin_page(request)
    raise redirect("/admin/accounts")


async def create_account(request: web.Request) -> web.Response:
    require_admin_page(request)
    form = await request.post()
    fields = {k: str(form.get(k, "")) for k in ("username", "display_name", "role", "language")}
    ctx = request.app[CTX]
    try:
        async with ctx.store.transaction() as session:
            await accounts.create_agent(
                session, ctx.hasher, username=fields["username"], role=fields["role"],
                password=str(form.get("password", "")), now=ctx.rules.clock(),
                display_name=fields["display_name"], language=fields["language"] or "en",
            )
    except StoreError as exc:
        return await _page(request, status=exc.status, error=_store_error(exc), form=fields)
    raise redirect("/admin/accounts?done=created")


async def _change(request: web.Request, change: Any, done: str) -> web.Response:
    """Runs one account change; a refusal (last admin, unknown account) shows in words."""
    me = require_admin_page(request)
    account_id = _account_id(request)
    form = await request.post()
    ctx = request.app[CTX]
    try:
        async with ctx.store.transaction() as session:
            await change(session, me, account_id, form)
    except StoreError as exc:
        return await _page(request, status=exc.status, error=_store_error(exc))
    # API tokens are cached for a few seconds: a deactivated account's go at once here.
    ctx.tokens.clear()
    raise redirect(f"/admin/accounts?done={done}")


async def change_role(request: web.Request) -> web.Response:
    async def change(session: Any, me: Agent, account_id: int, form: Any) -> None:
        await accounts.set_role(session, account_id, str(form.get("role", "")))

    return await _change(request, change, "role")


async def change_active(request: web.Request) -> web.Response:
    me = require_admin_page(request)
    form = await request.post()
    active = form.get("active") == "1"
    if not active and _account_id(request) == me.id:
        return await _page(
            request, status=409,
            error=("You cannot deactivate your own account.", "不能停用自己的账户。"),
        )

    async def change(session: Any, me: Agent, account_id: int, form: Any) -> None:
        await accounts.set_active(session, account_id, active)

    return await _change(request, change, "activated" if active else "deactivated")


async def reset_password(request: web.Request) -> web.Response:
    require_admin_page(request)
    account_id = _account_id(request)
    form = await request.post()
    password = str(form.get("password", "")).strip()
    generated = not password
    if generated:
        password = accounts.new_password()
    ctx = request.app[CTX]
    try:
        async with ctx.store.transaction() as session:
            agent = await accounts.set_password(session, ctx.hasher, account_id, password)
            username = agent.username
    except StoreError as exc:
        return await _page(request, status=exc.status, error=_store_error(exc))
    if generated:
        # Shown once, on this response only (not in a redirect URL, history or any log).
        return await _page(request, shown_password=(username, password))
    raise redirect("/admin/accounts?done=password")


def routes(app: web.Application) -> None:
    app.router.add_get("/admin", admin_home)
    app.router.add_get("/admin/accounts", accounts_page)
    app.router.add_post("/admin/accounts", create_account)
    app.router.add_post("/admin/accounts/{id}/role", change_role)
    app.router.add_post("/admin/accounts/{id}/active", change_active)
    app.router.add_post("/admin/accounts/{id}/password", reset_password)
