"""The webhook's shortcut for plain text in a private chat reads the same Inbound that PTB's
Update and the `_on_text` handler give, and leaves every other update to PTB."""

from __future__ import annotations

from typing import Any

import pytest
from telegram import Bot, Update

from bot import telegram_convert as conv
from tests.fakes.telegram_updates import (
    Customer,
    group_chat,
    location,
    message,
    photo_sizes,
    sticker,
    text_content,
)

BOT = Bot("123:fake")
MEI = Customer(5001, "Mei", "zh-hans", username="mei")
NO_LANGUAGE = Customer(5002, "Tom", None)


def _via_ptb(data: dict[str, Any]) -> conv.Inbound:
    update = Update.de_json(data, BOT)
    assert update is not None and update.effective_message is not None
    return conv.base_inbound(update, text=update.effective_message.text)


@pytest.mark.parametrize("data", [
    {"update_id": 1, "message": message(MEI, 10, **text_content("My parcel never came"))},
    {"update_id": 2, "message": message(MEI, 11, **text_content("/status CL-12"))},
    {"update_id": 3, "message": message(NO_LANGUAGE, 12, **text_content("订单没到 🙁"))},
    {"update_id": 4, "message": {
        **message(MEI, 13, **text_content("hi")),
        "from": {**MEI.user(), "last_name": "Lin"},
    }},
])
def test_plain_text_reads_like_ptb(data: dict[str, Any]) -> None:
    plain = conv.plain_text_inbound(data)
    assert plain is not None
    uid, inbound = plain
    assert uid == data["update_id"]
    assert inbound == _via_ptb(data)


@pytest.mark.parametrize("data", [
    {"update_id": 5, "edited_message": message(MEI, 10, **text_content("edit"))},
    {"update_id": 6, "message": message(MEI, 11, chat=group_chat(-100), **text_content("hi"))},
    {"update_id": 7, "message": message(MEI, 12, sticker=sticker())},
    {"update_id": 8, "message": message(MEI, 13, location=location())},
    {"update_id": 9, "message": message(MEI, 14, photo=photo_sizes("f", "u", 100),
                                        caption="the box")},
    {"update_id": 10, "message": message(MEI, 15, text="")},
    {"update_id": "11", "message": message(MEI, 16, **text_content("hi"))},
    {"message": message(MEI, 17, **text_content("hi")), "extra": 1},
    ["not", "an", "update"],
])
def test_everything_else_goes_to_ptb(data: Any) -> None:
    assert conv.plain_text_inbound(data) is None
