"""The tickets API as a client sees it: auth, roles, validation, errors, paging, OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher

from desk.app import make_app
from desk.context import DeskContext
from storage.accounts import issue_token, upsert_agent
from storage.db import Store, create_store
from storage.intake import TicketIntake
from tests.integration.helpers import chat_customer, chat_ticket, rules


@dataclass
class Api:
    client: TestClient
    store: Store
    admin: dict[str, str]
    agent: dict[str, str]


@pytest.fixture
async def api(store: Store) -> AsyncIterator[Api]:
    hasher = PasswordHasher(time_cost=1, memory_cost=1024)
    r = rules()
    tokens = {}
    async with store.transaction() as s:
        for name, role in (("root", "admin"), ("alice", "agent")):
            await upsert_agent(s, hasher, username=name, role=role, password=None, now=r.clock())
            tokens[name] = await issue_token(s, name, r.clock())
    intake = TicketIntake(store, r)
    ctx = DeskContext(store=store, rules=r, hasher=hasher, intake=intake)
    client = TestClient(TestServer(make_app(ctx)))
    await client.start_server()
    yield Api(
        client, store,
        {"Authorization": f"Bearer {tokens['root']}"},
        {"Authorization": f"Bearer {tokens['alice']}"},
    )
    await client.close()
    await intake.close()


def _ticket(**kw: object) -> dict[str, object]:
    return {
        "channel": "phone",
        "description": "The shop assistant shouted at me",
        "customer": {"name": "Ann Lee", "phone": "+44 20 7946 0000"},
        "category": "service_attitude",
    } | kw


async def _error(resp) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    body = await resp.json()
    return resp.status, body["error"]["code"], body["error"]["message"]


async def test_a_staff_entered_ticket_round_trips(api: Api) -> None:
    resp = await api.client.post("/api/tickets", json=_ticket(priority="P2"), headers=api.agent)
    assert resp.status == 201
    created = await resp.json()
    assert created["number"].startswith("CL-")
    assert (created["status"], created["priority"], created["channel"]) == ("new", "P2", "phone")
    assert created["customer"]["name"] == "Ann Lee"
    first_event = created["events"][0]
    assert (first_event["type"], first_event["actor"]) == ("created", "agent:alice")
    for key in ("kind", "subject", "description", "assignee", "created_at", "first_response_due",
                "resolution_due", "first_response_at", "resolved_at", "csat"):
        assert key in created
    resp = await api.client.get(f"/api/tickets/{created['number']}", headers=api.agent)
    got = await resp.json()
    assert got["number"] == created["number"] and got["messages"] == []


async def test_a_retried_create_with_the_same_idempotency_key_makes_one_ticket(api: Api) -> None:
    headers = api.agent | {"Idempotency-Key": "call-2026-001"}
    first = await api.client.post("/api/tickets", json=_ticket(), headers=headers)
    again = await api.client.post("/api/tickets", json=_ticket(), headers=headers)
    assert (first.status, again.status) == (201, 200)
    assert (await first.json())["number"] == (await again.json())["number"]
    other = await api.client.post("/api/tickets", json=_ticket(), headers=api.agent)
    assert (await other.json())["number"] != (await first.json())["number"]


async def test_status_moves_follow_the_contract(api: Api) -> None:
    resp = await api.client.post("/api/tickets", json=_ticket(), headers=api.agent)
    number = (await resp.json())["number"]
    bad = await api.client.post(f"/api/tickets/{number}/status", json={"status": "closed"},
                                headers=api.agent)
    assert (await _error(bad))[:2] == (409, "illegal_move")
    ok = await api.client.post(f"/api/tickets/{number}/status",
                               json={"status": "in_progress", "note": "calling back"},
                               headers=api.agent)
    assert ok.status == 200
    body = await ok.json()
    assert body["status"] == "in_progress"
    assert body["events"][-1] == body["events"][-1] | {"from": "new", "to": "in_progress",
                                                       "note": "calling back"}
    assert set(body["allowed_moves"]) == {"waiting_customer", "resolved"}


async def test_reply_and_assign(api: Api) -> None:
    r = rules()
    who = await chat_customer(api.store, r)
    number = f"CL-{await chat_ticket(api.store, r, who)}"
    resp = await api.client.post(f"/api/tickets/{number}/reply",
                                 json={"text": "We are sorry, a refund is on its way"},
                                 headers=api.agent)
    assert resp.status == 202 and (await resp.json())["delivery"] == "queued"
    note = await api.client.post(f"/api/tickets/{number}/reply",
                                 json={"text": "check with courier", "public": False},
                                 headers=api.agent)
    assert (await note.json())["delivery"] == "internal"
    assigned = await api.client.post(f"/api/tickets/{number}/assign", json={"agent": "root"},
                                     headers=api.agent)
    detail = await assigned.json()
    assert detail["assignee"] == "root"
    assert [m["text"] for m in detail["messages"]] == [
        "We are sorry, a refund is on its way", "check with courier"]
    assert detail["first_response_at"] is not None
    unknown = await api.client.post(f"/api/tickets/{number}/assign", json={"agent": "ghost"},
                                    headers=api.agent)
    assert (await _error(unknown))[:2] == (422, "invalid")


@pytest.mark.parametrize(
    ("body", "status", "code", "names"),
    [
        (b"{not json", 400, "bad_json", "JSON"),
        (b"[1, 2]", 400, "bad_json", "object"),
        (b"", 400, "bad_json", "empty"),
    ],
)
async def test_malformed_bodies_are_400(api: Api, body: bytes, status: int, code: str,
                                        names: str) -> None:
    resp = await api.client.post("/api/tickets", data=body, headers=api.agent)
    got = await _error(resp)
    assert got[:2] == (status, code) and names in got[2]


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"priority": "P9"}, "priority"),
        ({"description": 42}, "description"),
        ({"channel": "telegram"}, "channel"),
        ({"customer": {"name": "A", "email": "not-an-address"}}, "customer.email"),
        ({"customer": {}}, "customer.name"),
    ],
)
async def test_wrong_fields_are_422_naming_the_field(api: Api, patch: dict[str, object],
                                                     field: str) -> None:
    resp = await api.client.post("/api/tickets", json=_ticket(**patch), headers=api.agent)
    status, code, message = await _error(resp)
    assert (status, code) == (422, "invalid") and field in message


async def test_oversize_body_is_413(api: Api) -> None:
    resp = await api.client.post(
        "/api/tickets", json=_ticket(description="x" * (1024 * 1024 + 10)), headers=api.agent
    )
    assert (await _error(resp))[:2] == (413, "too_large")


async def test_no_or_bad_token_is_401_and_wrong_role_403(api: Api) -> None:
    assert (await _error(await api.client.get("/api/tickets")))[:2] == (401, "unauthenticated")
    bad = await api.client.get("/api/tickets", headers={"Authorization": "Bearer clt_nope"})
    assert (await _error(bad))[:2] == (401, "unauthenticated")
    assert (await _error(await api.client.get("/api/agents", headers=api.agent)))[:2] == (
        403, "forbidden")
    created = await api.client.post(
        "/api/agents", json={"username": "bob", "role": "agent", "password": "correct horse"},
        headers=api.admin)
    assert created.status == 201
    listed = await (await api.client.get("/api/agents", headers=api.admin)).json()
    assert [a["username"] for a in listed["items"]] == ["alice", "bob", "root"]
    assert all("password" not in str(a) for a in listed["items"])


async def test_short_lists_take_limit_and_cursor_like_the_long_ones(api: Api) -> None:
    for name in ("dave", "carol", "bob"):
        await api.client.post("/api/agents", json={
            "username": name, "role": "agent", "password": "correct horse"}, headers=api.admin)
    for name in ("Thanks", "Delay", "Apology"):
        await api.client.post("/api/canned-replies", json={
            "name": name, "body": f"{name} text", "language": "en"}, headers=api.admin)

    async def walk(path: str, field: str, limit: int) -> list[object]:
        seen, cursor = [], None
        while True:
            query = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
            page = await (await api.client.get(path + query, headers=api.admin)).json()
            assert len(page["items"]) <= limit
            seen += [item[field] for item in page["items"]]
            if (cursor := page["next_cursor"]) is None:
                return seen

    assert await walk("/api/agents", "username", 2) == [
        "alice", "bob", "carol", "dave", "root"]
    assert await walk("/api/canned-replies", "name", 1) == ["Apology", "Delay", "Thanks"]
    views = await walk("/api/views", "name", 2)
    everything = await (await api.client.get("/api/views", headers=api.admin)).json()
    assert views == [v["name"] for v in everything["items"]] and everything["next_cursor"] is None
    # A reply deleted between two pages: the next page still starts after the last one seen.
    first = await (await api.client.get("/api/canned-replies?limit=1",
                                        headers=api.admin)).json()
    [apology] = first["items"]
    await api.client.delete(f"/api/canned-replies/{apology['id']}", headers=api.admin)
    rest = await (await api.client.get(
        f"/api/canned-replies?limit=5&cursor={first['next_cursor']}", headers=api.admin)).json()
    assert [c["name"] for c in rest["items"]] == ["Delay", "Thanks"]
    # A ticket's own list keeps the customer's language first, then the neutral ones.
    await api.client.post("/api/canned-replies", json={"name": "Any time", "body": "Hi"},
                          headers=api.admin)
    await api.client.post("/api/canned-replies", json={
        "name": "Bu ke qi", "body": "不客气", "language": "zh"}, headers=api.admin)
    created = await (await api.client.post(
        "/api/tickets", json=_ticket(language="en"), headers=api.agent)).json()
    assert await walk(f"/api/tickets/{created['number']}/canned-replies", "name", 2) == [
        "Delay", "Thanks", "Any time"]
    for bad in ("?limit=0", "?limit=201", "?cursor=%%%", "?cursor=bm90IGpzb24"):
        resp = await api.client.get("/api/agents" + bad, headers=api.admin)
        assert (await _error(resp))[:2] == (422, "invalid"), bad


async def test_unknown_ticket_and_path_are_404_and_wrong_method_405(api: Api) -> None:
    for path in ("/api/tickets/CL-424242", "/api/tickets/nonsense", "/api/nope"):
        assert (await _error(await api.client.get(path, headers=api.agent)))[0] == 404
    resp = await api.client.delete("/api/tickets", headers=api.agent)
    assert (await _error(resp))[:2] == (405, "method_not_allowed")


async def test_the_list_is_most_urgent_first_filtered_and_paged(api: Api) -> None:
    plan = ["P3", "P1", "P4", "P2", "P1", "P3", "P2"]
    for p in plan:
        await api.client.post("/api/tickets", json=_ticket(priority=p), headers=api.agent)
    await api.client.post("/api/tickets", json=_ticket(channel="email", priority="P4",
                                                       description="lost my receipt, order 88-123"),
                          headers=api.agent)
    seen: list[dict[str, object]] = []
    cursor = None
    while True:
        q = "/api/tickets?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = await (await api.client.get(q, headers=api.agent)).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 8 and len({t["number"] for t in seen}) == 8
    assert [t["priority"] for t in seen] == sorted(t["priority"] for t in seen)  # type: ignore[type-var]
    p1 = await (await api.client.get("/api/tickets?priority=P1", headers=api.agent)).json()
    assert [t["priority"] for t in p1["items"]] == ["P1", "P1"]
    email = await (await api.client.get("/api/tickets?channel=email&status=new",
                                        headers=api.agent)).json()
    assert len(email["items"]) == 1
    found = await (await api.client.get("/api/tickets?q=receipt", headers=api.agent)).json()
    assert [t["channel"] for t in found["items"]] == ["email"]
    by_number = await (await api.client.get(f"/api/tickets?q={seen[0]['number']}",
                                            headers=api.agent)).json()
    assert [t["number"] for t in by_number["items"]] == [seen[0]["number"]]
    for bad in ("status=done", "limit=0", "limit=abc", "cursor=garbage!"):
        resp = await api.client.get(f"/api/tickets?{bad}", headers=api.agent)
        assert (await _error(resp))[:2] == (422, "invalid"), bad


async def test_openapi_describes_every_operation_and_admin_roles(api: Api) -> None:
    spec = await (await api.client.get("/api/openapi.json")).json()
    paths = spec["paths"]
    for path, method in [("/api/tickets", "post"), ("/api/tickets", "get"),
                         ("/api/tickets/{number}", "get"), ("/api/tickets/{number}/status", "post"),
                         ("/api/tickets/{number}/reply", "post"),
                         ("/api/tickets/{number}/assign", "post"), ("/api/agents", "get"),
                         ("/api/agents", "post")]:
        assert method in paths[path], (path, method)
    assert paths["/api/agents"]["post"]["x-roles"] == ["admin"]
    assert "admin" in paths["/api/tickets"]["get"]["x-roles"]
    assert "agent" in paths["/api/tickets"]["get"]["x-roles"]
    assert "TicketIn" in spec["components"]["schemas"]


async def test_health_and_metrics(api: Api) -> None:
    health = await api.client.get("/healthz")
    assert health.status == 200 and (await health.json())["database"] == "ok"
    await api.client.post("/api/tickets", json=_ticket(), headers=api.agent)
    text = await (await api.client.get("/metrics")).text()
    assert 'careloop_tickets{status="new"} 1.0' in text
    assert "careloop_http_requests_total" in text


async def test_health_is_503_when_the_database_is_gone() -> None:
    dead = create_store("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    ctx = DeskContext(store=dead, rules=rules(), hasher=PasswordHasher(),
                      intake=TicketIntake(dead, rules()))
    client = TestClient(TestServer(make_app(ctx)))
    await client.start_server()
    try:
        resp = await client.get("/healthz")
        assert resp.status == 503
        assert (await resp.json())["database"] == "unreachable"
    finally:
        await client.close()
        await dead.close()


async def test_hand_back_returns_a_human_conversation_to_the_bot(api: Api) -> None:
    r = rules()
    who = await chat_customer(api.store, r)
    number = f"CL-{await chat_ticket(api.store, r, who, needs_human=True)}"
    resp = await api.client.post(f"/api/tickets/{number}/handback", headers=api.agent)
    assert resp.status == 200
    body = await resp.json()
    assert body["needs_human"] is False
    assert body["events"][-1]["type"] == "handed_back"
    again = await api.client.post(f"/api/tickets/{number}/handback", headers=api.agent)
    assert (await _error(again))[:2] == (409, "conflict")
    unknown = await api.client.post("/api/tickets/CL-777777/handback", headers=api.agent)
    assert (await _error(unknown))[0] == 404
