"""The fake Bot API checked against the published API (api.json) and against what Telegram does
on the wire, so tests that pass against it would pass against Telegram."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from telegram import Bot, Update

from tests.fakes import telegram_updates as tu
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.telegram_spec import API_JSON, SpecViolation, load_spec

EXAMPLES = API_JSON.parent / "official_webhook_example_updates.jsonl"
mei = tu.Customer(5001, "Mei", "en")


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    yield server
    await server.stop()


async def call(
    fake: FakeTelegram, method: str, *, json_body: dict[str, Any] | None = None,
    form: dict[str, str] | None = None, token: str | None = None,
) -> tuple[int, dict[str, Any]]:
    url = f"{fake.api_base}/bot{token or fake.token}/{method}"
    async with aiohttp.ClientSession() as http, http.post(
        url, json=json_body, data=form
    ) as response:
        return response.status, await response.json()


def test_every_method_the_fake_implements_is_a_bot_api_method() -> None:
    spec = load_spec()
    implemented = [n.removeprefix("_api_") for n in dir(FakeTelegram) if n.startswith("_api_")]
    assert "sendMessage" in implemented and "getUpdates" in implemented
    assert [m for m in implemented if spec.method(m) is None] == []


def test_every_update_the_fake_builds_is_a_valid_update() -> None:
    spec = load_spec()
    fake = FakeTelegram()
    for action in (
        lambda: fake.text(mei, "hello"), lambda: fake.command(mei, "/status CL-12"),
        lambda: fake.photo(mei, b"jpeg", caption="box"), lambda: fake.sticker(mei),
        lambda: fake.voice(mei), lambda: fake.location(mei),
        lambda: fake.document(mei, b"%PDF", "r.pdf", "application/pdf"),
        lambda: fake.group_text(mei, -1001, "hi", supergroup=True),
        lambda: fake.edit(mei, 1, "hello!"),
    ):
        uid = action()  # inject() itself checks against api.json and raises if wrong
        update = fake.pending_update(uid)
        assert update is not None
        spec.check_object(update, "Update")
        assert Update.de_json(update, Bot(fake.token)) is not None  # PTB reads it too


def test_the_spec_check_catches_what_telegram_would_reject() -> None:
    spec = load_spec()
    bad = [
        ("sendMessage", {"text": "hi"}, "missing required parameter(s) chat_id"),
        ("sendMessage", {"chat_id": 1, "text": "hi", "colour": "red"}, "unknown parameter"),
        ("sendMessage", {"chat_id": 1.5, "text": "hi"}, "expected"),
        ("sendMessage", {"chat_id": 1, "text": "hi", "reply_markup": {"inline_keyboard": [[{
            "text": "x", "callback_data": "y", "colour": "red"}]]}}, "unknown field"),
        ("answerCallbackQuery", {"callback_query_id": 5}, "expected String"),
    ]
    for method, params, problem in bad:
        with pytest.raises(SpecViolation, match=problem.replace("(", r"\(").replace(")", r"\)")):
            spec.check_params(method, params, form=False)
    # Form encoding: numbers as text and objects as JSON text are what Telegram accepts.
    decoded = spec.check_params("sendMessage", {
        "chat_id": "5001", "text": "hi",
        "reply_markup": json.dumps({"inline_keyboard": [[{"text": "Yes", "callback_data": "y"}]]}),
    }, form=True)
    assert decoded["chat_id"] == 5001 and decoded["reply_markup"]["inline_keyboard"]


def test_fake_updates_carry_what_telegrams_own_examples_carry() -> None:
    """Telegram's webhook examples are old (no `is_bot`, chats without `type`: PTB 22 cannot
    read them any more); the fake's updates of the same kinds carry every field of theirs that
    the current API still has, plus what it now requires."""
    spec = load_spec()
    fields = {name: {f["name"] for f in t.get("fields", [])} for name, t in spec.types.items()}
    examples = {}
    for line in Path(EXAMPLES).read_text().splitlines():
        example = json.loads(line)
        examples[example["example"]] = example["update"]
    fake = FakeTelegram()
    mine = {
        "message_text": fake.pending_update(fake.command(mei, "/start")),
        "edited_message": fake.pending_update(fake.edit(mei, 1, "Edited text")),
        "voice_message": fake.pending_update(fake.voice(mei)),
        "message_with_document": fake.pending_update(
            fake.document(mei, b"%PDF", "r.pdf", "application/pdf")),
    }
    for name, update in mine.items():
        official = examples[name]
        assert update is not None
        kind = next(k for k in official if k != "update_id")
        assert kind in update, name
        still_current = {k for k in official[kind] if k in fields["Message"]}
        assert still_current <= set(update[kind]), (name, still_current - set(update[kind]))
        for part in ("chat", "from"):
            old = {k for k in official[kind][part] if k in fields["Chat" if part == "chat"
                                                                   else "User"]}
            assert old <= set(update[kind][part]) | {"last_name", "username"}, (name, part)


async def test_answers_match_what_each_method_returns(fake: FakeTelegram) -> None:
    spec = load_spec()
    fake.text(mei, "hi")
    stored = fake.add_file(b"x" * 100, "photos", ".jpg")
    results = {}
    for method, body in [
        ("getMe", {}),
        ("getUpdates", {"timeout": 0}),
        ("sendMessage", {"chat_id": mei.id, "text": "Hello", "reply_markup": {
            "inline_keyboard": [[{"text": "Yes", "callback_data": "yes"}]]}}),
        ("getFile", {"file_id": stored.file_id}),
        ("sendChatAction", {"chat_id": mei.id, "action": "typing"}),
        ("getWebhookInfo", {}),
        ("setMyCommands", {"commands": [{"command": "start", "description": "Menu"}]}),
        ("getMyCommands", {}),
    ]:
        status, answer = await call(fake, method, json_body=body)
        assert status == 200 and answer["ok"] is True, (method, answer)
        spec.check_result(method, answer["result"])
        results[method] = answer["result"]
    assert results["getUpdates"][0]["message"]["text"] == "hi"
    assert results["sendMessage"]["reply_markup"]["inline_keyboard"][0][0]["text"] == "Yes"
    async with aiohttp.ClientSession() as http, http.get(
        f"{fake.api_base}/file/bot{fake.token}/{results['getFile']['file_path']}"
    ) as response:
        assert await response.read() == b"x" * 100
    assert fake.violations == []


async def test_form_and_json_bodies_are_both_understood(fake: FakeTelegram) -> None:
    fake.add_customer(mei)
    markup = json.dumps({"inline_keyboard": [[{"text": "1", "callback_data": "csat:1"}]]})
    status, answer = await call(fake, "sendMessage", form={
        "chat_id": str(mei.id), "text": "Rate us", "reply_markup": markup})
    assert status == 200 and answer["result"]["reply_markup"]["inline_keyboard"]
    status, _ = await call(fake, "sendMessage", json_body={"chat_id": mei.id, "text": "Thanks"})
    assert status == 200
    assert [c.encoding for c in fake.calls_of("sendMessage")] == ["form", "json"]
    assert fake.texts_to(mei.id) == ["Rate us", "Thanks"]


async def test_what_telegram_rejects_is_rejected_and_recorded(fake: FakeTelegram) -> None:
    fake.add_customer(mei)
    cases = [
        ({"chat_id": mei.id, "text": "x" * 4097}, "message is too long"),
        ({"chat_id": mei.id, "text": "  "}, "message text is empty"),
        ({"chat_id": mei.id, "text": "hi", "reply_markup": {"inline_keyboard": [[
            {"text": "b", "callback_data": "d" * 65}]]}}, "BUTTON_DATA_INVALID"),
        ({"chat_id": mei.id, "text": "hi", "parse_mode": "markdown2"}, "parse_mode"),
        ({"chat_id": mei.id}, "missing required"),
        ({"chat_id": mei.id, "text": "hi", "disable_web_page_preview": True}, "unknown"),
    ]
    for body, problem in cases:
        status, answer = await call(fake, "sendMessage", json_body=body)
        assert status == 400 and answer["ok"] is False and answer["error_code"] == 400
        assert answer["description"].startswith("Bad Request: ") and problem in answer[
            "description"], answer
    assert len(fake.violations) == len(cases)
    assert fake.texts_to(mei.id) == []
    # 4096 characters exactly is fine (an emoji counts as two).
    status, _ = await call(fake, "sendMessage", json_body={"chat_id": mei.id, "text": "x" * 4096})
    assert status == 200
    status, _ = await call(fake, "sendMessage", json_body={
        "chat_id": mei.id, "text": "😀" * 2049})
    assert status == 400


async def test_errors_have_telegrams_shape(fake: FakeTelegram) -> None:
    status, answer = await call(fake, "getMe", token="1:wrong")
    assert (status, answer) == (401, {"ok": False, "error_code": 401,
                                      "description": "Unauthorized"})
    status, answer = await call(fake, "sendTelepathy", json_body={})
    assert status == 404 and answer["description"] == "Not Found"
    status, answer = await call(fake, "sendMessage", json_body={"chat_id": 42, "text": "hi"})
    assert (status, answer["description"]) == (400, "Bad Request: chat not found")
    fake.add_customer(mei)
    fake.fail("sendMessage", 429, retry_after=3)
    status, answer = await call(fake, "sendMessage", json_body={"chat_id": mei.id, "text": "x"})
    assert status == 429 and answer["parameters"] == {"retry_after": 3}
    assert answer["description"] == "Too Many Requests: retry after 3"
    fake.block(mei.id)
    status, answer = await call(fake, "sendMessage", json_body={"chat_id": mei.id, "text": "x"})
    assert (status, answer["description"]) == (403, "Forbidden: bot was blocked by the user")
    status, answer = await call(fake, "SENDMESSAGE", json_body={"chat_id": mei.id, "text": "x"})
    assert status == 403  # method names are case-insensitive


async def test_get_updates_long_polls_and_confirms_by_offset(fake: FakeTelegram) -> None:
    first = fake.text(mei, "one")
    status, answer = await call(fake, "getUpdates", json_body={"timeout": 0})
    assert [u["update_id"] for u in answer["result"]] == [first]
    # Not confirmed yet: asked again, the same update comes back.
    _, again = await call(fake, "getUpdates", json_body={"timeout": 0})
    assert [u["update_id"] for u in again["result"]] == [first]
    # A long poll waits for the next update and returns as soon as it arrives.
    poll = asyncio.create_task(call(fake, "getUpdates", json_body={
        "offset": first + 1, "timeout": 5, "allowed_updates": ["message"]}))
    await asyncio.sleep(0.2)
    assert not poll.done()
    second = fake.text(mei, "two")
    _, answer = await asyncio.wait_for(poll, 2)
    assert [u["update_id"] for u in answer["result"]] == [second]
    assert fake.pending_update(first) is None  # confirmed by the offset
    # A second poller ends the first with 409, as Telegram does.
    older = asyncio.create_task(call(fake, "getUpdates", json_body={
        "offset": second + 1, "timeout": 5}))
    await asyncio.sleep(0.2)
    newer = asyncio.create_task(call(fake, "getUpdates", json_body={
        "offset": second + 1, "timeout": 1}))
    status, answer = await asyncio.wait_for(older, 3)
    assert status == 409 and "terminated by other getUpdates" in answer["description"]
    await newer


async def test_a_webhook_gets_updates_with_the_secret_and_blocks_polling(
    fake: FakeTelegram,
) -> None:
    from aiohttp import web

    got: list[tuple[str | None, dict[str, Any]]] = []
    answers = iter([500, 200, 200])

    async def hook(request: web.Request) -> web.Response:
        got.append((request.headers.get("X-Telegram-Bot-Api-Secret-Token"),
                    await request.json()))
        return web.Response(status=next(answers))

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        status, answer = await call(fake, "setWebhook", json_body={"url": "http://example.com/h"})
        assert status == 400 and "HTTPS" in answer["description"]
        status, answer = await call(fake, "setWebhook", json_body={
            "url": url, "secret_token": "bad secret!"})
        assert status == 400 and fake.violations  # not a character Telegram allows
        fake.violations.clear()
        status, _ = await call(fake, "setWebhook", json_body={"url": url, "secret_token": "abc"})
        assert status == 200
        uid = fake.text(mei, "hello")
        for _ in range(100):
            if len(got) >= 2:
                break
            await asyncio.sleep(0.02)
        # The first POST got a 500: Telegram tries again with the same update.
        assert [(s, u["update_id"]) for s, u in got[:2]] == [("abc", uid), ("abc", uid)]
        _, info = await call(fake, "getWebhookInfo", json_body={})
        assert info["result"]["url"] == url and "500" in info["result"]["last_error_message"]
        load_spec().check_result("getWebhookInfo", info["result"])
        status, answer = await call(fake, "getUpdates", json_body={})
        assert status == 409 and "webhook is active" in answer["description"]
    finally:
        await runner.cleanup()
