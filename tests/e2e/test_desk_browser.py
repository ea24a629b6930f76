"""The team's day in Chromium: log in, work the review queue, turn a mention into a ticket,
move a web chat customer's ticket and see the customer told in their open chat, read the
reports. Every page must run under the desk's CSP with no console error and nothing loaded
from another origin.

The service runs in the test's event loop, wired as config/bootstrap.py wires the desk (store,
real NLU for the web chat, desk app with the web chat hook, outbox worker); the browser talks
to it over a real port. History for the reports is seeded through the store. Screenshots go
to tests/artifacts/; with CARELOOP_DOCS_SCREENSHOTS=1 (or when missing) the README's
docs/desk-queue.png, docs/desk-ticket.png and docs/desk-reports.png are refreshed too.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from playwright.async_api import Browser, BrowserContext, Page, expect

from storage.accounts import secret_key, upsert_agent
from storage.clock import ManualClock, utc_now
from storage.db import Store, create_store
from storage.migrate import upgrade
from storage.models import SocialPost
from storage.sla import SlaPolicy
from storage.tickets import (
    NewTicket,
    TicketRules,
    create_ticket,
    find_or_create_customer,
    move_ticket,
    record_survey,
)
from tests.e2e.browser import serve_desk_with_chat

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
DOCS = ROOT / "docs"
SHOTS = ("desk-queue.png", "desk-ticket.png", "desk-reports.png")
NUMBER = re.compile(r"CL-\d+")
WAIT_MS = 15_000
LEAD, LEAD_PASSWORD = "mei", "desk-lead-pass-1"
EVIL = '<img src=x onerror="window.__xss=1">'


@dataclass
class Service:
    store: Store
    base: str
    requests: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def seed_mentions(store: Store) -> None:
    """What the monitors would have stored: a few flagged posts and some that need nobody."""
    now = utc_now()
    posts = [
        ("P1", 182_000, "flagged", "product_safety", "dana_k",
         "@shop the kettle I bought from you sparked and burnt my counter. Dangerous!"),
        ("P2", 4_300, "flagged", "billing", "tom_r",
         f"@shop charged twice for order 551-2210, still no refund {EVIL}"),
        ("P3", 120, "flagged", "delivery", "lee_w",
         "@shop where is my parcel? Ordered 9 days ago"),
        ("P3", 45, "new", "website_app", "anna_b", "@shop your app logs me out every day"),
        ("P4", 900, "ignored", None, "happy_sam", "@shop lovely staff in the Leeds store!"),
    ]
    async with store.transaction() as session:
        for n, (priority, followers, state, category, user, text) in enumerate(posts):
            at = now - timedelta(minutes=40 - n * 7)
            session.add(SocialPost(
                platform="x", stream="mentions", external_id=f"18{n:08d}",
                url=f"https://x.com/{user}/status/18{n:08d}", author_id=f"70{n}",
                author_username=user, author_name=user.replace("_", " ").title(),
                author_followers=followers, text=text, language="en", posted_at=at,
                fetched_at=at + timedelta(seconds=20), state=state,
                intent="complaint" if category else "praise", priority=priority,
                category=category,
                sentiment_label="negative" if category else "positive",
                sentiment_score=-0.7 if category else 0.8,
            ))


async def seed_history(store: Store) -> None:
    """Four weeks of tickets through the ticket service (so the events, SLA and CSAT are
    what the real flow writes), for a reports page worth looking at."""
    rng = random.Random(6)
    end = utc_now() - timedelta(minutes=30)
    start = end - timedelta(days=28)
    clock = ManualClock(start)
    rules = TicketRules(sla=SlaPolicy(), clock=clock)
    channels = ["telegram", "webchat", "webchat", "x", "phone", "email", "in_store"]
    categories = ["delivery", "delivery", "billing", "product_quality", "returns",
                  "service_attitude", "website_app", "service_speed"]
    for i in range(70):
        clock.now = start + timedelta(hours=9 * i + rng.uniform(0, 4))
        priority = rng.choice(["P1", "P2", "P2", "P3", "P3", "P3", "P4"])
        async with store.transaction() as s:
            customer = await find_or_create_customer(
                s, name=f"Customer {i}", phone=f"+44 20 7946 {i:04d}", email=None,
                now=clock.now,
            )
            ticket = await create_ticket(s, rules, NewTicket(
                kind="complaint", channel=rng.choice(channels), customer_id=customer.id,
                description=f"Problem number {i}", category=rng.choice(categories),
                priority=priority,
            ))
            number = ticket.id
        if rng.random() < 0.15:
            continue  # still new
        # Mostly within the default SLA targets (P1: 15 min / 4 h … P4: 24 h / 7 days).
        target = {"P1": 1.0, "P2": 5.0, "P3": 14.0, "P4": 40.0}[priority]
        clock.advance(minutes=rng.uniform(0.1, 1.3) * target * 13)
        if clock.now > end:
            continue  # nothing happens in the future
        async with store.transaction() as s:
            await move_ticket(s, rules, number, "in_progress", actor="agent:mei")
        if rng.random() < 0.2:
            continue
        clock.advance(hours=rng.uniform(0.2, 1.2) * target * 3)
        if clock.now > end:
            continue
        async with store.transaction() as s:
            await move_ticket(s, rules, number, "resolved", actor="agent:mei")
        if rng.random() < 0.7 and clock.now < end:
            clock.advance(minutes=30)
            async with store.transaction() as s:
                score = rng.choice([5, 5, 5, 4, 4, 4, 3, 2, 1])
                await record_survey(s, rules, number, score, channel="webchat")


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    store = create_store(f"sqlite+aiosqlite:///{tmp_path / 'careloop.db'}")
    await upgrade(store)
    rules = TicketRules(sla=SlaPolicy())
    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    async with store.transaction() as s:
        secret = await secret_key(s)
        await upsert_agent(s, hasher, username=LEAD, role="admin", password=LEAD_PASSWORD,
                           now=rules.clock(), display_name="Mei Lin")
    await seed_history(store)
    await seed_mentions(store)
    async with serve_desk_with_chat(store, rules, hasher, secret) as base:
        yield Service(store, base)
    await store.close()


async def new_context(browser: Browser, service: Service, **options: Any) -> BrowserContext:
    ctx = await browser.new_context(**options)

    def watch(page: Page) -> None:
        # Every request must stay on our origin; a CSP violation is a console error.
        page.on("request", lambda r: service.requests.append(r.url))
        page.on("websocket", lambda ws: service.requests.append(ws.url))
        page.on("console",
                lambda m: service.problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: service.problems.append(str(e)))

    ctx.on("page", watch)
    return ctx


def expected_refusal(service: Service, status: int) -> None:
    """Chromium logs a console error for a page answered 4xx; this one was the point."""
    logged = f"status of {status} "
    service.problems[:] = [p for p in service.problems if logged not in p]


def assert_same_origin(service: Service) -> None:
    origin = re.escape(service.base.removeprefix("http://"))
    outside = [u for u in service.requests
               if not re.match(rf"^(https?|wss?)://{origin}/", u) and u != "data:,"]
    assert not outside, outside


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    target = DOCS / name
    if os.environ.get("CARELOOP_DOCS_SCREENSHOTS") == "1" or not target.exists():
        await page.screenshot(path=str(target), full_page=True)
        assert target.stat().st_size < 600_000


async def customer_reports_in_the_chat(page: Page, service: Service) -> str:
    """A customer on the web chat reports a lost parcel; returns the ticket number."""
    await page.goto(f"{service.base}/chat")
    await expect(page.locator("#status")).to_have_attribute("data-state", "online",
                                                            timeout=WAIT_MS)

    async def send(text: str) -> None:
        before = await page.locator(".msg-bot").count()
        await page.fill("#text", text)
        await page.keyboard.press("Enter")
        await expect(page.locator(".msg-bot")).not_to_have_count(before, timeout=WAIT_MS)

    await send("My parcel for order 123-4567 never arrived")
    await send("skip")
    before = await page.locator(".msg-bot").count()
    await page.locator(".msg-bot").last.get_by_role("button", name=re.compile("Confirm")).click()
    await expect(page.locator(".msg-bot")).not_to_have_count(before, timeout=WAIT_MS)
    text = await page.locator(".msg-bot", has_text=NUMBER).last.inner_text()
    found = NUMBER.search(text)
    assert found, text
    return found.group()


async def test_a_day_at_the_desk(service: Service, browser: Browser) -> None:
    customer_ctx = await new_context(browser, service, viewport={"width": 390, "height": 760})
    chat = await customer_ctx.new_page()
    chat_number = await customer_reports_in_the_chat(chat, service)

    desk_ctx = await new_context(browser, service, viewport={"width": 1280, "height": 900})
    desk = await desk_ctx.new_page()

    # Log in: a page asked for before login comes back after it.
    await desk.goto(f"{service.base}/queue")
    await expect(desk).to_have_url(re.compile(r"/login\?next="))
    await desk.get_by_label("Username").fill(LEAD)
    await desk.get_by_label("Password").fill("not-the-password")
    await desk.get_by_role("button", name="Log in").click()
    await expect(desk.locator(".alert")).to_contain_text("Wrong username or password")
    expected_refusal(service, 401)
    await desk.get_by_label("Password").fill(LEAD_PASSWORD)
    await desk.get_by_role("button", name="Log in").click()
    await expect(desk).to_have_url(re.compile(r"/queue$"))
    nav = desk.locator("nav.nav")
    for name in ("Review queue", "Tickets", "Reports", "Accounts"):
        await expect(nav.get_by_role("link", name=name)).to_be_visible()
    cookies = {c["name"]: c for c in await desk_ctx.cookies()}
    assert cookies["careloop_session"]["httpOnly"]
    assert cookies["careloop_session"]["sameSite"] == "Lax"
    assert await desk.evaluate("document.cookie") == ""  # no script can read the session

    # The queue: flagged first, most urgent on top, the post's markup shown as text.
    rows = desk.locator("ol.queue > li.mention")
    await expect(rows.first).to_contain_text("sparked and burnt")
    await expect(rows.first.locator(".badge.p1")).to_be_visible()
    await expect(desk.locator("ol.queue")).to_contain_text(EVIL)
    assert await desk.locator("ol.queue img").count() == 0
    assert await desk.evaluate("window.__xss") is None
    await screenshot(desk, SHOTS[0])

    # Work it: the keyboard moves to the third row and dismisses it (queue.js) ...
    third = await rows.nth(2).get_attribute("id")
    await expect(rows.nth(2)).to_contain_text("where is my parcel")
    await desk.locator("h1").click()
    await desk.keyboard.press("j")
    await desk.keyboard.press("j")
    await desk.keyboard.press("j")
    await desk.keyboard.press("d")
    await expect(desk.locator(".notice")).to_be_visible()
    await expect(desk.locator(f"li#{third}")).to_have_count(0)
    await expect(desk.locator("ol.queue")).not_to_contain_text("where is my parcel")

    # ... and the top one becomes a ticket with a click.
    await rows.first.get_by_role("button", name="Create ticket").click()
    notice = desk.locator(".notice")
    await expect(notice).to_contain_text(NUMBER)
    mention_number = NUMBER.search(await notice.inner_text())
    assert mention_number is not None
    await desk.goto(f"{service.base}/tickets/{mention_number.group()}")
    await expect(desk.locator("main")).to_contain_text("sparked and burnt")

    # The web chat customer's ticket: found in the list, moved on its page.
    await nav.get_by_role("link", name="Tickets").click()
    search = desk.locator('input[name="q"]')
    await search.fill("123-4567")  # the order number the customer gave
    await search.press("Enter")
    await desk.get_by_role("link", name=chat_number).first.click()
    await expect(desk).to_have_url(re.compile(rf"/tickets/{chat_number}$"))
    await expect(desk.locator("main")).to_contain_text("123-4567")
    await desk.locator('form.moves button[name="status"][value="in_progress"]').click()
    await expect(desk.locator("dd.status")).to_contain_text("in progress")
    await screenshot(desk, SHOTS[1])

    # The customer, still on the chat page, is told without doing anything.
    last_bot = chat.locator(".msg-bot").last
    await expect(last_bot).to_contain_text("in progress", timeout=WAIT_MS)
    await expect(last_bot).to_contain_text(chat_number)

    # The reports: charts for the period, no inline script or style needed.
    await nav.get_by_role("link", name="Reports").click()
    await expect(desk).to_have_url(re.compile(r"/reports"))
    await expect(desk.locator("main svg").first).to_be_visible()
    await expect(desk.locator("main")).to_contain_text("Delivery", ignore_case=True)
    await screenshot(desk, SHOTS[2])

    # The language switch follows the account.
    await desk.locator(".who").get_by_role("button", name="中文").click()
    await expect(nav.get_by_role("link", name="审核队列")).to_be_visible()
    await expect(nav.get_by_role("link", name="报表")).to_be_visible()

    # Log out: the queue asks for a login again.
    await desk.locator(".who").get_by_role("button", name="退出").click()
    await expect(desk).to_have_url(re.compile(r"/login"))
    await desk.goto(f"{service.base}/queue")
    await expect(desk).to_have_url(re.compile(r"/login\?next="))

    assert_same_origin(service)
    assert not service.problems, service.problems
    await desk_ctx.close()
    await customer_ctx.close()


async def test_an_agent_meets_the_403_page_and_the_headers(
    service: Service, browser: Browser
) -> None:
    async with service.store.transaction() as s:
        await upsert_agent(s, PasswordHasher(time_cost=1, memory_cost=1024), username="sam",
                           role="agent", password="agent-pass-1", now=utc_now())
    ctx = await new_context(browser, service)
    page = await ctx.new_page()
    response = await page.goto(f"{service.base}/login")
    assert response is not None
    headers = await response.all_headers()
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    await page.get_by_label("Username").fill("sam")
    await page.get_by_label("Password").fill("agent-pass-1")
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(re.compile(r"/queue$"))
    await expect(page.locator("nav.nav").get_by_role("link", name="Accounts")).to_have_count(0)
    response = await page.goto(f"{service.base}/admin/accounts")
    assert response is not None and response.status == 403
    await expect(page.locator("main")).to_contain_text("admin role")
    expected_refusal(service, 403)
    assert not service.problems, service.problems
    await ctx.close()
