"""/api/mentions as a client sees it: shapes, filters, paging, actions, errors, OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from storage.accounts import issue_token
from storage.clock import ManualClock
from storage.db import Store
from storage.models import OutboxMessage
from tests.desk_helpers import add_agent, desk_client
from tests.integration.helpers import rules
from tests.integration.test_review import T0, add_post


@dataclass
class Api:
    client: TestClient
    store: Store
    auth: dict[str, str]


@pytest.fixture
async def api(store: Store) -> AsyncIterator[Api]:
    r = rules(ManualClock(T0 + timedelta(hours=1)))
    for name in ("alice", "bob"):
        await add_agent(store, name)
    async with store.transaction() as s:
        token = await issue_token(s, "alice", r.clock())
    client = await desk_client(store, rules=r)
    yield Api(client, store, {"Authorization": f"Bearer {token}"})
    await client.close()


async def _error(resp: Any) -> tuple[int, str]:
    body = await resp.json()
    return resp.status, body["error"]["code"]


async def test_list_shape_order_and_paging(api: Api) -> None:
    low = await add_post(api.store, priority="P3", author_followers=3)
    top = await add_post(api.store, priority="P1", author_followers=None, group_size=4,
                         author_username="mei", text="<script>alert(1)</script>")
    new = await add_post(api.store, state="new", priority="P1")
    resp = await api.client.get("/api/mentions?state=flagged", headers=api.auth)
    assert resp.status == 200
    page = await resp.json()
    assert [m["id"] for m in page["items"]] == [top, low] and page["next_cursor"] is None
    item = page["items"][0]
    for key in ("id", "platform", "external_id", "url", "author", "text", "state", "priority",
                "category", "sentiment", "created_at", "group_size", "ticket"):
        assert key in item, key
    assert item["author"] == {"id": item["author"]["id"], "username": "mei",
                              "name": item["author"]["name"], "followers": None}
    assert (item["group_size"], item["ticket"], item["text"]) == (
        4, None, "<script>alert(1)</script>"
    )
    assert item["sentiment"]["label"] == "negative"
    # Without a state: every state, flagged first.
    resp = await api.client.get("/api/mentions?limit=2", headers=api.auth)
    first = await resp.json()
    assert [m["id"] for m in first["items"]] == [top, low] and first["next_cursor"]
    resp = await api.client.get(
        f"/api/mentions?limit=2&cursor={first['next_cursor']}", headers=api.auth
    )
    second = await resp.json()
    assert [m["id"] for m in second["items"]] == [new] and second["next_cursor"] is None


async def test_filters_and_bad_input(api: Api) -> None:
    masto = await add_post(api.store, platform="mastodon", language="zh", priority="P2",
                           posted_at=T0 + timedelta(days=3))
    await add_post(api.store)
    for query, expected in (
        ("platform=mastodon", [masto]),
        ("language=zh", [masto]),
        ("priority=P2,P1", [masto]),
        ("since=2026-01-07", [masto]),
        ("since=2026-01-07T00:00:00Z&until=2026-01-09", [masto]),
        ("state=dismissed", []),
    ):
        resp = await api.client.get(f"/api/mentions?{query}", headers=api.auth)
        assert resp.status == 200, query
        assert [m["id"] for m in (await resp.json())["items"]] == expected, query
    for query in ("state=open", "priority=P9", "platform=myspace", "since=yesterday",
                  "limit=0", "limit=500", "cursor=xyz", "category=weather"):
        resp = await api.client.get(f"/api/mentions?{query}", headers=api.auth)
        assert await _error(resp) == (422, "invalid"), query
    assert (await api.client.get("/api/mentions")).status == 401


async def test_one_mention_with_members_and_a_draft(api: Api) -> None:
    leader = await add_post(api.store, group_size=2, author_username="mei", language="zh",
                            category="delivery")
    member = await add_post(api.store, group_id=leader)
    resp = await api.client.get(f"/api/mentions/{leader}", headers=api.auth)
    got = await resp.json()
    assert [m["id"] for m in got["members"]] == [member]
    assert got["draft"].startswith("@mei ") and "配送" in got["draft"]
    for path in ("/api/mentions/999999", "/api/mentions/abc"):
        assert await _error(await api.client.get(path, headers=api.auth)) == (404, "not_found")


async def test_ticket_then_illegal_dismiss(api: Api) -> None:
    post = await add_post(api.store, priority="P2", category="billing")
    resp = await api.client.post(f"/api/mentions/{post}/ticket", headers=api.auth)
    assert resp.status == 201
    made = await resp.json()
    assert made["number"].startswith("CL-") and made["channel"] == "x"
    assert (made["priority"], made["category"], made["kind"]) == ("P2", "billing", "complaint")
    assert made["mention"]["state"] == "ticketed" and made["mention"]["ticket"] == made["number"]
    assert any(e["type"] == "source" for e in made["events"])
    resp = await api.client.post(f"/api/mentions/{post}/dismiss", headers=api.auth)
    assert await _error(resp) == (409, "illegal_move")
    listed = await (await api.client.get("/api/mentions?state=ticketed", headers=api.auth)).json()
    assert listed["items"][0]["ticket"] == made["number"]
    resp = await api.client.post("/api/mentions/424242/ticket", headers=api.auth)
    assert await _error(resp) == (404, "not_found")


async def test_dismiss_assign_and_versions(api: Api) -> None:
    post = await add_post(api.store)
    resp = await api.client.post(f"/api/mentions/{post}/assign", json={"agent": "bob"},
                                 headers=api.auth)
    assert resp.status == 200
    assigned = await resp.json()
    assert assigned["assignee"] == "bob"
    resp = await api.client.post(f"/api/mentions/{post}/assign", json={"agent": "nobody"},
                                 headers=api.auth)
    assert await _error(resp) == (422, "invalid")
    resp = await api.client.post(f"/api/mentions/{post}/dismiss",
                                 json={"version": assigned["version"] - 1}, headers=api.auth)
    assert await _error(resp) == (409, "conflict")
    resp = await api.client.post(f"/api/mentions/{post}/dismiss",
                                 json={"version": assigned["version"]}, headers=api.auth)
    assert resp.status == 200
    got = await resp.json()
    assert (got["state"], got["handled_by"]) == ("dismissed", "agent:alice")
    resp = await api.client.post(f"/api/mentions/{post}/dismiss", json={"nope": 1},
                                 headers=api.auth)
    assert await _error(resp) == (422, "invalid")


async def test_reply_is_queued_once(api: Api) -> None:
    post = await add_post(api.store, platform="mastodon", external_id="110000000000000001")
    resp = await api.client.post(f"/api/mentions/{post}/reply", json={"text": "@u Sorry!"},
                                 headers=api.auth)
    assert resp.status == 202
    body = await resp.json()
    assert body["delivery"] == "queued" and body["mention"]["state"] == "replied"
    resp = await api.client.post(f"/api/mentions/{post}/reply", json={"text": "@u Sorry!"},
                                 headers=api.auth)
    assert await _error(resp) == (409, "illegal_move")
    for bad in ({}, {"text": ""}, {"text": "x" * 501}):
        other = await add_post(api.store, platform="mastodon")
        resp = await api.client.post(f"/api/mentions/{other}/reply", json=bad, headers=api.auth)
        assert await _error(resp) == (422, "invalid"), bad
    async with api.store.read() as session:
        rows = (await session.scalars(select(OutboxMessage))).all()
    assert [(r.kind, r.channel, r.payload["in_reply_to"]) for r in rows] == [
        ("public_reply", "mastodon", "110000000000000001")
    ]


async def test_bulk(api: Api) -> None:
    a, b, c = [await add_post(api.store) for _ in range(3)]
    resp = await api.client.post("/api/mentions/bulk", json={"ids": [a, b], "action": "dismiss"},
                                 headers=api.auth)
    assert resp.status == 200
    body = await resp.json()
    assert (body["done"], body["failed"]) == (2, 0)
    resp = await api.client.post(
        "/api/mentions/bulk", json={"ids": [a, c], "action": "ticket"}, headers=api.auth
    )
    body = await resp.json()
    assert [r["ok"] for r in body["results"]] == [True, True]
    assert all(r["ticket"].startswith("CL-") for r in body["results"])
    resp = await api.client.post(
        "/api/mentions/bulk", json={"ids": [a, b], "action": "dismiss"}, headers=api.auth
    )
    body = await resp.json()
    assert body["results"][0]["error"]["code"] == "illegal_move"  # a is ticketed now
    assert body["results"][1]["error"]["code"] == "illegal_move"  # b was dismissed already
    for bad in ({"ids": [], "action": "dismiss"}, {"ids": [a], "action": "explode"},
                {"ids": [a], "action": "reply"}, {"ids": ["x"], "action": "dismiss"}):
        resp = await api.client.post("/api/mentions/bulk", json=bad, headers=api.auth)
        assert await _error(resp) == (422, "invalid"), bad


async def test_openapi_describes_the_mentions(api: Api) -> None:
    spec = await (await api.client.get("/api/openapi.json")).json()
    for path in ("/api/mentions", "/api/mentions/{id}", "/api/mentions/{id}/ticket",
                 "/api/mentions/{id}/dismiss", "/api/mentions/{id}/reply",
                 "/api/mentions/{id}/assign", "/api/mentions/bulk"):
        assert path in spec["paths"], path
    assert "Mention" in spec["components"]["schemas"]
    ticket_op = spec["paths"]["/api/mentions/{id}/ticket"]["post"]
    assert any(p["name"] == "id" and p["in"] == "path" for p in ticket_op["parameters"])
