"""Desk accounts as a person (or an attacker) meets them: logging in and out, the throttle,
sessions that expire or are forged, CSRF on forms and cookie JSON writes, security headers,
the language switch and escaped output. Runs on SQLite and PostgreSQL (the `store` fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from desk.client_address import parse_networks
from desk.session import COOKIE_NAME, SessionData, encode
from storage import accounts
from storage.clock import ManualClock
from storage.db import Store
from storage.errors import Conflict
from storage.models import Agent
from tests.desk_helpers import (
    PASSWORD,
    SECRET,
    add_agent,
    csrf_from,
    desk_ctx,
    login,
    open_desk,
)
from tests.integration.helpers import chat_customer, chat_ticket, rules

LOGIN_MESSAGE_REFUSED = "refused for a while"


@pytest.fixture
async def desk(store: Store) -> AsyncIterator[TestClient]:
    await add_agent(store, "root", role="admin", display_name="Root Admin")
    await add_agent(store, "alice", display_name="Alice Wong")
    async with open_desk(store) as client:
        yield client


def clock(client: TestClient) -> ManualClock:
    return cast(ManualClock, desk_ctx(client).rules.clock)


def session_cookie(client: TestClient) -> str | None:
    for cookie in client.session.cookie_jar:
        if cookie.key == COOKIE_NAME:
            return cookie.value
    return None


def use_cookie(client: TestClient, value: str) -> dict[str, str]:
    """Forget the jar's cookies; the request carries exactly this session cookie."""
    client.session.cookie_jar.clear()
    return {"Cookie": f"{COOKIE_NAME}={value}"}


@asynccontextmanager
async def alice_on_two_devices(
    store: Store,
) -> AsyncIterator[tuple[TestClient, TestClient, str]]:
    """Alice logged in on a laptop and a phone; yields both and the laptop's CSRF token."""
    await add_agent(store, "alice")
    async with open_desk(store) as laptop, open_desk(store) as phone:
        await login(phone, "alice")
        yield laptop, phone, await login(laptop, "alice")


async def try_login(
    client: TestClient, username: str, password: str, next_page: str = ""
) -> tuple[int, str, str]:
    form = await client.get("/login")
    token = csrf_from(await form.text())
    resp = await client.post(
        "/login", allow_redirects=False,
        data={"username": username, "password": password, "csrf_token": token,
              "next": next_page},
    )
    return resp.status, resp.headers.get("Location", ""), await resp.text()


# --- logging in and out ----------------------------------------------------------------

async def test_pages_send_a_stranger_to_the_login_form_and_back(desk: TestClient) -> None:
    resp = await desk.get("/account?tab=1", allow_redirects=False)
    assert resp.status == 302
    sent_to = URL(resp.headers["Location"])
    assert (sent_to.path, sent_to.query["next"]) == ("/login", "/account?tab=1")
    home = await desk.get("/", allow_redirects=False)
    assert home.status == 302 and home.headers["Location"].startswith("/login")

    status, location, _ = await try_login(desk, "alice", PASSWORD, "/account?tab=1")
    assert (status, location) == (302, "/account?tab=1")
    page = await desk.get("/account")
    assert page.status == 200
    html = await page.text()
    assert "Alice Wong" in html
    for link in ('href="/queue">Review queue', 'href="/tickets">Tickets',
                 'href="/reports">Reports'):
        assert link in html
    assert "/admin/accounts" not in html  # not an admin
    assert (await desk.get("/", allow_redirects=False)).headers["Location"] == "/queue"


