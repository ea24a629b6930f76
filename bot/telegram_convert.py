"""Pure translations between Telegram objects and the channel vocabulary (bot/channel.py):
Update → Inbound, Reply → message chunks and inline keyboards, plus the few sentences the
adapter says itself (before or instead of the dialogue) in the customer's language."""

from __future__ import annotations

import functools
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update

from bot.channel import MAX_BUTTON_DATA, MAX_MESSAGE_CHARS, Attachment, Button, Inbound, Reply

CHANNEL = "telegram"
# An inline keyboard as sendMessage's `reply_markup` takes it (the JSON of InlineKeyboardMarkup).
Markup = dict[str, Any]

# What a message can carry that the dialogue does not read; the first present one names it.
UNSUPPORTED_KINDS = (
    "sticker", "voice", "location", "venue", "video_note", "video", "audio", "animation",
    "contact", "poll", "dice", "game", "story",
)

# Said by the adapter itself: the dialogue never sees group chats, edits or oversized files.
ADAPTER_TEXTS: dict[str, dict[str, str]] = {
    "group": {
        "en": "Hello! I can only help in a private chat, so your order details stay between us. "
              "Please message me privately.",
        "zh": "您好！为保护您的订单信息，我只在私聊中提供帮助。请私信我。",
    },
    "edited": {
        "en": "I only read new messages, so I did not see your edit. If something changed, "
              "please send it as a new message.",
        "zh": "我只能读取新消息，看不到您对消息的修改。如有变化，请重新发送一条消息。",
    },
    "too_large": {
        "en": "Sorry, that file is too large for me (the limit is {limit} MB). "
              "Please send a smaller photo or a screenshot.",
        "zh": "抱歉，文件太大了（上限为 {limit} MB）。请发送较小的照片或截图。",
    },
    "file_failed": {
        "en": "Sorry, I could not fetch that file. Please try sending it again.",
        "zh": "抱歉，无法获取该文件，请重新发送。",
    },
}


def language_of(update: Update) -> str:
    user = update.effective_user
    code = (user.language_code or "") if user else ""
    return "zh" if code.lower().startswith("zh") else "en"


def adapter_text(key: str, update: Update, **values: object) -> str:
    return ADAPTER_TEXTS[key][language_of(update)].format(**values)


def base_inbound(update: Update, **fields: object) -> Inbound:
    """The Inbound for an update from a private chat: who, which event, which language."""
    chat = update.effective_chat
    user = update.effective_user
    assert chat is not None  # handlers only route updates that have a chat
    return Inbound(
        channel=CHANNEL,
        customer_ref=str(chat.id),
        # update_id is unique per bot and stable across redeliveries: the dialogue drops a
        # message_ref it has already stored, so a redelivered update is never answered twice.
        message_ref=f"tg:{update.update_id}",
        display_name=user.full_name if user else None,
        language_hint=user.language_code if user else None,
        **fields,  # type: ignore[arg-type]
    )


def plain_text_inbound(data: object) -> tuple[int, Inbound] | None:
    """The update_id and Inbound of the commonest update, a text message in a private chat,
    read straight from the webhook's JSON; None for anything else (PTB's objects and handlers
    take those). Building PTB's Update for it costs more CPU than the rest of receiving it.
    What comes out is exactly what `base_inbound` gives for the same update in `_on_text`."""
    if not isinstance(data, dict) or len(data) != 2:  # update_id + message, nothing else
        return None
    message, uid = data.get("message"), data.get("update_id")
    if not isinstance(message, dict) or not isinstance(uid, int) or isinstance(uid, bool):
        return None
    text, chat, user = message.get("text"), message.get("chat"), message.get("from")
    if not text or not isinstance(text, str) or not isinstance(chat, dict):
        return None
    chat_id = chat.get("id")
    if chat.get("type") != "private" or not isinstance(chat_id, int) or isinstance(chat_id, bool):
        return None
    display_name = language = None
    if user is not None:
        if not isinstance(user, dict) or not isinstance(user.get("first_name"), str):
            return None
        last = user.get("last_name")
        display_name = f"{user['first_name']} {last}" if last else user["first_name"]
        code = user.get("language_code")
        language = code if isinstance(code, str) else None
    return uid, Inbound(
        channel=CHANNEL, customer_ref=str(chat_id), message_ref=f"tg:{uid}",
        display_name=display_name, language_hint=language, text=text,
    )


def unsupported_kind(message: Message) -> str:
    for kind in UNSUPPORTED_KINDS:
        if getattr(message, kind, None):
            return kind
    return "other"


def attachment_of(message: Message) -> tuple[Attachment, str] | None:
    """The file a message carries (largest photo size, or the document) and its file_id."""
    if message.photo:
        best = message.photo[-1]  # Telegram lists sizes smallest first
        return Attachment(
            kind="photo", file_id=best.file_id, mime_type="image/jpeg",
            size=best.file_size or 0,
        ), best.file_id
    if message.document:
        doc = message.document
        return Attachment(
            kind="document", file_id=doc.file_id, file_name=doc.file_name,
            mime_type=doc.mime_type, size=doc.file_size or 0,
        ), doc.file_id
    return None


def utf16_len(text: str) -> int:
    # Telegram measures message length in UTF-16 code units (an emoji counts twice).
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_MESSAGE_CHARS) -> list[str]:
    """Chunks of at most `limit` (UTF-16 units), cut at line ends where possible, else at a
    space, else anywhere; nothing is dropped except the newline a cut happens at."""
    if utf16_len(text) <= limit:
        return [text]
    chunks: list[str] = []
    current = ""
    for line in text.split("\n"):
        candidate = f"{current}\n{line}" if current else line
        if utf16_len(candidate) <= limit:
            current = candidate
            continue
        if current:
            chunks.append(current)
        current = ""
        while utf16_len(line) > limit:
            head, line = _cut(line, limit)
            chunks.append(head)
        current = line
    if current:
        chunks.append(current)
    return [c for c in chunks if c.strip()] or [text[:limit]]


def _cut(line: str, limit: int) -> tuple[str, str]:
    end = limit
    while utf16_len(line[:end]) > limit:  # surrogate pairs take two units
        end -= 1
    space = line.rfind(" ", 0, end)
    if space > end // 2:
        return line[:space], line[space + 1:]
    return line[:end], line[end:]


@functools.lru_cache(maxsize=2048)
def keyboard(buttons: tuple[tuple[Button, ...], ...]) -> Markup | None:
    """The `reply_markup` of a message with these buttons, JSON-ready. Built as PTB objects
    (their checks) once per distinct keyboard: the same few keyboards come back all day, and
    building and serialising the objects for each reply was 4 % of the bot's CPU under load.
    Shared between calls, so nobody may change one."""
    rows = [
        [InlineKeyboardButton(b.label, callback_data=_button_data(b.data)) for b in row]
        for row in buttons
        if row
    ]
    return InlineKeyboardMarkup(rows).to_dict() if rows else None


def _button_data(data: str) -> str:
    # The dialogue keeps to 64 bytes; a longer one would make Telegram refuse the whole reply.
    raw = data.encode("utf-8")[:MAX_BUTTON_DATA]
    return raw.decode("utf-8", "ignore") or "-"


def chunks_of(reply: Reply) -> list[tuple[str, Markup | None]]:
    """The messages one reply becomes; its buttons go under the last chunk, next to the
    question they answer."""
    parts = split_text(reply.text)
    markup = keyboard(reply.buttons)
    return [(p, markup if i == len(parts) - 1 else None) for i, p in enumerate(parts)]
