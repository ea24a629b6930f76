"""The accounts page as an admin uses it: create, change role, deactivate, reset password;
and what an agent (or a forged form) cannot do there. SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestClient

from storage import accounts
from storage.db import Store
from tests.desk_helpers import PASSWORD, add_agent, csrf_from, login, open_desk


@dataclass
class Desk:
    admin: TestClient
    store: Store
    token: str


@pytest.fixture
async def desk(store: Store) -> AsyncIterator[Desk]:
    await add_agent(store, "root", role="admin")
    await add_agent(store, "alice")
    async with open_desk(store) as client:
        token = await login(client, "root")
        yield Desk(client, store, token)


async def account_id(store: Store, username: str) -> int:
    async with store.read() as session:
        agent = await accounts.get_agent(session, username)
    assert agent is not None
    return agent.id


async def can_log_in(store: Store, username: str, password: str) -> bool:
    async with open_desk(store) as client:
        form = await client.get("/login")
        resp = await client.post(
            "/login", allow_redirects=False,
            data={"username": username, "password": password,
                  "csrf_token": csrf_from(await form.text())},
        )
        return resp.status == 302


async def test_the_accounts_page_lists_every_account(desk: Desk) -> None:
    page = await desk.admin.get("/admin/accounts")
    html = await page.text()
    assert page.status == 200
    assert 'data-username="root"' in html and 'data-username="alice"' in html
    assert html.count('name="csrf_token"') >= 4  # every form carries the token


async def test_an_admin_creates_an_account_that_can_log_in(desk: Desk) -> None:
    resp = await desk.admin.post(
        "/admin/accounts", allow_redirects=False,
        data={"csrf_token": desk.token, "username": "bo", "display_name": "Bo Chen",
              "password": "bo-password-1", "role": "agent", "language": "zh"},
    )
    assert (resp.status, resp.headers["Location"]) == (302, "/admin/accounts?done=created")
    page = await (await desk.admin.get("/admin/accounts?done=created")).text()
    assert "Account created." in page and "Bo Chen" in page
    async with open_desk(desk.store) as bo:
        await login(bo, "bo", "bo-password-1")
        html = await (await bo.get("/account")).text()
        assert "审核队列" in html  # the language chosen at creation
        assert (await bo.get("/admin/accounts")).status == 403  # role agent


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({"username": "alice", "password": "long-enough-1"}, 409, "exists already"),
        ({"username": "carl", "password": "short"}, 422, "at least 8 characters"),
        ({"username": "has space", "password": "long-enough-1"}, 422, "no spaces"),
        ({"username": "dee", "password": "long-enough-1", "role": "owner"}, 422, "role must be"),
    ],
)
async def test_a_bad_new_account_is_refused_in_words_and_the_form_kept(
    desk: Desk, fields: dict[str, str], status: int, words: str
) -> None:
    data = {"csrf_token": desk.token, "role": "agent", "language": "en",
            "display_name": "Kept Name"} | fields
    resp = await desk.admin.post("/admin/accounts", data=data)
    assert resp.status == status
    html = await resp.text()
    assert words in html and 'value="Kept Name"' in html
    assert not await can_log_in(desk.store, fields["username"], fields["password"])


async def test_changing_a_role_takes_effect_on_the_next_page(desk: Desk) -> None:
    async with open_desk(desk.store) as alice:
        await login(alice, "alice")
        assert (await alice.get("/admin/accounts")).status == 403
        alice_id = await account_id(desk.store, "alice")
        resp = await desk.admin.post(
            f"/admin/accounts/{alice_id}/role", allow_redirects=False,
            data={"csrf_token": desk.token, "role": "admin"},
        )
        assert resp.status == 302
        assert (await alice.get("/admin/accounts")).status == 200


async def test_deactivating_ends_sessions_and_logins_until_reactivated(desk: Desk) -> None:
    alice_id = await account_id(desk.store, "alice")
    async with open_desk(desk.store) as alice:
        await login(alice, "alice")
        resp = await desk.admin.post(
            f"/admin/accounts/{alice_id}/active", allow_redirects=False,
            data={"csrf_token": desk.token, "active": "0"},
        )
        assert resp.status == 302
        assert (await alice.get("/account", allow_redirects=False)).status == 302
    assert not await can_log_in(desk.store, "alice", PASSWORD)
    html = await (await desk.admin.get("/admin/accounts")).text()
    assert re.search(r'data-username="alice" class="inactive"', html)
    await desk.admin.post(
        f"/admin/accounts/{alice_id}/active", data={"csrf_token": desk.token, "active": "1"}
    )
    assert await can_log_in(desk.store, "alice", PASSWORD)


async def test_a_password_reset_ends_sessions_and_the_new_password_works(desk: Desk) -> None:
    alice_id = await account_id(desk.store, "alice")
    async with open_desk(desk.store) as alice:
        await login(alice, "alice")
        resp = await desk.admin.post(
            f"/admin/accounts/{alice_id}/password", allow_redirects=False,
            data={"csrf_token": desk.token, "password": "fresh-start-9"},
        )
        assert (resp.status, resp.headers["Location"]) == (302, "/admin/accounts?done=password")
        assert (await alice.get("/account", allow_redirects=False)).status == 302
    assert not await can_log_in(desk.store, "alice", PASSWORD)
    assert await can_log_in(desk.store, "alice", "fresh-start-9")


async def test_an_empty_reset_generates_a_password_shown_once(desk: Desk) -> None:
    alice_id = await account_id(desk.store, "alice")
    resp = await desk.admin.post(
        f"/admin/accounts/{alice_id}/password", data={"csrf_token": desk.token, "password": ""},
        allow_redirects=False,
    )
    assert resp.status == 200  # no redirect: the password is on this response only
    found = re.search(r'<code class="secret">([^<]+)</code>', await resp.text())
    assert found is not None
    assert await can_log_in(desk.store, "alice", found.group(1))
    again = await (await desk.admin.get("/admin/accounts")).text()
    assert found.group(1) not in again


async def test_the_last_admin_cannot_be_demoted_and_nobody_deactivates_themselves(
    desk: Desk,
) -> None:
    root_id = await account_id(desk.store, "root")
    demote = await desk.admin.post(
        f"/admin/accounts/{root_id}/role", data={"csrf_token": desk.token, "role": "agent"}
    )
    assert demote.status == 409 and "last active admin" in await demote.text()
    myself = await desk.admin.post(
        f"/admin/accounts/{root_id}/active", data={"csrf_token": desk.token, "active": "0"}
    )
    assert myself.status == 409 and "your own account" in await myself.text()
    assert (await desk.admin.get("/admin/accounts")).status == 200  # still an admin


async def test_an_unknown_account_is_a_404_page(desk: Desk) -> None:
    resp = await desk.admin.post(
        "/admin/accounts/987654/role", data={"csrf_token": desk.token, "role": "agent"}
    )
    assert resp.status == 404
    assert (await desk.admin.post("/admin/accounts/x1/role",
                                  data={"csrf_token": desk.token})).status == 404


async def test_admin_forms_without_the_csrf_token_change_nothing(desk: Desk) -> None:
    alice_id = await account_id(desk.store, "alice")
    for path, data in (
        ("/admin/accounts", {"username": "eve", "password": "eve-password", "role": "admin"}),
        (f"/admin/accounts/{alice_id}/role", {"role": "admin"}),
        (f"/admin/accounts/{alice_id}/active", {"active": "0"}),
        (f"/admin/accounts/{alice_id}/password", {"password": "taken-over-1"}),
    ):
        resp = await desk.admin.post(path, data=data | {"csrf_token": "forged"})
        assert resp.status == 403, path
        assert 'data-code="csrf_failed"' in await resp.text()
    assert not await can_log_in(desk.store, "eve", "eve-password")
    assert await can_log_in(desk.store, "alice", PASSWORD)
    async with desk.store.read() as session:
        alice = await accounts.get_agent(session, "alice")
    assert alice is not None and alice.role == "agent" and alice.active


async def test_an_agent_cannot_use_the_admin_forms(desk: Desk) -> None:
    root_id = await account_id(desk.store, "root")
    async with open_desk(desk.store) as alice:
        token = await login(alice, "alice")
        alice_id = await account_id(desk.store, "alice")
        for path, data in (
            ("/admin/accounts", {"username": "eve", "password": "eve-password"}),
            (f"/admin/accounts/{alice_id}/role", {"role": "admin"}),
            (f"/admin/accounts/{root_id}/password", {"password": "taken-over-1"}),
        ):
            resp = await alice.post(path, data=data | {"csrf_token": token})
            assert resp.status == 403, path
    assert await can_log_in(desk.store, "root", PASSWORD)
    assert not await can_log_in(desk.store, "eve", "eve-password")