async def test_the_session_cookie_is_http_only_same_site_and_secure_behind_https(
    desk: TestClient,
) -> None:
    form = await desk.get("/login")
    token = csrf_from(await form.text())
    resp = await desk.post(
        "/login", allow_redirects=False,
        data={"username": "alice", "password": PASSWORD, "csrf_token": token},
    )
    header = next(h for h in resp.headers.getall("Set-Cookie") if h.startswith(COOKIE_NAME))
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header
    assert "Secure" not in header  # plain http on loopback: a Secure cookie would never return
    desk.session.cookie_jar.clear()
    token = csrf_from(await (await desk.get("/login")).text())
    proxied = await desk.post(
        "/login", allow_redirects=False, headers={"X-Forwarded-Proto": "https"},
        data={"username": "alice", "password": PASSWORD, "csrf_token": token},
    )
    header = next(h for h in proxied.headers.getall("Set-Cookie") if h.startswith(COOKIE_NAME))
    assert "Secure" in header


async def test_a_wrong_password_or_unknown_name_is_refused_in_words(desk: TestClient) -> None:
    for username, password in (("alice", "wrong-password"), ("nobody", PASSWORD)):
        status, _, html = await try_login(desk, username, password)
        assert status == 401
        assert "Wrong username or password" in html
        assert session_cookie(desk) is None
    assert (await desk.get("/account", allow_redirects=False)).status == 302


