"""The web chat's wire format: what the page may send, what the server pushes, and the
per-socket throttle. Pure functions and small classes, no I/O.

Client → server (JSON text frames):
  {"type": "message", "text": "...", "id"?: "client id"}
  {"type": "button", "data": "...", "ref"?: 123, "id"?: "..."}
  {"type": "photo", "data": "<base64>", "name"?: "...", "caption"?: "...", "id"?: "..."}
Server → client:
  {"type": "history", "language": "en"|"zh"|null, "items": [{"from": "customer"|"bot", ...}]}
  {"type": "reply", "text", "buttons": [[{"label", "data"}]], "ref"}
  {"type": "ack", "id"}                 after the replies to that message: the turn is over
  {"type": "error", "code", "message", "id"?, "limit"?}
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.channel import MAX_BUTTON_DATA, Attachment, Inbound, Reply

MAX_CLIENT_ID = 64


@dataclass(frozen=True)
class ChatLimits:
    max_text: int = 4000  # characters in one message
    max_photo_bytes: int = 1024 * 1024  # the page shrinks photos to well under this
    burst: int = 10  # messages a visitor may send at once (a pasted list, quick answers)
    per_second: float = 2.0  # sustained rate after the burst
    max_backlog: int = 30  # messages waiting for their answer; more is a flood: socket closed
    history: int = 50  # items shown on connect
    poll_seconds: float = 1.0  # how often a process looks for rows other processes wrote
    heartbeat_seconds: float = 30.0  # pings keep proxies from dropping idle sockets
    sockets_per_visitor: int = 8  # open tabs of one visitor in one process

    @property
    def max_frame_bytes(self) -> int:
        # A photo travels as base64 (4/3) inside JSON; anything larger is not a page of ours.
        return self.max_photo_bytes * 4 // 3 + 64 * 1024


class FrameError(Exception):
    """A frame we will not act on; the page gets `code` and keeps what the person typed."""

    def __init__(self, code: str, message: str, client_id: str | None = None, **extra: Any):
        super().__init__(message)
        self.code = code
        self.client_id = client_id
        self.extra = extra

    def frame(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "error", "code": self.code, "message": str(self)}
        if self.client_id is not None:
            out["id"] = self.client_id
        return out | self.extra


@dataclass(frozen=True)
class ClientFrame:
    kind: str  # message | button | photo
    client_id: str | None
    text: str | None = None
    button: str | None = None
    button_ref: str | None = None
    attachment: Attachment | None = None

    def inbound(self, visitor: str, language: str | None, message_ref: str) -> Inbound:
        return Inbound(
            channel="webchat",
            customer_ref=visitor,
            message_ref=message_ref,
            text=self.text,
            button=self.button,
            button_ref=self.button_ref,
            attachments=(self.attachment,) if self.attachment else (),
            language_hint=language,
        )


def _client_id(raw: dict[str, Any]) -> str | None:
    value = raw.get("id")
    if isinstance(value, str) and 0 < len(value) <= MAX_CLIENT_ID and value.isprintable():
        return value
    return None


def _text(value: Any, limits: ChatLimits, cid: str | None, field: str = "text") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FrameError("bad_frame", f"{field} must be a string", cid)
    if len(value) > limits.max_text:
        raise FrameError(
            "too_long",
            f"Your message is {len(value):,} characters; the limit is {limits.max_text:,}. "
            "Please split it into shorter messages.",
            cid, limit=limits.max_text, length=len(value),
        )
    # Control characters other than newlines and tabs only ever come from scripts.
    cleaned = "".join(c for c in value if c.isprintable() or c in "\n\t").strip()
    return cleaned or None


_PHOTO_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def sniff_image(content: bytes) -> str | None:
    """The image type from the bytes themselves: the client's claim is not trusted."""
    for magic, mime in _PHOTO_MAGIC:
        if content.startswith(magic):
            return mime
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    return None


def _photo(raw: dict[str, Any], limits: ChatLimits, cid: str | None) -> Attachment:
    data = raw.get("data")
    if not isinstance(data, str) or not data:
        raise FrameError("bad_frame", "photo data must be base64 text", cid)
    if len(data) > limits.max_photo_bytes * 4 // 3 + 4:
        raise FrameError(
            "photo_too_big", f"Photos may be up to {limits.max_photo_bytes // 1024} KB.", cid,
            limit=limits.max_photo_bytes,
        )
    try:
        content = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FrameError("bad_frame", "photo data is not valid base64", cid) from exc
    mime = sniff_image(content)
    if mime is None:
        raise FrameError("not_an_image", "Only photos (JPEG, PNG, WebP, GIF) can be sent.", cid)
    name = raw.get("name")
    file_name = name[:200] if isinstance(name, str) and name.isprintable() else None
    return Attachment(
        kind="photo", file_name=file_name, mime_type=mime, size=len(content), content=content
    )


def parse_frame(data: str, limits: ChatLimits) -> ClientFrame:
    """One client frame, validated; raises FrameError with a code the page understands."""
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise FrameError("bad_frame", "frames are JSON objects") from exc
    if not isinstance(raw, dict):
        raise FrameError("bad_frame", "frames are JSON objects")
    cid = _client_id(raw)
    kind = raw.get("type")
    if kind == "message":
        text = _text(raw.get("text"), limits, cid)
        if text is None:
            raise FrameError("empty", "The message is empty.", cid)
        return ClientFrame("message", cid, text=text)
    if kind == "button":
        button = raw.get("data")
        if not isinstance(button, str) or not button:
            raise FrameError("bad_frame", "button data must be a string", cid)
        if len(button.encode()) > MAX_BUTTON_DATA:
            raise FrameError("bad_frame", "button data is too long", cid)
        ref = raw.get("ref")
        button_ref = str(ref) if isinstance(ref, int | str) and str(ref).isdigit() else None
        return ClientFrame("button", cid, button=button, button_ref=button_ref)
    if kind == "photo":
        caption = _text(raw.get("caption"), limits, cid, "caption")
        return ClientFrame("photo", cid, text=caption, attachment=_photo(raw, limits, cid))
    raise FrameError("bad_frame", "unknown frame type", cid)


def buttons_json(reply: Reply) -> list[list[dict[str, str]]]:
    return [[{"label": b.label, "data": b.data} for b in row] for row in reply.buttons]


def reply_frame(reply: Reply) -> dict[str, Any]:
    return {"type": "reply", "text": reply.text, "buttons": buttons_json(reply), "ref": reply.ref}


class Throttle:
    """A token bucket per socket: over the rate, a message waits for its turn (nothing is
    dropped). The socket handler caps how many may wait; past that it is a flood."""

    def __init__(
        self, limits: ChatLimits, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = limits.per_second
        self._burst = float(limits.burst)
        self._clock = clock
        self._tokens = self._burst
        self._at = clock()

    def take(self) -> float:
        """Seconds to wait before handling the next message."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        wait = max(0.0, (1.0 - self._tokens) / self._rate)
        self._tokens -= 1.0
        return wait
