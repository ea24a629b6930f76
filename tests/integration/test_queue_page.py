"""The /queue page: rows, escaping, filters, each action as a form (no JavaScript), bulk, CSRF."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from storage.clock import ManualClock
from storage.db import Store
from storage.models import OutboxMessage, SocialPost
from tests.desk_helpers import add_agent, csrf_from, desk_client, login
from tests.integration.helpers import rules
from tests.integration.test_review import T0, add_post


@pytest.fixture
async def desk(store: Store) -> AsyncIterator[TestClient]:
    await add_agent(store, "alice")
    await add_agent(store, "li", language="zh")
    client = await desk_client(store, rules=rules(ManualClock(T0 + timedelta(hours=1))))
    yield client
    await client.close()


async def _page(client: TestClient, url: str = "/queue") -> tuple[str, str]:
    resp = await client.get(url)
    assert resp.status == 200, resp.status
    html = await resp.text()
    return html, csrf_from(html)


async def _post(store: Store, post_id: int) -> SocialPost:
    async with store.read() as session:
        got = await session.get(SocialPost, post_id)
        assert got is not None
        return got


def _rows(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<li class="mention[^"]*" id="mention-(\d+)"', html)]


async def test_the_queue_needs_a_login(desk: TestClient) -> None:
    resp = await desk.get("/queue", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"].startswith("/login")


async def test_rows_in_order_with_escaped_text_and_actions(
    desk: TestClient, store: Store
) -> None:
    evil = "<script>alert('x')</script><img src=x onerror=alert(1)>"
    long_word = "A" * 3000
    rtl = "الطلب لم يصل"
    small = await add_post(store, priority="P3", author_followers=12, text=long_word)
    top = await add_post(store, priority="P1", author_followers=1_234_567, text=evil,
                         author_username="<b>mei</b>", group_size=7)
    arabic = await add_post(store, priority="P2", text=rtl, language="ar")
    await add_post(store, state="dismissed")  # not in the default view
    await login(desk, "alice")
    html, _ = await _page(desk)
    assert _rows(html) == [top, arabic, small]
    assert evil not in html and "<b>mei</b>" not in html
    assert "&lt;script&gt;alert(" in html and "&lt;b&gt;mei&lt;/b&gt;" in html
    assert long_word in html and rtl in html and 'dir="auto"' in html
    assert "1,234,567" in html and "×7" in html
    assert html.count("Create ticket") == 3 + 1  # one per row, and the bulk button
    assert f'action="/queue/{top}/dismiss"' in html
    assert f'action="/queue/{top}/reply"' in html
    assert '<script src="/static/desk/queue.js" defer></script>' in html
    assert "<script>" not in html.replace(
        '<script src="/static/desk/queue.js" defer></script>', ""
    )
    # A reply draft addressed to the author is in an editable textarea.
    assert re.search(r'<textarea name="text"[^>]*>@&lt;b&gt;mei&lt;/b&gt; ', html)


async def test_chinese_labels(desk: TestClient, store: Store) -> None:
    await add_post(store, language="zh", text="快递三天都没到", category="delivery")
    await login(desk, "li")
    html, _ = await _page(desk)
    assert "审核队列" in html and "创建工单" in html and "忽略" in html
    assert re.search(r"<textarea[^>]*>@\S+ 非常抱歉配送的问题", html)


async def test_filters_and_paging(desk: TestClient, store: Store) -> None:
    masto = await add_post(store, platform="mastodon", priority="P2")
    x_posts = [await add_post(store) for _ in range(55)]
    dismissed = await add_post(store, state="dismissed")
    await login(desk, "alice")
    html, _ = await _page(desk, "/queue?platform=mastodon")
    assert _rows(html) == [masto]
    html, _ = await _page(desk, "/queue?state=dismissed")
    assert _rows(html) == [dismissed]
    html, _ = await _page(desk, "/queue?state=all&platform=x")
    first = _rows(html)
    assert len(first) == 50
    found = re.search(r'<a href="([^"]+)" rel="next">', html)
    assert found
    html, _ = await _page(desk, found.group(1).replace("&amp;", "&"))
    assert set(first + _rows(html)) == {*x_posts, dismissed}
    resp = await desk.get("/queue?since=yesterday")
    assert resp.status == 422


async def test_ticket_dismiss_assign_and_reply_as_forms(desk: TestClient, store: Store) -> None:
    a, b, c, d = [await add_post(store, platform="mastodon") for _ in range(4)]
    await login(desk, "alice")
    html, token = await _page(desk, "/queue?platform=mastodon")
    back = "/queue?platform=mastodon"
    resp = await desk.post(f"/queue/{a}/ticket", data={"csrf_token": token, "next": back},
                           allow_redirects=False)
    assert resp.status == 302
    location = resp.headers["Location"]
    assert location.startswith("/queue?platform=mastodon&") and "done=ticketed" in location
    html, _ = await _page(desk, location)
    assert re.search(r"Ticket CL-\d+ created", html)
    assert a not in _rows(html)  # ticketed: no longer waiting for review
    got = await _post(store, a)
    assert got.state == "ticketed" and got.ticket_id is not None

    resp = await desk.post(f"/queue/{b}/dismiss", data={"csrf_token": token, "next": back})
    assert resp.status == 200 and "Mention dismissed" in await resp.text()
    assert (await _post(store, b)).state == "dismissed"

    resp = await desk.post(f"/queue/{c}/assign",
                           data={"csrf_token": token, "agent": "li", "next": back})
    assert "Mention assigned" in await resp.text()
    assert (await _post(store, c)).assignee_id is not None

    resp = await desk.post(f"/queue/{d}/reply", data={
        "csrf_token": token, "text": "@u we are on it", "next": back})
    assert "Reply queued" in await resp.text()
    async with store.read() as session:
        rows = (await session.scalars(select(OutboxMessage))).all()
    assert [r.kind for r in rows if r.kind == "public_reply"] == ["public_reply"]

    # Illegal now, and a version someone else moved past: errors in words, nothing changed.
    resp = await desk.post(f"/queue/{b}/dismiss", data={"csrf_token": token, "next": back})
    assert "not possible in the mention" in await resp.text()
    stale = (await _post(store, c)).version - 1
    resp = await desk.post(f"/queue/{c}/dismiss",
                           data={"csrf_token": token, "version": str(stale), "next": back})
    assert "changed this mention meanwhile" in await resp.text()
    assert (await _post(store, c)).state == "flagged"
    resp = await desk.post(f"/queue/{c}/reply", data={"csrf_token": token, "text": " "})
    assert "not valid" in await resp.text()


async def test_bulk_actions(desk: TestClient, store: Store) -> None:
    a, b, c = [await add_post(store) for _ in range(3)]
    await login(desk, "alice")
    _, token = await _page(desk)
    resp = await desk.post("/queue/bulk", data=[
        ("csrf_token", token), ("action", "dismiss"), ("ids", str(a)), ("ids", str(b)),
    ])
    assert "2 done, 0 not possible" in await resp.text()
    resp = await desk.post("/queue/bulk", data=[
        ("csrf_token", token), ("action", "ticket"), ("ids", str(a)), ("ids", str(c)),
    ])
    assert "2 done, 0 not possible" in await resp.text()  # a dismissed one may still be ticketed
    resp = await desk.post("/queue/bulk", data=[
        ("csrf_token", token), ("action", "dismiss"), ("ids", str(a)), ("ids", str(c)),
    ])
    assert "0 done, 2 not possible" in await resp.text()
    resp = await desk.post("/queue/bulk", data={"csrf_token": token, "action": "dismiss"})
    assert "Choose at least one mention" in await resp.text()


async def test_a_form_without_csrf_token_is_refused(desk: TestClient, store: Store) -> None:
    post = await add_post(store)
    await login(desk, "alice")
    resp = await desk.post(f"/queue/{post}/dismiss", data={})
    assert resp.status == 403
    assert (await _post(store, post)).state == "flagged"
