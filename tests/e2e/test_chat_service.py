"""Whole web-chat conversations through `careloop run`, as a customer has them: report a
problem, get a ticket number, ask for its status, hear about a change the team made."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.service import careloop, careloop_env, free_port, start, wait_healthy

pytestmark = pytest.mark.e2e
NUMBER = re.compile(r"CL-\d+")


class Customer:
    """A person in the web chat: one browser (cookie jar), one socket."""

    def __init__(self, base: str, lang: str) -> None:
        self.base, self.lang = base, lang
        # unsafe=True: keep cookies from an IP address, as a browser does for 127.0.0.1.
        self.http = aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def open(self) -> None:
        assert (await self.http.get("/chat")).status == 200  # sets the visitor cookie
        self.ws = await self.http.ws_connect(f"/chat/ws?lang={self.lang}", origin=self.base)

    async def frames_until_ack(self, cid: str) -> list[dict[str, Any]]:
        assert self.ws is not None
        replies = []
        while True:
            msg = await self.ws.receive(timeout=20)
            frame = json.loads(msg.data)
            if frame["type"] == "ack" and frame.get("id") == cid:
                return replies
            if frame["type"] == "reply":
                replies.append(frame)

    async def send(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        assert self.ws is not None
        cid = uuid.uuid4().hex
        await self.ws.send_json(payload | {"id": cid})
        return await self.frames_until_ack(cid)

    async def say(self, text: str) -> list[dict[str, Any]]:
        return await self.send({"type": "message", "text": text})

    async def press(self, reply: dict[str, Any], prefix: str) -> list[dict[str, Any]] | None:
        for row in reply.get("buttons") or []:
            for b in row:
                if b["data"].startswith(prefix):
                    return await self.send({"type": "button", "data": b["data"],
                                            "ref": reply.get("ref")})
        return None

    async def report(self, text: str) -> tuple[str, list[str]]:
        """Writes the problem, then answers like a hurried customer (accept, skip, confirm)
        until the bot gives a ticket number."""
        seen: list[str] = []
        replies = await self.say(text)
        for _ in range(12):
            seen += [r["text"] for r in replies]
            for r in replies:
                if found := NUMBER.search(r["text"]):
                    return found.group(), seen
            assert replies, f"the bot went silent after: {seen}"
            last = replies[-1]
            replies = (
                await self.press(last, "confirm:")
                or await self.press(last, "cat:")
                or await self.press(last, "skip:")
                or await self.press(last, "menu:complaint")
                or await self.say("skip" if self.lang == "en" else "跳过")
            )
        raise AssertionError(f"no ticket number after: {seen}")

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        await self.http.close()


@pytest.fixture
def service(tmp_path: Path) -> Any:
    port = free_port()
    env = careloop_env(f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}", port)
    proc = start(env, log=tmp_path / "run.log")
    wait_healthy(port, proc)
    assert careloop("agents", "add", "mei", "--role", "agent", env=env).returncode == 0
    token = careloop("agents", "token", "mei", env=env).stdout.strip()
    yield f"http://127.0.0.1:{port}", token
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


def test_english_complaint_status_and_update_in_the_web_chat(service: Any) -> None:
    base, token = service

    async def go() -> None:
        mei = Customer(base, "en")
        await mei.open()
        try:
            number, seen = await mei.report(
                "My parcel for order 123-4567 never arrived and nobody answers the phone"
            )
            assert not any("order number" in s.lower() for s in seen), seen  # it had it
            [status] = await mei.say(f"/status {number}")
            assert number in status["text"] and "new" in status["text"]
            api = {"Authorization": f"Bearer {token}"}
            r = await mei.http.post(f"/api/tickets/{number}/status",
                                    json={"status": "in_progress"}, headers=api)
            assert r.status == 200
            assert mei.ws is not None
            pushed = None
            for _ in range(20):
                frame = json.loads((await mei.ws.receive(timeout=15)).data)
                if frame["type"] == "reply" and number in frame["text"]:
                    pushed = frame["text"]
                    break
            assert pushed is not None and "in progress" in pushed
            # The same browser comes back later: its tickets are still there.
            await mei.ws.close()
            await mei.open()
            [listing] = await mei.say("/status")
            assert number in listing["text"]
        finally:
            await mei.close()

    asyncio.run(go())


def test_chinese_complaint_and_someone_elses_number(service: Any) -> None:
    base, _ = service

    async def go() -> None:
        li, other = Customer(base, "zh"), Customer(base, "zh")
        await li.open()
        await other.open()
        try:
            number, _ = await li.report("我昨天买的牛奶已经过期了，订单号 123-4567，太过分了")
            [status] = await li.say(f"我的投诉{number}怎么样了")
            assert number in status["text"] and "新建" in status["text"]
            [theirs] = await other.say(f"/status {number}")
            [unknown] = await other.say("/status CL-99999999")
            assert theirs["text"].replace(number, "#") == unknown["text"].replace(
                "CL-99999999", "#")
        finally:
            await li.close()
            await other.close()

    asyncio.run(go())
