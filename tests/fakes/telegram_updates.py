"""Builders for the Update objects Telegram sends, in the shapes of the current Bot API (each one
is checked against api.json when the fake queues it)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

BOT_ID = 7_000_001
BOT_USERNAME = "careloop_test_bot"


@dataclass(frozen=True)
class Customer:
    """A Telegram user talking to the bot in a private chat (chat id == user id)."""

    id: int
    first_name: str = "Mei"
    language_code: str | None = "en"
    username: str | None = None

    def user(self) -> dict[str, Any]:
        u: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.username:
            u["username"] = self.username
        if self.language_code:
            u["language_code"] = self.language_code
        return u

    def private_chat(self) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": self.id, "type": "private", "first_name": self.first_name}
        if self.username:
            chat["username"] = self.username
        return chat


def bot_user() -> dict[str, Any]:
    return {
        "id": BOT_ID, "is_bot": True, "first_name": "Careloop", "username": BOT_USERNAME,
        "can_join_groups": True, "can_read_all_group_messages": False,
        "supports_inline_queries": False, "can_connect_to_business": False,
        "has_main_web_app": False,
    }


def membership(customer: Customer, old: str, new: str, date: int) -> dict[str, Any]:
    """A my_chat_member update's body: the customer blocked ("kicked") or unblocked
    ("member") the bot in their private chat."""
    def member(status: str) -> dict[str, Any]:
        body: dict[str, Any] = {"status": status, "user": bot_user()}
        if status == "kicked":
            body["until_date"] = 0
        return body

    return {
        "chat": customer.private_chat(), "from": customer.user(), "date": date,
        "old_chat_member": member(old), "new_chat_member": member(new),
    }


def group_chat(chat_id: int, title: str = "Shoppers", supergroup: bool = False) -> dict[str, Any]:
    return {"id": chat_id, "type": "supergroup" if supergroup else "group", "title": title}


def message(
    customer: Customer,
    message_id: int,
    *,
    chat: dict[str, Any] | None = None,
    **content: Any,
) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "from": customer.user(),
        "chat": chat or customer.private_chat(),
        "date": int(time.time()),
        **content,
    }


def text_content(text: str) -> dict[str, Any]:
    """Text, with the bot_command entity Telegram adds when the text starts with a command."""
    content: dict[str, Any] = {"text": text}
    if text.startswith("/"):
        command = text.split()[0]
        content["entities"] = [
            {"type": "bot_command", "offset": 0, "length": _utf16_len(command)}
        ]
    return content


def _utf16_len(text: str) -> int:
    # Telegram counts entity offsets and lengths in UTF-16 code units.
    return len(text.encode("utf-16-le")) // 2


def photo_sizes(file_id: str, unique_id: str, size: int) -> list[dict[str, Any]]:
    """Telegram sends every photo in several sizes, smallest first; the last is the original."""
    return [
        {"file_id": f"{file_id}-thumb", "file_unique_id": f"{unique_id}-t", "width": 90,
         "height": 67, "file_size": min(size, 1_500)},
        {"file_id": file_id, "file_unique_id": unique_id, "width": 1280, "height": 960,
         "file_size": size},
    ]


def sticker() -> dict[str, Any]:
    return {
        "file_id": "CAACAgIAAxkBAAIBsticker", "file_unique_id": "AgADsticker", "type": "regular",
        "width": 512, "height": 512, "is_animated": False, "is_video": False, "emoji": "👍",
    }


def voice() -> dict[str, Any]:
    return {
        "file_id": "AwACAgIAAxkBAAIBvoice", "file_unique_id": "AgADvoice", "duration": 3,
        "mime_type": "audio/ogg", "file_size": 5_120,
    }


def location() -> dict[str, Any]:
    return {"latitude": 31.2304, "longitude": 121.4737}
