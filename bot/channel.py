"""What every chat channel and the dialogue exchange: one small vocabulary, no platform types.

A channel adapter (telegram.py, webchat.py, later X and Mastodon direct messages) turns a
platform update into an `Inbound`, hands it to the dialogue, and sends the `Reply`s it gets
back; it also provides an outbox `Sender` for messages that start on our side (status updates,
agent replies, satisfaction surveys).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

# Telegram caps callback data at 64 bytes; every channel keeps to it so buttons are portable.
MAX_BUTTON_DATA = 64
# Telegram's message limit; longer replies are split by the adapter, not by the dialogue.
MAX_MESSAGE_CHARS = 4096


@dataclass(frozen=True, slots=True)
class Attachment:
    kind: str  # photo | document
    file_id: str | None = None  # the platform's id, to fetch or refer to it later
    file_name: str | None = None
    mime_type: str | None = None
    size: int = 0
    content: bytes | None = None  # fetched bytes (size-capped by the adapter), if any


@dataclass(frozen=True, slots=True)
class Inbound:
    """One thing a customer did: wrote, pressed a button, sent a file or something else."""

    channel: str  # telegram | webchat | x | mastodon
    customer_ref: str  # the platform's id for this customer (chat id, visitor id, account id)
    message_ref: str | None = None  # the platform's id for this event: duplicates are dropped
    text: str | None = None
    button: str | None = None  # data of a pressed button
    button_ref: str | None = None  # the bot message the button belonged to (stale buttons)
    attachments: tuple[Attachment, ...] = ()
    display_name: str | None = None
    language_hint: str | None = None  # the platform's idea of the customer's language
    unsupported: str | None = None  # sticker | voice | location | ... : answered politely


@dataclass(frozen=True, slots=True)
class Button:
    label: str
    data: str  # at most MAX_BUTTON_DATA bytes in UTF-8


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    buttons: tuple[tuple[Button, ...], ...] = field(default_factory=tuple)  # rows of buttons
    # The outbox row that also carries this reply. The dialogue writes each reply to the outbox
    # in the transaction that stored the customer's message, due a little later; the adapter
    # sends it at once and marks it delivered, and the worker sends whatever a crash left.
    ref: int | None = None


Dialogue = Callable[[Inbound], Awaitable[list[Reply]]]
