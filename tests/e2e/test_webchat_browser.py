"""A person using the web chat in Chromium: reports a complaint, comes back, follows it.

The service runs in the test's event loop, wired as config/bootstrap.py wires it (store, real
NLU, dialogue, web chat on the desk app, outbox worker); the browser talks to it over a real
port. Screenshots go to tests/artifacts/; with CARELOOP_DOCS_SCREENSHOTS=1 (or when missing)
the README's docs/webchat.png is refreshed too.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from playwright.async_api import Browser, Page, expect

from storage.accounts import secret_key
from storage.db import Store, create_store
from storage.migrate import upgrade
from storage.models import Agent
from storage.sla import SlaPolicy
from storage.tickets import TicketRules, move_ticket
from storage.tickets import reply as agent_reply
from tests.e2e.browser import serve_desk_with_chat

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
DOCS_SHOT = ROOT / "docs" / "webchat.png"
NUMBER = re.compile(r"CL-\d+")
WAIT_MS = 15_000


@dataclass
class Service:
    store: Store
    rules: TicketRules
    base: str
    requests: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    async def move(self, number: str, status: str) -> None:
        async with self.store.transaction() as s:
            await move_ticket(s, self.rules, int(number[3:]), status, actor="agent:alice")

    async def reply(self, number: str, text: str) -> None:
        async with self.store.transaction() as s:
            alice = Agent(username="alice", role="agent", language="en", active=True,
                          created_at=self.rules.clock())
            s.add(alice)
            await s.flush()
            await agent_reply(s, self.rules, int(number[3:]), text, public=True, agent=alice)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    store = create_store(f"sqlite+aiosqlite:///{tmp_path / 'careloop.db'}")
    await upgrade(store)
    rules = TicketRules(sla=SlaPolicy())
    async with store.transaction() as s:
        secret = await secret_key(s)
    async with serve_desk_with_chat(store, rules, PasswordHasher(), secret) as base:
        yield Service(store, rules, base)
    await store.close()


async def open_chat(browser: Browser, service: Service, **context: Any) -> Page:
    ctx = await browser.new_context(viewport={"width": 390, "height": 760}, **context)
    page = await ctx.new_page()
    # Every request the page makes, and every socket it opens, must stay on our origin.
    page.on("request", lambda r: service.requests.append(r.url))
    page.on("websocket", lambda ws: service.requests.append(ws.url))
    page.on("console", lambda m: service.problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: service.problems.append(str(e)))
    await page.goto(f"{service.base}/chat")
    await expect(page.locator("#status")).to_have_attribute("data-state", "online",
                                                            timeout=WAIT_MS)
    return page


async def send(page: Page, text: str) -> None:
    before = await page.locator(".msg-bot").count()
    await page.fill("#text", text)
    await page.keyboard.press("Enter")
    # The answer has arrived when a new bot bubble appears.
    await expect(page.locator(".msg-bot")).not_to_have_count(before, timeout=WAIT_MS)


def last_bot(page: Page) -> Any:
    return page.locator(".msg-bot").last


def assert_same_origin(service: Service) -> None:
    origin = service.base.removeprefix("http://")
    outside = [u for u in service.requests
               if not re.match(rf"^(https?|wss?)://{re.escape(origin)}/", u) and u != "data:,"]
    assert not outside, outside
    assert any(u.startswith(f"ws://{origin}/chat/ws") for u in service.requests)


async def test_a_customer_reports_follows_and_sees_updates(
    service: Service, browser: Browser
) -> None:
    page = await open_chat(browser, service, locale="en-GB")
    await expect(page.locator("h1")).to_have_text("Customer care")
    await send(page, "My parcel for order 123-4567 never arrived")
    await expect(last_bot(page)).to_contain_text("photo")
    await send(page, "skip")
    await expect(last_bot(page)).to_contain_text("123-4567")
    before = await page.locator(".msg-bot").count()
    await last_bot(page).get_by_role("button", name=re.compile("Confirm")).click()
    await expect(page.locator(".msg-bot")).not_to_have_count(before, timeout=WAIT_MS)
    confirmation = await page.locator(".msg-bot", has_text=NUMBER).last.inner_text()
    number = NUMBER.search(confirmation)
    assert number, confirmation
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "webchat-en.png"))
    if os.environ.get("CARELOOP_DOCS_SCREENSHOTS") == "1" or not DOCS_SHOT.exists():
        await page.screenshot(path=str(DOCS_SHOT))
        assert DOCS_SHOT.stat().st_size < 200_000

    # A reload is the same visitor: the conversation is still there and /status knows them.
    await page.reload()
    await expect(page.locator("#status")).to_have_attribute("data-state", "online",
                                                            timeout=WAIT_MS)
    await expect(page.locator(".msg-bot", has_text=number.group())).not_to_have_count(0)
    await expect(page.locator(".msg-me").first).to_have_text(
        "My parcel for order 123-4567 never arrived")
    await send(page, "/status")
    await expect(last_bot(page)).to_contain_text(number.group())
    await expect(last_bot(page)).to_contain_text("new")

    # The team moves the ticket; the open page shows it without any action.
    await service.move(number.group(), "in_progress")
    await expect(last_bot(page)).to_contain_text("in progress", timeout=WAIT_MS)
    await expect(last_bot(page)).to_contain_text(number.group())

    # What an agent writes is shown as text, never as markup.
    await service.reply(number.group(), 'Found it <img src=x onerror="window.__xss=1">')
    await expect(last_bot(page)).to_contain_text('<img src=x onerror="window.__xss=1">',
                                                 timeout=WAIT_MS)
    assert await page.locator("#log img").count() == 0
    assert await page.evaluate("window.__xss") is None

    # Too long: a clear message, and the text is not lost.
    await page.fill("#text", "x" * 4001)  # the box itself stops at 4,000
    assert len(await page.input_value("#text")) == 4000

    assert_same_origin(service)
    assert not service.problems, service.problems
    await page.context.close()


async def test_a_chinese_conversation(service: Service, browser: Browser) -> None:
    page = await open_chat(browser, service, locale="zh-CN")
    await expect(page.locator("h1")).to_have_text("客户服务")
    await expect(page.locator("#send")).to_have_text("发送")
    await send(page, "订单 123-4567 的快递一直没到")
    await expect(last_bot(page)).to_contain_text("跳过")
    await send(page, "跳过")
    await expect(last_bot(page)).to_contain_text("配送")
    await send(page, "是")
    await expect(last_bot(page)).to_contain_text(NUMBER)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "webchat-zh.png"))
    assert await page.evaluate("document.documentElement.lang") == "zh-CN"
    assert_same_origin(service)
    assert not service.problems, service.problems
    await page.context.close()


async def test_security_headers_reach_the_browser(service: Service, browser: Browser) -> None:
    ctx = await browser.new_context()
    page = await ctx.new_page()
    response = await page.goto(f"{service.base}/chat")
    assert response is not None
    headers = await response.all_headers()
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    cookies = await ctx.cookies()
    [visitor] = [c for c in cookies if c["name"] == "careloop_visitor"]
    assert visitor["httpOnly"] and visitor["sameSite"] == "Lax"
    assert await page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it
    await ctx.close()
