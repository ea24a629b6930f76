"""Desk pages: log in, log out, the language switch and the agent's own password."""

from __future__ import annotations

from aiohttp import web

from desk import csrf
from desk.client_address import client_address
from desk.context import CTX
from desk.pages import found, page_agent, redirect, render, safe_next
from desk.session import (
    SESSION,
    SessionData,
    clear_session_cookie,
    session_expires_at,
    set_session_cookie,
)
from storage import accounts
from storage.errors import Invalid

THROTTLED_EN = (
    "Too many failed logins for this account or from this address: logins are refused for a "
    "while (up to 15 minutes). Try again later."
)
THROTTLED_ZH = "该账户或该地址登录失败次数过多：暂时拒绝登录（最长 15 分钟），请稍后再试。"


def _address(request: web.Request) -> str:
    # The peer address; X-Forwarded-For only from the proxies the operator trusts: anyone can
    # write it, and a throttle keyed on it would be one header away from useless.
    return client_address(request, request.app[CTX].trusted_proxies)


async def home(request: web.Request) -> web.Response:
    raise redirect("/queue")


async def login_form(request: web.Request) -> web.Response:
    target = safe_next(request.query.get("next"))
    if request.get(SESSION) is not None:
        raise redirect(target)
    return await render(request, "login.html", {"next": target, "error": None, "username": ""})


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    username = str(form.get("username", "")).strip()
    password = str(form.get("password", ""))
    target = safe_next(str(form.get("next", "")) or None)
    ctx = request.app[CTX]
    now = ctx.rules.clock()
    address = _address(request)

    async def refuse(en: str, zh: str, status: int) -> web.Response:
        return await render(
            request, "login.html",
            {"next": target, "error": (en, zh), "username": username}, status=status,
        )

    if not username or not password:
        return await refuse("Enter your username and password.", "请输入用户名和密码。", 400)
    async with ctx.store.transaction() as session:
        if await accounts.login_throttled(session, username, address, now):
            throttled = True
            agent = None
        else:
            throttled = False
            agent = await accounts.check_login(session, ctx.hasher, username, password)
            if agent is None:
                await accounts.record_failed_login(session, username, address, now)
            else:
                await accounts.forget_failed_logins(session, agent.username)
    if throttled:
        return await refuse(THROTTLED_EN, THROTTLED_ZH, 429)
    if agent is None:
        return await refuse(
            "Wrong username or password.", "用户名或密码错误。", 401
        )
    response = found(target)
    set_session_cookie(response, request, SessionData.new(agent, now))
    response.del_cookie(csrf.PRE_COOKIE, path="/login")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    # Clearing the cookie is not enough: a copy of it (another tab's proxy log, a stolen
    # cookie) would work for up to 7 days. The session's nonce is refused from now on.
    data = request[SESSION]
    ctx = request.app[CTX]
    async with ctx.store.transaction() as session:
        await accounts.end_session(
            session, data.agent_id, data.nonce, session_expires_at(data), ctx.rules.clock()
        )
    response = found("/login")
    clear_session_cookie(response)
    return response


async def language(request: web.Request) -> web.StreamResponse:
    agent = page_agent(request)
    form = await request.post()
    ctx = request.app[CTX]
    async with ctx.store.transaction() as session:
        await accounts.set_language(session, agent.id, str(form.get("language", "")))
    raise redirect(safe_next(str(form.get("next", "")) or None))


async def account_page(request: web.Request) -> web.Response:
    page_agent(request)
    return await render(
        request, "account.html",
        {"error": None, "done": request.query.get("done", "")},
    )


async def change_password(request: web.Request) -> web.StreamResponse:
    agent = page_agent(request)
    form = await request.post()
    current = str(form.get("current", ""))
    new, again = str(form.get("new", "")), str(form.get("again", ""))
    ctx = request.app[CTX]

    async def refuse(en: str, zh: str, status: int = 400) -> web.Response:
        return await render(
            request, "account.html", {"error": (en, zh), "done": ""}, status=status
        )

    if new != again:
        return await refuse("The new passwords differ.", "两次输入的新密码不一致。")
    now, address = ctx.rules.clock(), _address(request)
    async with ctx.store.transaction() as session:
        # The current password is a login: guesses at it (a desk left unlocked) are counted
        # and throttled with the login form's. A refusal still commits the count.
        if await accounts.login_throttled(session, agent.username, address, now):
            return await refuse(THROTTLED_EN, THROTTLED_ZH, 429)
        if await accounts.check_login(session, ctx.hasher, agent.username, current) is None:
            await accounts.record_failed_login(session, agent.username, address, now)
            return await refuse("The current password is wrong.", "当前密码错误。")
        try:
            changed = await accounts.set_password(session, ctx.hasher, agent.id, new)
        except Invalid:
            return await refuse(
                f"The new password needs at least {accounts.MIN_PASSWORD} characters.",
                f"新密码至少需要 {accounts.MIN_PASSWORD} 个字符。",
            )
    # Other sessions ended with the epoch bump; this one goes on under the new epoch.
    response = found("/account?done=password")
    set_session_cookie(response, request, SessionData.new(changed, ctx.rules.clock()))
    return response


async def logout_everywhere(request: web.Request) -> web.StreamResponse:
    agent = page_agent(request)
    ctx = request.app[CTX]
    async with ctx.store.transaction() as session:
        await accounts.bump_session_epoch(session, agent.id)
    response = found("/login")
    clear_session_cookie(response)
    return response


def routes(app: web.Application) -> None:
    app.router.add_get("/", home)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_post("/account/language", language)
    app.router.add_get("/account", account_page)
    app.router.add_post("/account/password", change_password)
    app.router.add_post("/account/logout-everywhere", logout_everywhere)
