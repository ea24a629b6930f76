"""Whole intake conversations through the dialogue, in English and Chinese, as a customer sees
them: the bot asks only for what it is missing, shows a summary, confirms with a number."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from bot.channel import Attachment
from storage.db import Store
from storage.models import Attachment as StoredAttachment
from storage.models import OutboxMessage
from tests.integration.test_dialogue_support import Shop, make_shop


@pytest.fixture
def shop(store: Store) -> Shop:
    return make_shop(store)

NUMBER = re.compile(r"CL-\d+")


async def test_start_welcomes_with_a_menu(shop: Shop) -> None:
    chat = shop.chat()
    text = await chat.say("/start")
    assert "Mei" in text
    assert {"menu:complaint", "menu:status", "menu:human"} <= set(chat.buttons())


async def test_complaint_with_everything_in_the_first_message_asks_only_for_what_is_missing(
    shop: Shop,
) -> None:
    chat = shop.chat()
    first = await chat.say("My parcel for order 123-4567 never arrived")
    # Order and category were understood: only the optional photo is asked for.
    assert "photo" in first.lower()
    assert "order" not in first.lower() and "category" not in first.lower()
    summary = await chat.say("skip")
    assert "123-4567" in summary and "delivery" in summary
    assert {"confirm", "edit"} <= {d.split(":")[0] for d in chat.buttons()}
    confirmation = await chat.say("yes")
    number = NUMBER.search(confirmation)
    assert number, confirmation
    assert "delivery" in confirmation
    assert "P3" in confirmation or "P2" in confirmation
    assert "within" in confirmation  # the promised first response, in words
    [ticket] = await shop.tickets()
    assert ticket.category == "delivery" and ticket.order_number == "123-4567"
    assert number.group() == f"CL-{ticket.id}"


async def test_a_second_complaint_of_the_same_kind_within_30_days_is_repeated_contact_p2(
    shop: Shop,
) -> None:
    chat = shop.chat()

    async def complaint(text: str) -> str:
        await chat.say("/new")
        await chat.say(text)
        for _ in range(4):
            if not any(d.startswith("confirm:") for d in chat.buttons()):
                await chat.say("skip")
        return await chat.press(chat.button("confirm:"))

    await complaint("My parcel for order 123-4567 never arrived")
    second = await complaint("Order 765-4321 never arrived either, nobody delivered it")
    await complaint("The cashier at the Leeds store was rude to me")  # another kind of problem
    shop.clock.advance(days=31)
    await complaint("Order 111-2222 was never delivered")  # a month later: a new matter
    first, repeat, other, later = sorted(await shop.tickets(), key=lambda t: t.id)
    assert (first.category, repeat.category, later.category) == ("delivery",) * 3
    assert other.category != "delivery"
    assert repeat.priority == "P2" and "P2" in second
    assert first.priority == other.priority == later.priority == "P3"
    # The deadlines are P2's: its first response is due sooner than the first ticket's was.
    assert (repeat.first_response_due - repeat.created_at
            < first.first_response_due - first.created_at)


async def test_chinese_complaint_is_answered_in_chinese(shop: Shop) -> None:
    chat = shop.chat(customer="8008", name="李雷")
    first = await chat.say("订单 123-4567 的快递一直没到")
    assert "照片" in first and "跳过" in first
    summary = await chat.say("跳过")
    assert "配送" in summary and "123-4567" in summary
    confirmation = await chat.say("是")
    assert NUMBER.search(confirmation)
    assert "配送" in confirmation and "小时内" in confirmation
    [ticket] = await shop.tickets()
    assert ticket.language == "zh"


async def test_complaint_with_every_question_skipped_by_buttons(shop: Shop) -> None:
    chat = shop.chat()
    assert "what" in (await chat.say("/new")).lower()
    assert "Is that right" in await chat.say("the cashier was slow")
    await chat.press(chat.button("cat:"))  # yes, the suggested category (the first button)
    asked: list[str] = []
    for _ in range(4):  # order, store, photos: each skipped with its button
        skips = [d for d in chat.buttons() if d.startswith("skip:")]
        if not skips:
            break
        asked.append(skips[0].split(":")[2])
        await chat.press(skips[0])
    assert "photos" in asked
    assert any(d.startswith("confirm:") for d in chat.buttons())
    confirmation = await chat.press(chat.button("confirm:"))
    assert NUMBER.search(confirmation)
    [ticket] = await shop.tickets()
    assert ticket.kind == "complaint" and ticket.order_number is None and ticket.store is None


async def test_the_category_question_can_be_skipped_with_its_button(shop: Shop) -> None:
    chat = shop.chat()
    await chat.say("/new")
    assert "Is that right" in await chat.say("the cashier was slow")
    assert chat.buttons()[-1].endswith(":category")  # the last row: Skip
    guess = chat.button("cat:").rsplit(":", 1)[1]  # skipped, the bot's guess stands
    assert "Which store" in await chat.press(chat.buttons()[-1])  # the next question
    for _ in range(3):  # store, photos
        if skips := [d for d in chat.buttons() if d.startswith("skip:")]:
            await chat.press(skips[0])
    assert NUMBER.search(await chat.press(chat.button("confirm:")))
    [ticket] = await shop.tickets()
    assert ticket.category == guess


async def test_category_confirmed_with_buttons_answers_typed_then_edited(shop: Shop) -> None:
    chat = shop.chat()
    assert "What happened" in await chat.press("menu:complaint")
    # The NLU is unsure about the category, so it proposes one and offers the others.
    question = await chat.say("the cashier was slow")
    assert "Is that right" in question and len(chat.buttons()) >= 11
    assert "order" in (await chat.press(chat.button("cat:") .rsplit(":", 1)[0]
                                         + ":service_speed")).lower()
    assert "store" in (await chat.say("98765")).lower()
    assert "photo" in (await chat.say("Camden High Street")).lower()
    summary = await chat.say("skip")
    assert "speed of service" in summary and "98765" in summary and "Camden" in summary
    await chat.press(chat.button("edit:"))
    await chat.press(next(d for d in chat.buttons() if d.endswith(":category")))
    summary = await chat.press(next(d for d in chat.buttons() if d.endswith(":product_quality")))
    assert "product quality" in summary
    await chat.say("yes")
    [ticket] = await shop.tickets()
    assert ticket.category == "product_quality"
    assert ticket.order_number == "98765" and ticket.store == "Camden High Street"


async def test_suggestion_goes_straight_to_the_summary(shop: Shop) -> None:
    chat = shop.chat()
    summary = await chat.say("You should open earlier on Sundays")
    assert "suggestion" in summary and "open earlier" in summary
    confirmation = await chat.say("yes")
    assert NUMBER.search(confirmation) and "suggestion" in confirmation
    [ticket] = await shop.tickets()
    assert ticket.kind == "suggestion" and ticket.priority == "P4"


async def test_chinese_suggestion(shop: Shop) -> None:
    chat = shop.chat(customer="8009")
    summary = await chat.say("建议周末延长营业时间")
    assert "建议" in summary and "确认" in summary
    confirmation = await chat.say("是")
    assert NUMBER.search(confirmation) and "建议" in confirmation


async def test_praise_asks_whom_to_thank(shop: Shop) -> None:
    chat = shop.chat()
    question = await chat.say("Great service today, thank you!")
    assert "thank" in question.lower() and "Skip" in question
    summary = await chat.say("Anna at the Camden store")
    assert "Anna at the Camden store" in summary
    confirmation = await chat.say("yes")
    assert NUMBER.search(confirmation)
    [ticket] = await shop.tickets()
    assert ticket.kind == "praise" and ticket.store == "Anna at the Camden store"


async def test_chinese_praise(shop: Shop) -> None:
    chat = shop.chat(customer="8010")
    question = await chat.say("你们的服务太棒了，谢谢")
    assert "表扬" in question
    await chat.say("跳过")
    confirmation = await chat.say("是")
    assert NUMBER.search(confirmation) and "表扬" in confirmation


async def test_edit_from_the_summary(shop: Shop) -> None:
    chat = shop.chat()
    await chat.say("You should open earlier on Sundays")
    await chat.press(chat.button("edit:"))
    await chat.press(next(d for d in chat.buttons() if d.endswith(":description")))
    summary = await chat.say("Please open at 8 on Sundays")
    assert "open at 8" in summary and "earlier" not in summary
    await chat.press(chat.button("confirm:"))
    [ticket] = await shop.tickets()
    assert ticket.description == "Please open at 8 on Sundays"


async def test_photos_travel_with_the_ticket(shop: Shop) -> None:
    chat = shop.chat()
    photo = Attachment(kind="photo", file_id="AgAD-1", size=3, content=b"jpg")
    await chat.say("The kettle I bought broke after a day, order 55-1234")
    for _ in range(3):
        if any(d.endswith(":photos") for d in chat.buttons()):
            break
        await chat.press(next(d for d in chat.buttons() if d.startswith(("skip:", "cat:"))))
    got = await chat.send(attachments=(photo,))
    assert "1" in got[0].text
    await chat.send(attachments=(photo,))
    summary = await chat.press(chat.button("skip:"))
    assert "Attachments: 2" in summary
    await chat.say("yes")
    [ticket] = await shop.tickets()
    async with shop.store.read() as s:
        files = list((await s.scalars(select(StoredAttachment))).all())
    assert [f.ticket_id for f in files] == [ticket.id, ticket.id]
    assert files[0].content == b"jpg"


async def test_exactly_one_confirmation_and_every_reply_rides_the_outbox(shop: Shop) -> None:
    chat = shop.chat()
    await chat.say("You should open earlier on Sundays")
    replies = await chat.send("yes")
    assert len(replies) == 1 and all(r.ref for r in chat.transcript)
    async with shop.store.read() as s:
        rows = list((await s.scalars(select(OutboxMessage))).all())
    created = [r for r in rows if r.kind == "ticket_created"]
    assert len(created) == 1 and replies[0].ref == created[0].id
    # Replies are the channel's to send: the worker waits out a grace period first.
    assert all(r.next_attempt_at > r.created_at for r in rows)
