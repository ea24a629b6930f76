"""The real python-telegram-bot Application against the fake Bot API over HTTP, in polling and
in webhook mode: what a customer sees in their Telegram chat."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import aiohttp
import pytest
from sqlalchemy import func, select

from bot.channel import MAX_MESSAGE_CHARS
from bot.telegram import TelegramChannel
from storage import outbox
from storage.clock import ManualClock, utc_now
from storage.db import Store
from storage.dispatch import DispatchPolicy, dispatch_once
from storage.models import OutboxMessage
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.telegram_harness import LONG_LINE, WEBHOOK_SECRET, EchoDialogue, running_channel
from tests.fakes.telegram_updates import Customer

MODES = ["polling", "webhook"]
mei = Customer(5001, "Mei", "en")
li = Customer(5002, "Li", "zh-hans")


async def pending_replies(store: Store) -> int:
    async with store.read() as session:
        return int(await session.scalar(
            select(func.count()).where(OutboxMessage.status == outbox.PENDING)
        ) or 0)


@pytest.mark.parametrize("mode", MODES)
async def test_a_conversation_with_buttons(fake: FakeTelegram, store: Store, mode: str) -> None:
    async with running_channel(fake, store, mode) as channel:  # type: ignore[arg-type]
        fake.command(mei, "/start")
        [welcome] = await fake.wait_for_messages(mei.id, 1)
        assert welcome["text"] == "Welcome! Is this about an order?"
        labels = [b["text"] for row in welcome["reply_markup"]["inline_keyboard"] for b in row]
        assert labels == ["Yes", "No"]

        fake.press(mei, welcome["message_id"], "order:yes")
        messages = await fake.wait_for_messages(mei.id, 2)
        assert messages[-1]["text"] == "You chose order:yes."
        assert len(fake.answered) == 1  # the button stopped spinning

        fake.text(mei, "my parcel is late")
        messages = await fake.wait_for_messages(mei.id, 3)
        assert messages[-1]["text"] == "echo: my parcel is late"
        dialogue = channel.dialogue
        assert isinstance(dialogue, EchoDialogue)
        first = dialogue.seen[0]
        assert (first.customer_ref, first.language_hint, first.display_name) == (
            "5001", "en", "Mei")
        assert first.message_ref is not None and first.message_ref.startswith("tg:")
        assert dialogue.seen[1].button_ref == str(welcome["message_id"])
    # Replies sent inline are marked delivered: the outbox worker will not send them again.
    assert await pending_replies(store) == 0
    assert fake.commands  # the command menu was published


@pytest.mark.parametrize("mode", MODES)
async def test_a_photo_is_fetched_and_a_huge_file_refused(
    fake: FakeTelegram, store: Store, mode: str
) -> None:
    picture = b"\xff\xd8\xff\xe0" + b"jpeg" * 50_000
    async with running_channel(fake, store, mode) as channel:  # type: ignore[arg-type]
        fake.photo(mei, picture, caption="the box was crushed")
        [got] = await fake.wait_for_messages(mei.id, 1)
        assert got["text"] == f"Got your photo ({len(picture)} bytes)."
        dialogue = channel.dialogue
        assert isinstance(dialogue, EchoDialogue)
        [attachment] = dialogue.seen[-1].attachments
        assert attachment.content == picture and dialogue.seen[-1].text == "the box was crushed"
        assert fake.calls_of("getFile") and fake.calls_of("file")

        fake.document(li, b"%PDF" + b"0" * (11 * 1024 * 1024), "receipt.pdf", "application/pdf")
        [refusal] = await fake.wait_for_messages(li.id, 1)
        assert "10 MB" in refusal["text"] and "文件太大" in refusal["text"]
        assert len(dialogue.seen) == 1  # the oversized file never reached the dialogue


@pytest.mark.parametrize("mode", MODES)
async def test_stickers_voice_and_locations_get_a_polite_answer(
    fake: FakeTelegram, store: Store, mode: str
) -> None:
    async with running_channel(fake, store, mode):  # type: ignore[arg-type]
        fake.sticker(mei)
        await fake.wait_for_messages(mei.id, 1)
        fake.voice(mei)
        await fake.wait_for_messages(mei.id, 2)
        fake.location(mei)
        texts = [m["text"] for m in await fake.wait_for_messages(mei.id, 3)]
    assert texts == [
        "Sorry, I can't read a sticker yet.",
        "Sorry, I can't read a voice yet.",
        "Sorry, I can't read a location yet.",
    ]


@pytest.mark.parametrize("mode", MODES)
async def test_group_chats_are_asked_to_write_privately_once(
    fake: FakeTelegram, store: Store, mode: str
) -> None:
    group = -100200300
    async with running_channel(fake, store, mode) as channel:  # type: ignore[arg-type]
        fake.group_text(mei, group, "/start")
        [refusal] = await fake.wait_for_messages(group, 1)
        fake.group_text(li, group, "hello?")
        fake.text(mei, "ping")  # a private message after it: the group one was handled first
        await fake.wait_for_messages(mei.id, 1)
        assert "message me privately" in refusal["text"]
        assert len(fake.bot_messages(group)) == 1
        dialogue = channel.dialogue
        assert isinstance(dialogue, EchoDialogue)
        assert [i.text for i in dialogue.seen] == ["ping"]  # no group text reached it


@pytest.mark.parametrize("mode", MODES)
async def test_an_edit_is_not_a_new_message(fake: FakeTelegram, store: Store, mode: str) -> None:
    async with running_channel(fake, store, mode) as channel:  # type: ignore[arg-type]
        fake.text(mei, "order 123")
        await fake.wait_for_messages(mei.id, 1)
        first_message = next(iter(fake.chats[mei.id].messages))
        fake.edit(mei, first_message, "order 124")
        notice = (await fake.wait_for_messages(mei.id, 2))[-1]
        assert "did not see your edit" in notice["text"]
        dialogue = channel.dialogue
        assert isinstance(dialogue, EchoDialogue)
        assert [i.text for i in dialogue.seen] == ["order 123"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_long_reply_is_split_on_line_boundaries(
    fake: FakeTelegram, store: Store, mode: str
) -> None:
    async with running_channel(fake, store, mode):  # type: ignore[arg-type]
        fake.command(mei, "/long")
        expected = "\n".join(LONG_LINE.format(n=n) for n in range(120))
        assert len(expected) > MAX_MESSAGE_CHARS
        messages = await fake.wait_for_messages(mei.id, 3)
        await asyncio.sleep(0.2)
        parts = [m["text"] for m in fake.bot_messages(mei.id)]
    assert len(parts) == 3
    assert all(len(p) <= MAX_MESSAGE_CHARS for p in parts)
    assert "\n".join(parts) == expected  # every line intact, in order
    assert messages[0]["text"].endswith("on its way.")


@pytest.mark.parametrize("mode", MODES)
async def test_a_429_is_waited_out_and_the_reply_still_arrives(
    fake: FakeTelegram, store: Store, mode: str
) -> None:
    fake.fail("sendMessage", 429, retry_after=1, chat_id=mei.id)
    async with running_channel(fake, store, mode):  # type: ignore[arg-type]
        fake.text(mei, "hello")
        started = time.monotonic()
        [reply] = await fake.wait_for_messages(mei.id, 1)
        waited = time.monotonic() - started
    assert reply["text"] == "echo: hello"
    assert waited >= 1.0  # Telegram said retry after 1 s; the bot did not hammer it
    sends = fake.calls_of("sendMessage")
    assert [c.status for c in sends] == [429, 200]
    assert sends[1].at - sends[0].at >= 1.0
    assert await pending_replies(store) == 0


async def test_a_long_reply_cut_short_is_finished_by_the_outbox_without_repeats(
    fake: FakeTelegram, store: Store
) -> None:
    # The first of three parts goes out, the second meets a 500: the worker sends the second
    # and third, not the first again.
    fake.fail("sendMessage", 500, chat_id=mei.id, after=1)
    async with running_channel(fake, store, "webhook") as channel:
        fake.command(mei, "/long")
        for _ in range(100):
            if len(fake.calls_of("sendMessage")) >= 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        assert len(fake.bot_messages(mei.id)) == 1
        later = ManualClock(utc_now() + timedelta(minutes=1))  # past the dialogue's grace
        policy = DispatchPolicy(batch_size=10)
        assert await dispatch_once(store, {"telegram": channel.sender}, policy, worker="w",
                                   clock=later) == 1
    parts = [m["text"] for m in fake.bot_messages(mei.id)]
    assert "\n".join(parts) == "\n".join(LONG_LINE.format(n=n) for n in range(120))
    assert len(parts) == 3  # each part once, in order
    assert await pending_replies(store) == 0


async def test_a_429_longer_than_the_reply_deadline_leaves_the_reply_to_the_outbox(
    fake: FakeTelegram, store: Store
) -> None:
    # Waiting out Telegram's 2 s would end after the deadline (0.5 s here, 8 s by default,
    # within the dialogue's 15 s grace): the outbox worker would send the reply too, twice.
    fake.fail("sendMessage", 429, retry_after=2, chat_id=mei.id)
    async with running_channel(fake, store, "webhook", reply_deadline=0.5):
        fake.text(mei, "hello")
        for _ in range(100):
            if fake.calls_of("sendMessage"):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.5)  # past the retry_after: the channel did not send again
    assert [c.status for c in fake.calls_of("sendMessage")] == [429]
    assert fake.texts_to(mei.id) == []
    assert await pending_replies(store) == 1  # still the worker's to send, once


async def test_a_redelivered_webhook_update_is_answered_once(
    fake: FakeTelegram, store: Store
) -> None:
    async with running_channel(fake, store, "webhook"):
        uid = fake.text(mei, "where is my parcel?")
        await fake.wait_for_messages(mei.id, 1)
        # Telegram did not get our 200 (say, a proxy timed out) and posts the update again.
        fake.redeliver(uid, {"message": fake.chats[mei.id].messages[1]})
        fake.text(mei, "thanks")
        await fake.wait_for_messages(mei.id, 2)
        await asyncio.sleep(0.2)
        assert fake.texts_to(mei.id) == ["echo: where is my parcel?", "echo: thanks"]
        assert [s for u, s in fake.webhook_posts if u == uid] == [200, 200]


async def test_polling_redelivers_after_a_crash_and_the_duplicate_is_dropped(
    fake: FakeTelegram, store: Store
) -> None:
    """The first process answers but dies before confirming the update (its next getUpdates
    never reaches Telegram); the next process gets the update again and stays quiet."""
    dialogue = EchoDialogue(store)
    async with running_channel(fake, store, "polling", dialogue=dialogue):
        uid = fake.text(mei, "my order is missing")
        await fake.wait_for_messages(mei.id, 1)
        fake.fail("getUpdates", 502, times=1_000)  # the connection dies from here on
        await asyncio.sleep(0.3)
    assert fake.pending_update(uid) is not None  # never confirmed to Telegram
    fake._faults.clear()
    async with running_channel(fake, store, "polling", dialogue=dialogue):
        await fake.wait_until_confirmed(uid)
        fake.text(mei, "hello again")
        await fake.wait_for_messages(mei.id, 2)
    assert fake.texts_to(mei.id) == ["echo: my order is missing", "echo: hello again"]
    assert [i.message_ref for i in dialogue.seen].count(f"tg:{uid}") == 2  # seen, not answered


async def test_a_webhook_post_without_the_secret_is_refused(
    fake: FakeTelegram, store: Store
) -> None:
    async with running_channel(fake, store, "webhook") as channel:
        url = channel.webhook_url
        assert url is not None
        body = {"update_id": 1, "message": {
            "message_id": 1, "date": 0, "chat": {"id": 666, "type": "private"},
            "from": {"id": 666, "is_bot": False, "first_name": "Eve"}, "text": "/start"}}
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "guess"},
                            {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET + "x"}):
                async with http.post(url, json=body, headers=headers) as response:
                    assert response.status == 403
            too_big = {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET}
            async with http.post(url, data=b"x" * 300_000, headers=too_big) as response:
                assert response.status == 413
            async with http.post(url, data=b"not json", headers=too_big) as response:
                assert response.status == 400
        dialogue = channel.dialogue
        assert isinstance(dialogue, EchoDialogue)
        assert dialogue.seen == []
    assert fake.calls_of("setWebhook")[0].params["secret_token"] == WEBHOOK_SECRET


async def test_the_channel_refuses_webhook_mode_without_a_url(store: Store) -> None:
    with pytest.raises(ValueError, match="WEBHOOK_URL"):
        TelegramChannel("1:x", "http://127.0.0.1:9", "webhook", None, None,
                        EchoDialogue(store), store)
