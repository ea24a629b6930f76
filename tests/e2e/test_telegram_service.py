"""Telegram through `careloop run`, against the fake Bot API: a customer reports a problem,
gets a ticket number, and hears about the team's status change (in polling and webhook mode)."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.service import careloop, careloop_env, free_port, start, wait_healthy
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.telegram_updates import Customer

pytestmark = pytest.mark.e2e
NUMBER = re.compile(r"CL-\d+")


async def _texts_after(fake: FakeTelegram, chat: int, before: int) -> str:
    await fake.wait_for_messages(chat, before + 1, 20.0)
    await asyncio.sleep(0.3)  # a reply may come in several messages
    return "\n".join(fake.texts_to(chat)[before:])


async def _say(fake: FakeTelegram, who: Customer, text: str) -> str:
    before = len(fake.bot_messages(who.id))
    fake.text(who, text)
    return await _texts_after(fake, who.id, before)


async def _press(fake: FakeTelegram, who: Customer, prefix: str) -> str | None:
    """Presses a button of the newest message that has buttons, as a person would (older
    keyboards stay on screen, but belong to questions already answered)."""
    asking = [m for m in fake.bot_messages(who.id) if m.get("reply_markup")]
    if not asking:
        return None
    m = asking[-1]
    for row in m["reply_markup"].get("inline_keyboard", []):
        for b in row:
            if b["callback_data"].startswith(prefix):
                before = len(fake.bot_messages(who.id))
                fake.press(who, m["message_id"], b["callback_data"])
                return await _texts_after(fake, who.id, before)
    return None


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_a_telegram_customer_gets_a_ticket_and_its_status_updates(
    fake: FakeTelegram, tmp_path: Path, mode: str
) -> None:
    port = free_port()
    extra = {"CARELOOP_TELEGRAM_TOKEN": fake.token, "CARELOOP_TELEGRAM_MODE": mode}
    if mode == "webhook":
        extra["CARELOOP_TELEGRAM_WEBHOOK_URL"] = f"http://127.0.0.1:{port}/telegram/hook"
        extra["CARELOOP_TELEGRAM_WEBHOOK_SECRET"] = "s3cret-token_A"
    env = careloop_env(f"sqlite+aiosqlite:///{tmp_path / 'tg.db'}", port, **extra)
    env["CARELOOP_TELEGRAM_API_BASE"] = fake.api_base
    proc = start(env, log=tmp_path / "run.log")
    try:
        await asyncio.to_thread(wait_healthy, port, proc)
        mei = Customer(4242, "Mei", "en")
        fake.add_customer(mei)
        assert "Mei" in await _say(fake, mei, "/start")
        await _say(fake, mei, "The blender I bought at the Riverside store broke after one day")
        answer = ""
        for _ in range(8):
            last = "\n".join(fake.texts_to(mei.id)[-3:])
            if NUMBER.search(last):
                answer = last
                break
            answer = (await _press(fake, mei, "confirm:") or await _press(fake, mei, "cat:")
                      or await _press(fake, mei, "skip:") or await _say(fake, mei, "skip"))
        number = NUMBER.search(answer or "\n".join(fake.texts_to(mei.id)))
        assert number, fake.texts_to(mei.id)

        added = careloop("agents", "add", "ops", "--role", "agent", env=env)
        assert added.returncode == 0, added.stderr
        token = careloop("agents", "token", "ops", env=env).stdout.strip()
        before = len(fake.bot_messages(mei.id))
        async with aiohttp.ClientSession() as http:
            r = await http.post(
                f"http://127.0.0.1:{port}/api/tickets/{number.group()}/status",
                json={"status": "in_progress"}, headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status == 200
        update = await _texts_after(fake, mei.id, before)
        assert number.group() in update and "in progress" in update
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 10)
    log = (tmp_path / "run.log").read_text()
    assert fake.token not in log  # the token never reaches the log
