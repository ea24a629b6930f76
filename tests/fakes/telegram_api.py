"""A fake Telegram Bot API server that speaks the real wire protocol.

The bot under test is the real python-telegram-bot stack pointed at this server by
`CARELOOP_TELEGRAM_API_BASE` (methods at `{base}/bot{token}/{method}`, files at
`{base}/file/bot{token}/{path}`). Every request is checked against the published Bot API
(api.json via telegram_spec): a request the real API would reject gets the 400 Telegram would
send AND lands in `violations`, which the tests assert to be empty — the fake fails loudly
instead of quietly accepting what Telegram would not.

Test controls: inject updates (`text`, `command`, `press`, `edit`, `photo`, `document`,
`sticker`, `voice`, `location`, `group_text`, `inject`), fault injection per method (`fail`),
blocked or deactivated users (`block`), every call recorded (`calls`), and in webhook mode
updates are POSTed to the registered URL with `X-Telegram-Bot-Api-Secret-Token`, retried until
the bot answers 2xx, at most one in flight per chat (so a chat's updates arrive in order).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from tests.fakes import telegram_updates as tu
from tests.fakes.telegram_spec import Spec, SpecViolation, load_spec

DEFAULT_TOKEN = "123456789:AAFakeTokenForCarelooptestsOnly_xyz"
MAX_TEXT = 4096  # sendMessage text, in UTF-16 code units after entity parsing
MAX_CALLBACK_DATA = 64  # bytes
MAX_GETFILE_BYTES = 20 * 1024 * 1024  # the cloud Bot API serves files up to 20 MB
SECRET_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
CHAT_ACTIONS = {
    "typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
    "upload_document", "choose_sticker", "find_location", "record_video_note",
    "upload_video_note",
}
PARSE_MODES = {"HTML", "Markdown", "MarkdownV2"}
UPDATE_KINDS = ("message", "edited_message", "callback_query", "channel_post", "my_chat_member")
BUTTON_ACTIONS = (
    "url", "callback_data", "web_app", "login_url", "switch_inline_query",
    "switch_inline_query_current_chat", "switch_inline_query_chosen_chat", "copy_text",
    "callback_game", "pay",
)


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    status: int
    at: float  # time.monotonic() when the fake received it
    encoding: str  # json | form | multipart | query


@dataclass
class Violation:
    method: str
    problem: str
    params: dict[str, Any]


@dataclass
class Fault:
    method: str
    status: int
    description: str
    retry_after: int | None
    remaining: int
    chat_id: int | None
    # Matching calls that succeed before the fault starts (a failure in mid-message).
    skip: int = 0


@dataclass
class StoredFile:
    file_id: str
    unique_id: str
    path: str
    content: bytes


@dataclass
class Chat:
    info: dict[str, Any]
    next_message_id: int = 1
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    blocked: str | None = None  # the Forbidden description when the user blocked the bot


class TelegramError(Exception):
    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _is_loopback(host: str | None) -> bool:
    if host in (None, ""):
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FakeTelegram:
    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        spec: Spec | None = None,
        webhook_retry_seconds: float = 0.05,
        check_updates: bool = True,
    ) -> None:
        self.token = token
        self.spec = spec or load_spec()
        self.webhook_retry_seconds = webhook_retry_seconds
        self.check_updates = check_updates  # the bench turns it off: it costs CPU per update
        self.calls: list[Call] = []
        self.violations: list[Violation] = []
        self.unimplemented: list[str] = []
        self.chats: dict[int, Chat] = {}
        self.files: dict[str, StoredFile] = {}
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.answered: dict[str, dict[str, Any]] = {}  # callback query id -> answer params
        self._issued_queries: set[str] = set()
        self.on_send: list[Callable[[int, dict[str, Any]], None]] = []
        self.on_delivered: list[Callable[[int], None]] = []  # a webhook POST answered 2xx
        self.webhook_posts: list[tuple[int, int]] = []  # (update_id, HTTP status)
        self.injected_at: dict[int, float] = {}  # update_id -> monotonic time it was queued
        self._faults: list[Fault] = []
        self._pending: dict[int, dict[str, Any]] = {}  # update_id -> update, oldest first
        self._update_ids = itertools.count(500_000_001)
        self._query_ids = itertools.count(1)
        self._arrived = asyncio.Event()
        self._poller = 0  # generation of the running getUpdates: a newer one ends the older
        self._sent = asyncio.Condition()
        self._allowed: list[str] | None = None
        self._webhook: dict[str, Any] | None = None
        self._webhook_error: tuple[int, str] | None = None
        self._retry_at: dict[int, float] = {}
        self._in_flight: set[int] = set()
        self._busy_chats: set[int] = set()
        self._delivery_wakeup = asyncio.Event()
        self._delivery_task: asyncio.Task[None] | None = None
        self._posts: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.api_base = ""

    # --- server lifecycle ----------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(client_max_size=60 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.api_base = f"http://{host}:{bound[1]}"
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200), timeout=aiohttp.ClientTimeout(total=30)
        )
        self._delivery_task = asyncio.create_task(self._deliver_webhooks())
        return self.api_base

    async def stop(self) -> None:
        if self._delivery_task:
            self._delivery_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._delivery_task
        if self._session:
            await self._session.close()
        if self._runner:
            await self._runner.cleanup()

    # --- test controls: faults and users ---------------------------------------------------

    def fail(
        self,
        method: str,
        status: int,
        *,
        times: int = 1,
        retry_after: int | None = None,
        description: str | None = None,
        chat_id: int | None = None,
        after: int = 0,
    ) -> None:
        """The next `times` calls of `method` (for `chat_id`, if given) fail as Telegram fails:
        429 with parameters.retry_after, 403 Forbidden, 400, 500, or 502 from the proxy.
        With `after`, that many matching calls succeed first."""
        default = {
            429: f"Too Many Requests: retry after {retry_after or 1}",
            403: "Forbidden: bot was blocked by the user",
            400: "Bad Request: chat not found",
            500: "Internal Server Error",
            502: "Bad Gateway",
        }
        if status == 429 and retry_after is None:
            retry_after = 1
        self._faults.append(Fault(
            method, status, description or default.get(status, "Error"), retry_after, times,
            chat_id, after,
        ))

    def block(
        self, chat_id: int, description: str = "Forbidden: bot was blocked by the user"
    ) -> None:
        """The user blocked the bot (or, with "Forbidden: user is deactivated", left)."""
        self._chat(chat_id, {"id": chat_id, "type": "private", "first_name": "?"}).blocked = (
            description
        )

    def customer_blocks(self, customer: tu.Customer) -> int:
        """The customer blocks the bot: sends to them are refused from now on, and Telegram
        tells the bot with a my_chat_member update (returned: its update_id)."""
        self.block(customer.id)
        return self.inject({"my_chat_member": tu.membership(
            customer, "member", "kicked", int(time.time()))})

    def customer_unblocks(self, customer: tu.Customer) -> int:
        self._chat(customer.id, customer.private_chat()).blocked = None
        return self.inject({"my_chat_member": tu.membership(
            customer, "kicked", "member", int(time.time()))})

    # --- test controls: what customers do --------------------------------------------------

    def add_customer(self, customer: tu.Customer) -> None:
        """A user who has started the bot before (so the bot may write to them)."""
        self._chat(customer.id, customer.private_chat())

    def text(self, customer: tu.Customer, text: str) -> int:
        return self._customer_message(customer, tu.text_content(text))

    command = text  # a command is text with a bot_command entity; text_content adds it

    def group_text(
        self, customer: tu.Customer, group_id: int, text: str, *, supergroup: bool = False
    ) -> int:
        chat = self._chat(group_id, tu.group_chat(group_id, supergroup=supergroup))
        msg = tu.message(
            customer, self._next_id(chat), chat=chat.info, **tu.text_content(text)
        )
        chat.messages[msg["message_id"]] = msg
        return self.inject({"message": msg})

    def edit(self, customer: tu.Customer, message_id: int, text: str) -> int:
        chat = self._chat(customer.id, customer.private_chat())
        original = chat.messages[message_id]
        edited = {**original, **tu.text_content(text), "edit_date": int(time.time())}
        chat.messages[message_id] = edited
        return self.inject({"edited_message": edited})

    def press(self, customer: tu.Customer, message_id: int, data: str) -> int:
        """The customer presses an inline button of the bot's message `message_id`."""
        chat = self._chat(customer.id, customer.private_chat())
        shown = chat.messages[message_id]
        buttons = [
            b.get("callback_data")
            for row in shown.get("reply_markup", {}).get("inline_keyboard", [])
            for b in row
        ]
        if data not in buttons:
            raise AssertionError(f"message {message_id} has no button {data!r}: {buttons}")
        query_id = f"{customer.id}{next(self._query_ids):08d}"
        query: dict[str, Any] = {
            "id": query_id,
            "from": customer.user(),
            "message": shown,
            "chat_instance": f"-{customer.id}77",
            "data": data,
        }
        self._issued_queries.add(query_id)
        return self.inject({"callback_query": query})

    def photo(
        self, customer: tu.Customer, content: bytes, caption: str | None = None
    ) -> int:
        stored = self.add_file(content, "photos", ".jpg")
        extra: dict[str, Any] = {"caption": caption} if caption else {}
        return self._customer_message(customer, {
            "photo": tu.photo_sizes(stored.file_id, stored.unique_id, len(content)), **extra,
        })

    def document(
        self, customer: tu.Customer, content: bytes, file_name: str, mime_type: str
    ) -> int:
        stored = self.add_file(content, "documents", "." + file_name.rsplit(".", 1)[-1])
        return self._customer_message(customer, {"document": {
            "file_id": stored.file_id, "file_unique_id": stored.unique_id,
            "file_name": file_name, "mime_type": mime_type, "file_size": len(content),
        }})

    def sticker(self, customer: tu.Customer) -> int:
        return self._customer_message(customer, {"sticker": tu.sticker()})

    def voice(self, customer: tu.Customer) -> int:
        return self._customer_message(customer, {"voice": tu.voice()})

    def location(self, customer: tu.Customer) -> int:
        return self._customer_message(customer, {"location": tu.location()})

    def add_file(self, content: bytes, folder: str, suffix: str) -> StoredFile:
        n = len(self.files) + 1
        stored = StoredFile(
            file_id=f"AgACAgIAAxkBAAI{n:06d}fake", unique_id=f"AQAD{n:06d}",
            path=f"{folder}/file_{n}{suffix}", content=content,
        )
        self.files[stored.file_id] = stored
        # Telegram's getFile also knows the smaller sizes of a photo.
        self.files[f"{stored.file_id}-thumb"] = StoredFile(
            f"{stored.file_id}-thumb", f"{stored.unique_id}-t", f"{folder}/thumb_{n}{suffix}",
            content[:1_500],
        )
        return stored

    def inject(self, update: dict[str, Any], *, update_id: int | None = None) -> int:
        """Queue an update (its update_id assigned here unless given: a redelivery)."""
        uid = update_id if update_id is not None else next(self._update_ids)
        full = {"update_id": uid, **update}
        if self.check_updates:
            self.spec.check_object(full, "Update")  # a malformed test update is a test bug
        self._pending[uid] = full
        self.injected_at.setdefault(uid, time.monotonic())
        self._arrived.set()
        self._arrived = asyncio.Event()
        self._delivery_wakeup.set()
        return uid

    def redeliver(self, update_id: int, update: dict[str, Any]) -> None:
        """Send an update again, as Telegram does when a webhook answer got lost."""
        self.inject({k: v for k, v in update.items() if k != "update_id"}, update_id=update_id)

    def pending_update(self, update_id: int) -> dict[str, Any] | None:
        return self._pending.get(update_id)

    def _customer_message(self, customer: tu.Customer, content: dict[str, Any]) -> int:
        chat = self._chat(customer.id, customer.private_chat())
        msg = tu.message(customer, self._next_id(chat), **content)
        chat.messages[msg["message_id"]] = msg
        return self.inject({"message": msg})

    def _chat(self, chat_id: int, info: dict[str, Any]) -> Chat:
        if chat_id not in self.chats:
            self.chats[chat_id] = Chat(info=info)
        return self.chats[chat_id]

    @staticmethod
    def _next_id(chat: Chat) -> int:
        n = chat.next_message_id
        chat.next_message_id += 1
        return n

    # --- inspection ------------------------------------------------------------------------

    def bot_messages(self, chat_id: int) -> list[dict[str, Any]]:
        chat = self.chats.get(chat_id)
        if chat is None:
            return []
        return [
            m for m in chat.messages.values() if m.get("from", {}).get("id") == tu.BOT_ID
        ]

    def texts_to(self, chat_id: int) -> list[str]:
        return [m.get("text", "") for m in self.bot_messages(chat_id)]

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def wait_for_messages(
        self, chat_id: int, count: int, wait: float = 10.0
    ) -> list[dict[str, Any]]:
        """Wait until the bot has sent `count` messages to the chat (or fail the test)."""
        async def enough() -> None:
            async with self._sent:
                await self._sent.wait_for(lambda: len(self.bot_messages(chat_id)) >= count)

        try:
            await asyncio.wait_for(enough(), wait)
        except TimeoutError:
            raise AssertionError(
                f"chat {chat_id} got {self.texts_to(chat_id)!r}, expected {count} message(s); "
                f"violations: {self.violations}"
            ) from None
        return self.bot_messages(chat_id)

    async def wait_until_confirmed(self, update_id: int, wait: float = 10.0) -> None:
        deadline = time.monotonic() + wait
        while update_id in self._pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"update {update_id} was never confirmed")
            await asyncio.sleep(0.01)

    # --- the Bot API -----------------------------------------------------------------------

    async def _method(self, request: web.Request) -> web.StreamResponse:
        received = time.monotonic()
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        name = self._canonical(request.match_info["method"])
        raw, encoding = await _read_params(request)
        if name is None:
            self.calls.append(Call(request.match_info["method"], raw, 404, received, encoding))
            return _error(404, "Not Found")
        call = Call(name, raw, 200, received, encoding)
        self.calls.append(call)
        try:
            params = self.spec.check_params(name, raw, form=encoding != "json")
            self._check_limits(name, params)
        except SpecViolation as exc:
            self.violations.append(Violation(name, str(exc), raw))
            call.status = 400
            return _error(400, f"Bad Request: {exc}")
        fault = self._take_fault(name, params)
        try:
            if fault is not None:
                raise TelegramError(fault.status, fault.description, fault.retry_after)
            handler = getattr(self, f"_api_{name}", None)
            if handler is None:
                self.unimplemented.append(name)
                raise TelegramError(501, f"Not Implemented: the fake has no {name}")
            result = await handler(params)
        except TelegramError as exc:
            call.status = exc.status
            if exc.status == 502:  # the proxy in front of the Bot API answers with HTML
                return web.Response(
                    status=502, text="<html><body><h1>502 Bad Gateway</h1></body></html>",
                    content_type="text/html",
                )
            return _error(exc.status, exc.description, exc.retry_after)
        return web.json_response({"ok": True, "result": result})

    def _canonical(self, method: str) -> str | None:
        # Telegram treats method names case-insensitively.
        lowered = method.lower()
        for name in self.spec.methods:
            if name.lower() == lowered:
                return name
        return None

    def _check_limits(self, method: str, params: dict[str, Any]) -> None:
        """Limits api.json states in prose, which the real API enforces."""
        text = params.get("text")
        if method in ("sendMessage", "editMessageText") and text is not None:
            if not text.strip():
                raise SpecViolation("message text is empty")
            if _utf16_len(text) > MAX_TEXT:
                raise SpecViolation("message is too long")
        if method == "answerCallbackQuery" and len(params.get("text") or "") > 200:
            raise SpecViolation("answerCallbackQuery text is longer than 200 characters")
        mode = params.get("parse_mode")
        if mode is not None and mode not in PARSE_MODES:
            raise SpecViolation(f"unsupported parse_mode {mode!r}")
        if method == "sendChatAction" and params["action"] not in CHAT_ACTIONS:
            raise SpecViolation(f"wrong parameter action in request: {params['action']!r}")
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            for row in markup["inline_keyboard"]:
                for button in row:
                    _check_button(button)
        if method == "setWebhook":
            secret = params.get("secret_token")
            if secret is not None and not SECRET_TOKEN.match(secret):
                raise SpecViolation("secret token contains unallowed characters")
            if not 1 <= params.get("max_connections", 40) <= 100:
                raise SpecViolation("max_connections must be 1-100")
        if method == "getUpdates" and not 1 <= params.get("limit", 100) <= 100:
            raise SpecViolation("limit must be 1-100")

    def _take_fault(self, method: str, params: dict[str, Any]) -> Fault | None:
        for fault in self._faults:
            if fault.method != method or fault.remaining <= 0:
                continue
            if fault.chat_id is not None and _int(params.get("chat_id")) != fault.chat_id:
                continue
            if fault.skip > 0:
                fault.skip -= 1
                return None
            fault.remaining -= 1
            return fault
        return None

    async def _api_getMe(self, params: dict[str, Any]) -> Any:
        return tu.bot_user()

    async def _api_logOut(self, params: dict[str, Any]) -> Any:
        return True

    async def _api_close(self, params: dict[str, Any]) -> Any:
        return True

    async def _api_getUpdates(self, params: dict[str, Any]) -> Any:
        if self._webhook is not None:
            raise TelegramError(409, "Conflict: can't use getUpdates method while webhook is "
                                     "active; use deleteWebhook to delete the webhook first")
        self._poller += 1
        me = self._poller
        offset = params.get("offset")
        if offset is not None:
            self._confirm(offset)
        if "allowed_updates" in params:
            self._allowed = params["allowed_updates"] or None
        limit = params.get("limit", 100)
        deadline = time.monotonic() + max(0, params.get("timeout", 0))
        while True:
            if self._poller != me:
                raise TelegramError(409, "Conflict: terminated by other getUpdates request; "
                                         "make sure that only one bot instance is running")
            ready = [u for u in self._pending.values() if self._wanted(u)][:limit]
            left = deadline - time.monotonic()
            if ready or left <= 0:
                return ready
            arrived = self._arrived
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), min(left, 0.5))

    def _confirm(self, offset: int) -> None:
        if offset < 0:  # keep only the last -offset updates
            for uid in list(self._pending)[:offset]:
                del self._pending[uid]
            return
        for uid in [u for u in self._pending if u < offset]:
            del self._pending[uid]

    def _wanted(self, update: dict[str, Any]) -> bool:
        if self._allowed is None:
            return True
        return any(kind in update for kind in self._allowed)

    async def _api_setWebhook(self, params: dict[str, Any]) -> Any:
        url = params["url"]
        if not url:
            self._webhook = None
            return True
        parts = urlsplit(url)
        # Telegram posts to HTTPS only; the fake also accepts http:// on loopback, where the
        # tests' desk listens (TLS terminates at the proxy in production).
        if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(
                parts.hostname)):
            raise TelegramError(400, "Bad Request: bad webhook: An HTTPS URL must be provided "
                                     "for webhook")
        if params.get("drop_pending_updates"):
            self._pending.clear()
        self._webhook = {
            "url": url,
            "secret_token": params.get("secret_token"),
            "max_connections": params.get("max_connections", 40),
        }
        if "allowed_updates" in params:
            self._allowed = params["allowed_updates"] or None
        self._delivery_wakeup.set()
        return True

    async def _api_deleteWebhook(self, params: dict[str, Any]) -> Any:
        self._webhook = None
        if params.get("drop_pending_updates"):
            self._pending.clear()
        return True

    async def _api_getWebhookInfo(self, params: dict[str, Any]) -> Any:
        info: dict[str, Any] = {
            "url": self._webhook["url"] if self._webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._pending),
        }
        if self._webhook:
            info["max_connections"] = self._webhook["max_connections"]
            if self._allowed:
                info["allowed_updates"] = self._allowed
            if self._webhook_error:
                info["last_error_date"], info["last_error_message"] = self._webhook_error
        return info

    def _addressee(self, params: dict[str, Any]) -> Chat:
        chat_id = _int(params.get("chat_id"))
        chat = self.chats.get(chat_id) if chat_id is not None else None
        if chat is None:
            raise TelegramError(400, "Bad Request: chat not found")
        if chat.blocked:
            raise TelegramError(403, chat.blocked)
        return chat

    async def _api_sendMessage(self, params: dict[str, Any]) -> Any:
        chat = self._addressee(params)
        msg: dict[str, Any] = {
            "message_id": self._next_id(chat),
            "from": {"id": tu.BOT_ID, "is_bot": True, "first_name": "Careloop",
                     "username": tu.BOT_USERNAME},
            "chat": chat.info,
            "date": int(time.time()),
            "text": params["text"],
        }
        if isinstance(params.get("reply_markup"), dict) and "inline_keyboard" in params[
                "reply_markup"]:
            msg["reply_markup"] = params["reply_markup"]
        chat.messages[msg["message_id"]] = msg
        await self._announce(chat.info["id"], msg)
        return msg

    async def _announce(self, chat_id: int, msg: dict[str, Any]) -> None:
        for listener in self.on_send:
            listener(chat_id, msg)
        async with self._sent:
            self._sent.notify_all()

    def _editable(self, params: dict[str, Any]) -> dict[str, Any]:
        if "inline_message_id" in params:
            raise TelegramError(400, "Bad Request: MESSAGE_ID_INVALID")
        chat = self._addressee(params)
        msg = chat.messages.get(params.get("message_id") or 0)
        if msg is None or msg.get("from", {}).get("id") != tu.BOT_ID:
            raise TelegramError(400, "Bad Request: message to edit not found")
        return msg

    async def _api_editMessageText(self, params: dict[str, Any]) -> Any:
        msg = self._editable(params)
        markup = params.get("reply_markup")
        if msg["text"] == params.get("text") and msg.get("reply_markup") == markup:
            raise TelegramError(400, "Bad Request: message is not modified: specified new "
                                     "message content and reply markup are exactly the same "
                                     "as a current content and reply markup of the message")
        msg["text"] = params.get("text", msg["text"])
        msg["edit_date"] = int(time.time())
        if markup is None:
            msg.pop("reply_markup", None)
        else:
            msg["reply_markup"] = markup
        return msg

    async def _api_editMessageReplyMarkup(self, params: dict[str, Any]) -> Any:
        msg = self._editable(params)
        markup = params.get("reply_markup")
        if msg.get("reply_markup") == markup:
            raise TelegramError(400, "Bad Request: message is not modified: specified new "
                                     "message content and reply markup are exactly the same "
                                     "as a current content and reply markup of the message")
        if markup is None or not markup.get("inline_keyboard"):
            msg.pop("reply_markup", None)
        else:
            msg["reply_markup"] = markup
        msg["edit_date"] = int(time.time())
        return msg

    async def _api_answerCallbackQuery(self, params: dict[str, Any]) -> Any:
        query_id = params["callback_query_id"]
        if query_id not in self._issued_queries or query_id in self.answered:
            raise TelegramError(400, "Bad Request: query is too old and response timeout "
                                     "expired or query ID is invalid")
        self.answered[query_id] = params
        return True

    async def _api_sendChatAction(self, params: dict[str, Any]) -> Any:
        self._addressee(params)
        return True

    async def _api_getFile(self, params: dict[str, Any]) -> Any:
        stored = self.files.get(params["file_id"])
        if stored is None:
            raise TelegramError(400, "Bad Request: invalid file_id")
        result: dict[str, Any] = {
            "file_id": stored.file_id, "file_unique_id": stored.unique_id,
            "file_size": len(stored.content),
        }
        if len(stored.content) > MAX_GETFILE_BYTES:
            raise TelegramError(400, "Bad Request: file is too big")
        result["file_path"] = stored.path
        return result

    async def _api_setMyCommands(self, params: dict[str, Any]) -> Any:
        self.commands[params.get("language_code") or ""] = params["commands"]
        return True

    async def _api_getMyCommands(self, params: dict[str, Any]) -> Any:
        return self.commands.get(params.get("language_code") or "", [])

    async def _api_deleteMyCommands(self, params: dict[str, Any]) -> Any:
        self.commands.pop(params.get("language_code") or "", None)
        return True

    async def _download(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        path = request.match_info["path"]
        for stored in self.files.values():
            if stored.path == path:
                self.calls.append(Call("file", {"path": path}, 200, time.monotonic(), "query"))
                return web.Response(body=stored.content, content_type="application/octet-stream")
        return _error(404, "Not Found")

    # --- webhook delivery ------------------------------------------------------------------

    async def _deliver_webhooks(self) -> None:
        while True:
            await self._delivery_wakeup.wait()
            self._delivery_wakeup.clear()
            hook = self._webhook
            if hook is None:
                continue
            now = time.monotonic()
            for uid, update in list(self._pending.items()):
                if len(self._in_flight) >= hook["max_connections"]:
                    break
                chat = _chat_of(update)
                if uid in self._in_flight or chat in self._busy_chats:
                    continue
                if self._retry_at.get(uid, 0) > now or not self._wanted(update):
                    continue
                self._in_flight.add(uid)
                self._busy_chats.add(chat)
                task = asyncio.create_task(self._post(hook, uid, update, chat))
                self._posts.add(task)
                task.add_done_callback(self._posts.discard)

    async def _post(
        self, hook: dict[str, Any], uid: int, update: dict[str, Any], chat: int
    ) -> None:
        headers = {"Content-Type": "application/json"}
        if hook["secret_token"]:
            headers["X-Telegram-Bot-Api-Secret-Token"] = hook["secret_token"]
        status = 0
        try:
            assert self._session is not None
            async with self._session.post(
                hook["url"], data=json.dumps(update), headers=headers
            ) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._webhook_error = (int(time.time()), f"Connection failed: {exc}")
        finally:
            self.webhook_posts.append((uid, status))
            self._in_flight.discard(uid)
            self._busy_chats.discard(chat)
            if 200 <= status < 300:
                # Same update_id may have been queued again meanwhile (a redelivery test); it
                # stays pending only if it is a different object.
                if self._pending.get(uid) is update:
                    del self._pending[uid]
                for listener in self.on_delivered:
                    listener(uid)
            else:
                if status:
                    self._webhook_error = (
                        int(time.time()), f"Wrong response from the webhook: {status}"
                    )
                self._retry_at[uid] = time.monotonic() + self.webhook_retry_seconds
                asyncio.get_running_loop().call_later(
                    self.webhook_retry_seconds, self._delivery_wakeup.set
                )
            self._delivery_wakeup.set()


def _check_button(button: dict[str, Any]) -> None:
    actions = [a for a in BUTTON_ACTIONS if a in button]
    if len(actions) != 1:
        raise SpecViolation("can't parse inline keyboard button: exactly one of "
                            f"{', '.join(BUTTON_ACTIONS[:2])}, ... must be set")
    data = button.get("callback_data")
    if data is not None and not 1 <= len(data.encode()) <= MAX_CALLBACK_DATA:
        raise SpecViolation("BUTTON_DATA_INVALID")
    if not button.get("text"):
        raise SpecViolation("text buttons are unallowed in the inline keyboard")


def _chat_of(update: dict[str, Any]) -> int:
    for kind in ("message", "edited_message", "channel_post"):
        if kind in update:
            return int(update[kind]["chat"]["id"])
    if "callback_query" in update:
        return int(update["callback_query"]["from"]["id"])
    return 0


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _error(status: int, description: str, retry_after: int | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return web.json_response(body, status=status)


async def _read_params(request: web.Request) -> tuple[dict[str, Any], str]:
    """Parameters the way the Bot API reads them: query string, form, multipart or JSON."""
    params: dict[str, Any] = dict(request.query)
    encoding = "query"
    if request.method == "POST" and request.can_read_body:
        ctype = request.content_type
        if ctype == "application/json":
            body = await request.json()
            if isinstance(body, dict):
                params.update(body)
            encoding = "json"
        elif ctype == "multipart/form-data":
            reader = await request.multipart()
            async for part in reader:
                if isinstance(part, aiohttp.BodyPartReader) and part.name:
                    params[part.name] = (await part.read()).decode("utf-8", "replace")
            encoding = "multipart"
        else:
            params.update(dict(await request.post()))
            encoding = "form"
    return {k: (str(v) if not isinstance(v, (str, int, float, bool, list, dict)) else v)
            for k, v in params.items()}, encoding


__all__ = ["DEFAULT_TOKEN", "Call", "FakeTelegram", "Violation"]
