"""The web chat with the real dialogue and the real notifications: what a visitor reads, in
English and Chinese, from the complaint to the satisfaction score."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from argon2 import PasswordHasher
from sqlalchemy import select

from bot import notifications
from bot.dialogue import make_dialogue
from bot.webchat import WebChat
from bot.webchat_frames import ChatLimits
from desk.app import make_app
from desk.context import DeskContext
from storage.db import Store
from storage.dispatch import DispatchPolicy, dispatch_once
from storage.intake import TicketIntake
from storage.models import Ticket
from storage.sla import SlaPolicy
from storage.tickets import TicketRules, move_ticket
from storage.tickets import reply as agent_reply
from tests.integration.helpers import agent
from tests.integration.test_dialogue_support import shared_interpreter
from tests.integration.test_webchat import SECRET, frame, turn, until

NUMBER = re.compile(r"CL-\d+")


class Visitor:
    """One browser: its own cookie jar, so its own visitor id."""

    def __init__(self, server: TestServer, lang: str) -> None:
        self.server = server
        self.lang = lang
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.buttons: list[dict[str, Any]] = []

    async def open(self) -> dict[str, Any]:
        assert (await self.http.get(self.server.make_url("/chat"))).status == 200
        origin = str(self.server.make_url("/")).rstrip("/")
        self.ws = await self.http.ws_connect(
            self.server.make_url(f"/chat/ws?lang={self.lang}"), origin=origin
        )
        history: dict[str, Any] = await frame(self.ws)
        assert history["type"] == "history"
        return history

    async def _turn(self, payload: dict[str, Any]) -> str:
        assert self.ws is not None
        replies = await turn(self.ws, payload)
        for r in replies:
            if r["buttons"]:
                self.buttons = [b | {"ref": r["ref"]} for row in r["buttons"] for b in row]
        return "\n".join(r["text"] for r in replies)

    async def say(self, text: str) -> str:
        return await self._turn({"type": "message", "text": text})

    async def press(self, prefix: str) -> str:
        b = next(b for b in self.buttons if b["data"].startswith(prefix))
        return await self._turn({"type": "button", "data": b["data"], "ref": b["ref"]})

    async def pushed(self) -> dict[str, Any]:
        assert self.ws is not None
        reply = await until(self.ws, "reply")
        if reply["buttons"]:
            self.buttons = [b | {"ref": reply["ref"]} for row in reply["buttons"] for b in row]
        return reply

    async def leave(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None

    async def close(self) -> None:
        await self.leave()
        await self.http.close()


class Shop:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.rules = TicketRules(sla=SlaPolicy())
        dialogue = make_dialogue(store, self.rules, shared_interpreter())
        self.chat = WebChat(
            store, dialogue, SECRET, notifications.render, limits=ChatLimits(poll_seconds=0.1)
        )
        self.intake = TicketIntake(store, self.rules)
        ctx = DeskContext(
            store=store, rules=self.rules, intake=self.intake,
            hasher=PasswordHasher(time_cost=1, memory_cost=1024),
        )
        self.server = TestServer(make_app(ctx, extra=[self.chat.hook]))
        self.visitors: list[Visitor] = []

    def visitor(self, lang: str = "en-US") -> Visitor:
        v = Visitor(self.server, lang)
        self.visitors.append(v)
        return v

    async def worker(self) -> int:
        return await dispatch_once(
            self.store, {"webchat": self.chat.sender}, DispatchPolicy(), worker="w"
        )

    async def ticket(self, number: str) -> Ticket:
        async with self.store.read() as s:
            found = (await s.scalars(
                select(Ticket).where(Ticket.id == int(number.removeprefix("CL-")))
            )).one()
            return found

    async def move(self, number: str, status: str) -> None:
        async with self.store.transaction() as s:
            await move_ticket(s, self.rules, int(number[3:]), status, actor="agent:alice")


@pytest.fixture
async def shop(store: Store) -> AsyncIterator[Shop]:
    s = Shop(store)
    await s.server.start_server()
    yield s
    for v in s.visitors:
        await v.close()
    await s.server.close()
    await s.intake.close()


async def complain_in_english(v: Visitor) -> str:
    first = await v.say("My parcel for order 123-4567 never arrived")
    assert "photo" in first.lower()
    summary = await v.say("skip")
    assert "123-4567" in summary and "delivery" in summary
    confirmation = await v.press("confirm:")
    number = NUMBER.search(confirmation)
    assert number, confirmation
    return number.group()


async def test_an_english_complaint_from_report_to_satisfaction(shop: Shop) -> None:
    v = shop.visitor()
    assert (await v.open())["items"] == []
    number = await complain_in_english(v)
    assert (await shop.ticket(number)).channel == "webchat"

    # Back later: the same customer, the conversation still on screen, /status knows them.
    await v.leave()
    history = await v.open()
    texts = [i["text"] for i in history["items"]]
    assert texts[0] == "My parcel for order 123-4567 never arrived"
    assert any(number in t for t in texts)
    # The pressed button reads as its label, not as its data.
    assert not any(t.startswith("[button") for t in texts)
    status = await v.say("/status")
    assert number in status and "new" in status

    # The team works the ticket; the open page hears of it.
    await shop.move(number, "in_progress")
    await shop.worker()
    update = await v.pushed()
    assert number in update["text"] and "in progress" in update["text"]

    await shop.move(number, "resolved")
    await shop.worker()
    texts = [(await v.pushed())["text"]]
    if not v.buttons:
        texts.append((await v.pushed())["text"])
    assert any("resolved" in t for t in texts)
    assert [b["label"] for b in v.buttons][:5] == ["1", "2", "3", "4", "5"]
    await v.press(next(b["data"] for b in v.buttons if b["label"] == "5"))
    assert (await shop.ticket(number)).csat == 5


async def test_an_agent_reply_while_away_waits_in_the_history(shop: Shop) -> None:
    v = shop.visitor()
    await v.open()
    number = await complain_in_english(v)
    await v.leave()
    alice = await agent(shop.store)
    async with shop.store.transaction() as s:
        await agent_reply(s, shop.rules, int(number[3:]), "We found your parcel <b>!</b>",
                          public=True, agent=alice)
    assert await shop.worker() >= 1
    history = await v.open()
    assert "We found your parcel <b>!</b>" in history["items"][-1]["text"]


async def test_a_chinese_conversation(shop: Shop) -> None:
    v = shop.visitor("zh-CN")
    await v.open()
    first = await v.say("订单 123-4567 的快递一直没到")
    assert "照片" in first and "跳过" in first
    summary = await v.say("跳过")
    assert "配送" in summary and "123-4567" in summary
    confirmation = await v.say("是")
    number = NUMBER.search(confirmation)
    assert number, confirmation
    await v.leave()
    history = await v.open()
    assert history["language"] == "zh"
    status = await v.say("/status")
    assert number.group() in status and "新建" in status


async def test_two_visitors_never_see_each_other(shop: Shop) -> None:
    mei, sam = shop.visitor(), shop.visitor()
    await mei.open()
    number = await complain_in_english(mei)
    assert (await sam.open())["items"] == []
    mine = await sam.say(f"/status {number}")
    unknown = await sam.say("/status CL-999999")
    assert mine.replace(number, "CL-?") == unknown.replace("CL-999999", "CL-?")