async def test_the_next_parameter_never_leaves_the_site(desk: TestClient) -> None:
    # A browser drops a tab or newline from a URL: "/<tab>/evil.example" is "//evil.example".
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example",
                   "/\t/evil.example", "/\n/evil.example", "/ /evil.example"):
        desk.session.cookie_jar.clear()
        status, location, _ = await try_login(desk, "alice", PASSWORD, target)
        assert (status, location) == (302, "/queue"), target
    # Already logged in, /login?next= redirects at once: the same check applies.
    resp = await desk.get("/login?next=/%09/evil.example", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (302, "/queue")
    status, location, _ = await try_login(desk, "alice", PASSWORD, "/tickets?status=new")
    assert location == "/tickets?status=new"


async def test_logout_ends_the_session(desk: TestClient) -> None:
    token = await login(desk, "alice")
    resp = await desk.post("/logout", data={"csrf_token": token}, allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (302, "/login")
    assert session_cookie(desk) is None
    assert (await desk.get("/account", allow_redirects=False)).status == 302


async def test_logout_ends_that_session_for_a_copied_cookie_too_but_not_other_devices(
    store: Store,
) -> None:
    async with alice_on_two_devices(store) as (laptop, phone, token):
        copied = session_cookie(laptop)  # what a proxy log or a stolen cookie holds
        assert copied is not None
        resp = await laptop.post("/logout", data={"csrf_token": token}, allow_redirects=False)
        assert resp.status == 302
        # The cookie is still signed and within its 7 days: only the server can refuse it.
        again = await laptop.get("/account", allow_redirects=False,
                                 headers=use_cookie(laptop, copied))
        assert again.status == 302 and again.headers["Location"].startswith("/login")
        api = await laptop.get("/api/tickets", headers=use_cookie(laptop, copied))
        assert api.status == 401
        assert (await phone.get("/account", allow_redirects=False)).status == 200
        await login(laptop, "alice")  # logging in again starts a new session that works
        assert (await laptop.get("/account", allow_redirects=False)).status == 200


async def test_guesses_at_the_current_password_are_throttled_like_logins(
    desk: TestClient,
) -> None:
    token = await login(desk, "alice")

    async def change(current: str) -> int:
        resp = await desk.post(
            "/account/password", allow_redirects=False,
            data={"csrf_token": token, "current": current, "new": "a-new-pass-2",
                  "again": "a-new-pass-2"},
        )
        return resp.status

    for n in range(5):
        assert await change(f"guess-{n}") == 400
    assert await change(PASSWORD) == 429  # even the right one, for a while
    clock(desk).advance(minutes=16)
    assert await change(PASSWORD) == 302


async def test_a_deactivated_account_cannot_log_in(desk: TestClient, store: Store) -> None:
    async with store.transaction() as session:
        alice = await accounts.get_agent(session, "alice")
        assert alice is not None
        await accounts.set_active(session, alice.id, False)
    status, _, html = await try_login(desk, "alice", PASSWORD)
    assert status == 401 and "Wrong username or password" in html


# --- the throttle -----------------------------------------------------------------------

async def test_five_failures_for_one_account_refuse_logins_for_a_while(desk: TestClient) -> None:
    for _ in range(5):
        assert (await try_login(desk, "alice", "not-her-password"))[0] == 401
    status, _, html = await try_login(desk, "alice", PASSWORD)  # even the right password
    assert status == 429
    assert LOGIN_MESSAGE_REFUSED in html
    assert session_cookie(desk) is None
    clock(desk).advance(minutes=16)
    status, location, _ = await try_login(desk, "alice", PASSWORD)
    assert (status, location) == (302, "/queue")


async def test_five_failures_from_one_address_refuse_every_account(desk: TestClient) -> None:
    for n in range(5):
        assert (await try_login(desk, f"guess{n}", "password1"))[0] == 401
    status, _, html = await try_login(desk, "root", PASSWORD)
    assert status == 429 and LOGIN_MESSAGE_REFUSED in html


async def login_via_proxy(
    client: TestClient, username: str, password: str, forwarded_for: str
) -> int:
    form = await client.get("/login")
    resp = await client.post(
        "/login", allow_redirects=False, headers={"X-Forwarded-For": forwarded_for},
        data={"username": username, "password": password,
              "csrf_token": csrf_from(await form.text())},
    )
    return resp.status


async def test_x_forwarded_for_is_ignored_unless_the_proxy_is_trusted(desk: TestClient) -> None:
    # Anyone can write the header: believed by default, five guesses would each come "from"
    # a new address and never lock anything.
    for n in range(5):
        assert await login_via_proxy(desk, f"guess{n}", "password1", f"198.51.100.{n}") == 401
    assert await login_via_proxy(desk, "root", PASSWORD, "198.51.100.99") == 429


async def test_behind_a_trusted_proxy_each_client_address_is_throttled_on_its_own(
    desk: TestClient,
) -> None:
    desk_ctx(desk).trusted_proxies = parse_networks("127.0.0.0/8, 10.0.0.0/8")
    for n in range(5):
        assert await login_via_proxy(desk, f"guess{n}", "password1", "203.0.113.5") == 401
    assert await login_via_proxy(desk, "root", PASSWORD, "203.0.113.5") == 429
    # A hop the client wrote itself, left of what the proxies appended, changes nothing.
    assert await login_via_proxy(desk, "root", PASSWORD, "192.0.2.1, 203.0.113.5") == 429
    # Two trusted proxies in a row: the first untrusted hop from the right is the client.
    assert await login_via_proxy(desk, "root", PASSWORD, "203.0.113.5, 10.1.2.3") == 429
    # Another customer of the same proxy is not locked out with them.
    desk.session.cookie_jar.clear()
    assert await login_via_proxy(desk, "alice", PASSWORD, "203.0.113.6") == 302


async def test_failures_older_than_fifteen_minutes_do_not_count(desk: TestClient) -> None:
    for _ in range(4):
        await try_login(desk, "alice", "not-her-password")
    clock(desk).advance(minutes=16)
    for _ in range(4):
        assert (await try_login(desk, "alice", "not-her-password"))[0] == 401
    assert (await try_login(desk, "alice", PASSWORD))[0] == 302


async def test_the_throttle_is_shared_by_every_desk_process(store: Store) -> None:
    """Two desk processes on one database: failures at one count at the other."""
    await add_agent(store, "alice")
    async with open_desk(store) as first, open_desk(store) as second:
        for n in range(5):
            client = first if n % 2 else second
            assert (await try_login(client, "alice", "nope-nope"))[0] == 401
        assert (await try_login(first, "alice", PASSWORD))[0] == 429
        assert (await try_login(second, "alice", PASSWORD))[0] == 429


# --- sessions that should not work -------------------------------------------------------

async def test_an_idle_session_expires(desk: TestClient) -> None:
    await login(desk, "alice")
    clock(desk).advance(hours=11)
    assert (await desk.get("/account", allow_redirects=False)).status == 200  # refreshed
    clock(desk).advance(hours=11)
    assert (await desk.get("/account", allow_redirects=False)).status == 200
    clock(desk).advance(hours=12, minutes=1)
    resp = await desk.get("/account", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"].startswith("/login")


async def test_forged_and_tampered_cookies_are_refused(desk: TestClient, store: Store) -> None:
    async with store.read() as session:
        root = await accounts.get_agent(session, "root")
    assert root is not None
    now = clock(desk)()
    forged = encode("some-other-secret", SessionData.new(root, now))
    await login(desk, "alice")
    genuine = session_cookie(desk)
    assert genuine is not None
    payload, signature = genuine.split(".")
    tampered = encode(SECRET, SessionData.new(root, now)).split(".")[0] + "." + signature
    for value in (forged, tampered, payload, genuine + "x", "garbage", ""):
        resp = await desk.get("/account", allow_redirects=False, headers=use_cookie(desk, value))
        assert resp.status == 302, value
    # The genuine one still works (the test is not refusing everything).
    ok = await desk.get("/account", allow_redirects=False, headers=use_cookie(desk, genuine))
    assert ok.status == 200


async def test_a_cookie_for_a_bumped_epoch_is_refused_at_once(
    desk: TestClient, store: Store
) -> None:
    await login(desk, "alice")
    cookie = session_cookie(desk)
    assert cookie is not None
    async with store.transaction() as session:
        alice = await accounts.get_agent(session, "alice")
        assert alice is not None
        await accounts.bump_session_epoch(session, alice.id)
    resp = await desk.get("/account", allow_redirects=False, headers=use_cookie(desk, cookie))
    assert resp.status == 302
    api = await desk.get("/api/tickets", headers=use_cookie(desk, cookie))
    assert api.status == 401
    assert (await api.json())["error"]["code"] == "unauthenticated"


async def test_deactivation_logs_the_agent_out_at_once(desk: TestClient, store: Store) -> None:
    await login(desk, "alice")
    async with store.transaction() as session:
        alice = await accounts.get_agent(session, "alice")
        assert alice is not None
        await accounts.set_active(session, alice.id, False)
    assert (await desk.get("/account", allow_redirects=False)).status == 302


async def test_changing_the_password_ends_other_sessions_but_not_this_one(
    store: Store,
) -> None:
    async with alice_on_two_devices(store) as (laptop, phone, token):
        resp = await laptop.post(
            "/account/password", allow_redirects=False,
            data={"csrf_token": token, "current": PASSWORD, "new": "a-new-pass-2",
                  "again": "a-new-pass-2"},
        )
        assert resp.status == 302
        page = await laptop.get("/account?done=password")
        assert page.status == 200 and "Password changed" in await page.text()
        assert (await phone.get("/account", allow_redirects=False)).status == 302
        assert (await try_login(phone, "alice", PASSWORD))[0] == 401
        assert (await try_login(phone, "alice", "a-new-pass-2"))[0] == 302


async def test_a_reset_by_create_or_update_ends_sessions_and_keeps_an_admin(
    desk: TestClient, store: Store
) -> None:
    hasher = desk_ctx(desk).hasher
    await login(desk, "alice")
    now = clock(desk)()

    async def upsert(username: str, role: str, password: str | None) -> None:
        async with store.transaction() as session:
            await accounts.upsert_agent(session, hasher, username=username, role=role,
                                        password=password, now=now)

    # The same password again (the admin from the settings at each start): nothing ends.
    await upsert("alice", "agent", PASSWORD)
    assert (await desk.get("/account", allow_redirects=False)).status == 200
    # A new one (`careloop agents add`, POST /api/agents): every session of hers ends.
    await upsert("alice", "agent", "a-reset-password")
    assert (await desk.get("/account", allow_redirects=False)).status == 302
    assert (await try_login(desk, "alice", "a-reset-password"))[0] == 302
    # The last active admin cannot be made an agent by it either.
    with pytest.raises(Conflict, match="last active admin"):
        await upsert("root", "agent", None)


async def test_a_wrong_current_password_changes_nothing(desk: TestClient) -> None:
    token = await login(desk, "alice")
    resp = await desk.post(
        "/account/password",
        data={"csrf_token": token, "current": "wrong-one", "new": "another-pass",
              "again": "another-pass"},
    )
    assert resp.status == 400 and "current password is wrong" in await resp.text()
    assert (await desk.get("/account", allow_redirects=False)).status == 200


# --- CSRF -------------------------------------------------------------------------------

async def test_a_form_without_a_valid_csrf_token_gets_the_403_page(desk: TestClient) -> None:
    token = await login(desk, "alice")
    for data in ({}, {"csrf_token": "forged"}, {"csrf_token": token[:-2] + "xx"}):
        resp = await desk.post("/logout", data=data, allow_redirects=False)
        assert resp.status == 403
        html = await resp.text()
        assert 'data-code="csrf_failed"' in html and "CSRF" in html
    assert (await desk.get("/account", allow_redirects=False)).status == 200  # still logged in


async def test_another_sessions_token_does_not_work(store: Store) -> None:
    await add_agent(store, "alice")
    await add_agent(store, "bob")
    async with open_desk(store) as a, open_desk(store) as b:
        await login(a, "alice")
        bobs = await login(b, "bob")
        resp = await a.post("/logout", data={"csrf_token": bobs}, allow_redirects=False)
        assert resp.status == 403


async def test_the_login_form_needs_its_csrf_token(desk: TestClient) -> None:
    await desk.get("/login")
    resp = await desk.post(
        "/login", data={"username": "alice", "password": PASSWORD}, allow_redirects=False
    )
    assert resp.status == 403 and 'data-code="csrf_failed"' in await resp.text()
    assert session_cookie(desk) is None


async def test_an_error_page_meanwhile_does_not_spoil_an_open_login_form(
    desk: TestClient,
) -> None:
    """Browsers fetch /favicon.ico (a 404 page) while the login form is open: that response
    must not replace the cookie the form's token is bound to."""
    token = csrf_from(await (await desk.get("/login")).text())
    assert (await desk.get("/favicon.ico")).status == 404
    resp = await desk.post(
        "/login", allow_redirects=False,
        data={"username": "alice", "password": PASSWORD, "csrf_token": token},
    )
    assert resp.status == 302


async def test_cookie_json_writes_need_the_csrf_header(desk: TestClient, store: Store) -> None:
    r = rules()
    number = f"CL-{await chat_ticket(store, r, await chat_customer(store, r))}"
    token = await login(desk, "alice")
    url = f"/api/tickets/{number}/status"
    body = {"status": "acknowledged"}
    for headers in ({}, {"X-CSRF-Token": "nope"}):
        resp = await desk.post(url, json=body, headers=headers)
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "csrf_failed"
    listed = await desk.get("/api/tickets")  # reads need no token
    assert listed.status == 200 and (await listed.json())["items"][0]["status"] == "new"
    ok = await desk.post(url, json=body, headers={"X-CSRF-Token": token})
    assert ok.status == 200 and (await ok.json())["status"] == "acknowledged"


async def test_bearer_token_calls_need_no_csrf_and_ignore_the_cookie(
    desk: TestClient, store: Store
) -> None:
    r = rules()
    number = f"CL-{await chat_ticket(store, r, await chat_customer(store, r))}"
    async with store.transaction() as session:
        token = await accounts.issue_token(session, "root", r.clock())
    await login(desk, "alice")  # a session cookie is present too
    resp = await desk.post(
        f"/api/tickets/{number}/status", json={"status": "in_progress"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status == 200
    events = (await resp.json())["events"]
    assert events[-1]["actor"] == "agent:root"  # the token's agent, not the cookie's
    bad = await desk.get("/api/tickets", headers={"Authorization": "Bearer clt_wrong"})
    assert bad.status == 401


async def test_the_api_without_cookie_or_token_is_401(desk: TestClient) -> None:
    resp = await desk.get("/api/tickets")
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "unauthenticated"


# --- roles, headers, language, escaping ---------------------------------------------------

async def test_an_agent_gets_403_on_admin_pages_and_an_admin_gets_them(
    desk: TestClient,
) -> None:
    await login(desk, "alice")
    for path in ("/admin/accounts", "/admin"):
        resp = await desk.get(path, allow_redirects=False)
        assert resp.status == 403
        assert "admin role" in await resp.text()
    desk.session.cookie_jar.clear()
    await login(desk, "root")
    page = await desk.get("/admin/accounts")
    assert page.status == 200
    assert 'href="/admin/accounts"' in await page.text()


@pytest.mark.parametrize("path", ["/login", "/account", "/api/tickets", "/api/openapi.json",
                                  "/static/desk/desk.css", "/no-such-page", "/healthz"])
async def test_every_response_carries_the_security_headers(desk: TestClient, path: str) -> None:
    await login(desk, "alice")
    resp = await desk.get(path, allow_redirects=False)
    assert resp.status < 500
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "same-origin"


async def test_pages_have_no_inline_script_or_style(desk: TestClient) -> None:
    await login(desk, "root")
    for path in ("/account", "/admin/accounts"):
        html = await (await desk.get(path)).text()
        assert "<script>" not in html and " style=" not in html and "<style" not in html
        assert 'href="/static/desk/desk.css"' in html
        assert "http://" not in html and "https://" not in html  # no third-party assets


async def test_the_language_switch_is_saved_on_the_account(desk: TestClient) -> None:
    token = await login(desk, "alice")
    resp = await desk.post(
        "/account/language", data={"csrf_token": token, "language": "zh", "next": "/account"},
        allow_redirects=False,
    )
    assert (resp.status, resp.headers["Location"]) == (302, "/account")
    html = await (await desk.get("/account")).text()
    for word in ("审核队列", "工单", "报表", "修改密码", 'lang="zh-Hans"'):
        assert word in html
    assert "Review queue" not in html
    # Saved on the account: a new login elsewhere is in Chinese too.
    desk.session.cookie_jar.clear()
    await login(desk, "alice")
    assert "审核队列" in await (await desk.get("/account")).text()


async def test_an_unknown_language_is_refused(desk: TestClient) -> None:
    token = await login(desk, "alice")
    resp = await desk.post("/account/language", data={"csrf_token": token, "language": "xx"})
    assert resp.status == 422


async def test_a_display_name_with_markup_is_shown_escaped(store: Store) -> None:
    await add_agent(store, "mallory", display_name='<script>alert("x")</script><b>M</b>')
    async with open_desk(store) as client:
        await login(client, "mallory")
        html = await (await client.get("/account")).text()
        assert "<script>alert" not in html and "<b>M</b>" not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;b&gt;M&lt;/b&gt;" in html


async def test_a_login_name_with_markup_is_echoed_escaped(desk: TestClient) -> None:
    status, _, html = await try_login(desk, '"><script>alert(1)</script>', "whatever1")
    assert status == 401
    assert "<script>alert(1)" not in html
    assert "&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_the_session_refers_to_the_agent_row(desk: TestClient, store: Store) -> None:
    """A cookie for an account id that does not exist (deleted, or a guess) is refused."""
    ghost = Agent(id=999_999, username="ghost", role="admin", session_epoch=0)
    value = encode(SECRET, SessionData.new(ghost, clock(desk)()))
    resp = await desk.get("/account", allow_redirects=False, headers=use_cookie(desk, value))
    assert resp.status == 302
