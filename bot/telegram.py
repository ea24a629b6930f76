"""The Telegram channel on python-telegram-bot 22: updates in (polling or webhook), the dialogue,
replies out, and the outbox sender for messages that start on our side.

Delivery guarantees. An update counts as handled once the dialogue has stored it (the dialogue
writes the customer's message and its replies, as outbox rows, in one transaction); only then is
it confirmed to Telegram — in polling mode by the next getUpdates offset, in webhook mode by the
200 answer. A crash before that makes Telegram deliver it again, and the dialogue drops the
duplicate by its message_ref (`tg:{update_id}`). Replies are sent at once and marked delivered;
whatever a crash or a send failure leaves behind, the outbox worker sends through `sender`.

Rate limits. Replies go out through the application's bot, whose AIORateLimiter keeps the group
limit (20/min) and waits out a 429's retry_after before retrying. Outbox messages (status
updates, agent replies, surveys: Telegram's "bulk notifications") go out through a second bot
object whose AIORateLimiter holds them to 30 messages/s; a 429 there becomes the outbox's
RetryAfter, so the worker reschedules instead of holding a slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from aiohttp import web
from telegram import BotCommand, ChatMember, Update
from telegram.error import BadRequest, ChatMigrated, Forbidden, RetryAfter, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    ContextTypes,
    ExtBot,
    MessageHandler,
    filters,
)
from telegram.request import BaseRequest, HTTPXRequest
from telegram.warnings import PTBDeprecationWarning, PTBUserWarning

from bot import delivery, notifications
from bot import telegram_convert as conv
from bot.channel import Dialogue, Inbound, Reply
from bot.telegram_http import AiohttpRequest
from storage import dispatch, outbox
from storage.db import Store

log = logging.getLogger("careloop.telegram")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# my_chat_member: the customer blocked the bot, or unblocked it.
ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "my_chat_member"]
MAX_UPDATE_BYTES = 256 * 1024  # an Update is a few KB; anything near this is not Telegram
DEFAULT_MAX_FILE_BYTES = 10 * 1024 * 1024
NOTIFY_RATE = 30  # Telegram: about 30 messages/s for bulk notifications
SEEN_UPDATES = 10_000  # update_ids remembered for the in-process duplicate check
POISON_ATTEMPTS = 5  # an update failing this often is logged and skipped, not retried forever
COMMANDS = {
    "en": [("start", "Welcome and menu"), ("new", "Report a problem or give feedback"),
           ("status", "Your open tickets"), ("human", "Talk to a person"),
           ("lang", "Language: /lang en or /lang zh"), ("cancel", "Stop the current step")],
    "zh": [("start", "欢迎与菜单"), ("new", "反馈问题或建议"), ("status", "查看我的工单"),
           ("human", "转人工客服"), ("lang", "语言：/lang en 或 /lang zh"),
           ("cancel", "取消当前操作")],
}

Render = Callable[[outbox.Delivery], list[Reply]]
MarkDelivered = Callable[[Store, list[int]], Awaitable[None]]
Callback = Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]


# How long a chat reply may keep waiting out 429s inline: the dialogue's 15 s grace
# (ChatPolicy.grace), less a request's 5 s timeout and a margin, after which the outbox worker
# sends what is still pending.
REPLY_DEADLINE_SECONDS = 8.0


def secret_from_token(token: str) -> str:
    """The webhook secret when none is configured: derived from the bot token, so every process
    with the same token agrees on it, and nobody without the token can forge an update."""
    return hashlib.sha256(b"careloop-telegram-webhook:" + token.encode()).hexdigest()


@dataclass
class _Handling:
    error: BaseException | None = None


_HANDLING: ContextVar[_Handling | None] = ContextVar("telegram_handling", default=None)


class _HandleOnPut(asyncio.Queue[object]):
    """The update queue PTB's Updater fills while polling. `put` handles the update before it
    returns, and the Updater only advances its getUpdates offset (confirming the batch to
    Telegram) after every `put` of the batch returned: nothing is confirmed unhandled."""

    def __init__(self, handle: Callable[[Update], Awaitable[None]]) -> None:
        super().__init__()
        self._handle = handle

    async def put(self, item: object) -> None:
        if isinstance(item, Update):
            await self._handle(item)
        else:  # PTB's own stop signal for its update fetcher
            await super().put(item)


class TelegramChannel:
    def __init__(
        self,
        token: str,
        api_base: str,
        mode: Literal["polling", "webhook"],
        webhook_url: str | None,
        webhook_secret: str | None,
        dialogue: Dialogue,
        store: Store,
        *,
        render: Render = notifications.render,
        mark_delivered: MarkDelivered | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        notify_rate: float = NOTIFY_RATE,
        reply_retries: int = 3,
        reply_deadline: float = REPLY_DEADLINE_SECONDS,
        polling_timeout: int = 10,
        transport: Literal["aiohttp", "httpx"] = "aiohttp",
    ) -> None:
        if mode == "webhook" and not webhook_url:
            raise ValueError("webhook mode needs CARELOOP_TELEGRAM_WEBHOOK_URL")
        api_base = api_base.rstrip("/")
        self.mode = mode
        self.webhook_url = webhook_url
        self.webhook_path = urlsplit(webhook_url).path or "/" if webhook_url else None
        self._secret = webhook_secret or secret_from_token(token)
        self.dialogue = dialogue
        self.store = store
        self._render = render
        # By default replies are marked delivered in batches by a background task, off the
        # reply's path (bot/delivery.py: the dialogue's 15 s grace makes that safe).
        self._batcher = delivery.DeliveryBatcher(store) if mark_delivered is None else None
        self._mark_delivered: MarkDelivered = (
            mark_delivered if mark_delivered is not None else self._batcher  # type: ignore[assignment]
        )
        self.max_file_bytes = max_file_bytes
        self._reply_retries = reply_retries
        self._reply_deadline = reply_deadline
        self._polling_timeout = polling_timeout
        self.transport = transport
        self.app: Application[Any, Any, Any, Any, Any, Any] = (
            ApplicationBuilder()
            .token(token)
            .base_url(f"{api_base}/bot")
            .base_file_url(f"{api_base}/file/bot")
            # Replies: no global cap (they answer someone who just wrote), the group limit;
            # a 429 comes back to _send_reply, which waits it out only within the deadline.
            .rate_limiter(AIORateLimiter(overall_max_rate=0, max_retries=0))
            .update_queue(_HandleOnPut(self._handle_polled))
            .job_queue(None)
            # Replies and files go through python-telegram-bot's pluggable transport on
            # aiohttp (bot/telegram_http.py): httpcore, under PTB's default, scans its whole
            # pool on every request. getUpdates keeps PTB's own request object.
            .request(_request(transport, 32))
            .build()
        )
        # Outbox messages: a bot of their own, held to Telegram's 30 messages/s; no retries in
        # the limiter, a 429 goes back to the outbox worker as RetryAfter. Two messages per
        # 2/30 s rather than 30 per second: aiolimiter is a leaky bucket, and a bucket of 30
        # lets 60 through in the first second after a quiet spell; a bucket of one loses every
        # wake-up a busy event loop runs late (90 % of the rate under load), two keep it.
        self.notify_bot: ExtBot[int] = ExtBot(
            token,
            base_url=f"{api_base}/bot",
            base_file_url=f"{api_base}/file/bot",
            request=_request(transport, 64),
            rate_limiter=AIORateLimiter(
                overall_max_rate=2, overall_time_period=2 / notify_rate, max_retries=0
            ),
        )
        # send_text calls do_api_request("sendMessage") on purpose; PTB suggests send_message.
        warnings.filterwarnings(
            "ignore", message=r"Please use 'Bot\.sendMessage'", category=PTBUserWarning
        )
        self._add_handlers()
        self._ready = False
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._failures: dict[int, int] = {}
        self._refused_groups: set[int] = set()

    # --- the surface the composition root uses --------------------------------------------

    async def start(self, *, receive: bool = True) -> None:
        """`receive=False`: only send (an outbox worker process). Receiving is the job of one
        kind of process: `bot` processes poll; in webhook mode the desk processes answer."""
        await self.app.initialize()  # getMe: a wrong token or base URL fails here, loudly
        await self.notify_bot.initialize()
        if not receive:
            log.info("Telegram channel ready to send as @%s", self.app.bot.username)
            return
        await self._publish_commands()
        if self.mode == "webhook":
            await self.app.bot.set_webhook(
                url=self.webhook_url or "",
                secret_token=self._secret,
                allowed_updates=ALLOWED_UPDATES,
                max_connections=100,
            )
            self._ready = True
        else:
            self._ready = True
            await self.app.updater.start_polling(  # type: ignore[union-attr]
                timeout=self._polling_timeout,
                allowed_updates=ALLOWED_UPDATES,
                drop_pending_updates=False,
            )
        log.info("Telegram channel started (%s) as @%s", self.mode, self.app.bot.username)

    async def stop(self) -> None:
        """Stops taking updates, lets the ones being handled finish, then closes. The webhook
        stays registered: Telegram keeps updates for us while we are away."""
        self._ready = False
        updater = self.app.updater
        if updater is not None and updater.running:
            await updater.stop()
        if self._in_flight:
            await asyncio.wait(list(self._in_flight.values()), timeout=5)
        if self.app.running:
            await self.app.stop()
        if self._batcher is not None:
            await self._batcher.close()
        await self.app.shutdown()
        await self.notify_bot.shutdown()

    def webhook_hook(self, app: web.Application) -> None:
        """A desk route hook: Telegram's POSTs arrive on the webhook URL's path."""
        if self.webhook_path:
            app.router.add_post(self.webhook_path, self._on_webhook)

    async def sender(self, message: outbox.Delivery) -> None:
        """The outbox sender for channel `telegram` (storage/dispatch.py's protocol)."""
        if not message.recipient:
            raise dispatch.PermanentFailure("no Telegram chat for this customer")
        chat_id = int(message.recipient)
        parts = [chunk for reply in self._render(message) for chunk in conv.chunks_of(reply)]

        async def send_one(part: tuple[str, conv.Markup | None]) -> None:
            try:
                await send_text(self.notify_bot, chat_id, *part)
            except RetryAfter as exc:
                raise dispatch.RetryAfter(_seconds(exc), str(exc)) from exc
            except Forbidden as exc:  # blocked by the user, user deactivated
                raise dispatch.PermanentFailure(str(exc), unreachable=True) from exc
            except BadRequest as exc:
                unreachable = "chat not found" in exc.message.lower()
                raise dispatch.PermanentFailure(str(exc), unreachable=unreachable) from exc
            except ChatMigrated as exc:  # a group became a supergroup: not a customer chat
                raise dispatch.PermanentFailure(str(exc)) from exc
            # NetworkError, TimedOut, 5xx: transient, the worker backs off and retries.

        await dispatch.send_parts(message, parts, send_one)

    # --- receiving ---------------------------------------------------------------------------

    async def _on_webhook(self, request: web.Request) -> web.StreamResponse:
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self._secret.encode()):
            return web.Response(status=403, text="forbidden")
        if not self._ready:
            return web.Response(status=503, text="starting")  # Telegram retries later
        if (request.content_length or 0) > MAX_UPDATE_BYTES:
            return web.Response(status=413, text="too large")
        body = await request.content.read(MAX_UPDATE_BYTES + 1)
        if len(body) > MAX_UPDATE_BYTES:
            return web.Response(status=413, text="too large")
        try:
            data = json.loads(body)
        except ValueError:
            return web.Response(status=400, text="not an update")
        plain = conv.plain_text_inbound(data)
        if plain is not None:
            # Most updates: skip building PTB's objects and running its handler chain.
            uid, inbound = plain
            handle = self._text_handler(uid, inbound)
        else:
            try:
                update = Update.de_json(data, self.app.bot)
            except (ValueError, TypeError, KeyError):
                return web.Response(status=400, text="not an update")
            if update is None:
                return web.Response(status=400, text="not an update")
            uid, handle = update.update_id, self._update_handler(update)
        try:
            await self._handle_once(uid, handle)
        except Exception:
            # Not handled: a 5xx makes Telegram deliver it again later.
            return web.Response(status=500, text="try again")
        return web.Response(status=200)

    async def _handle_polled(self, update: Update) -> None:
        """Polling: a failing update is retried in place with a growing pause — the Updater
        waits, so nothing after it is confirmed either — until _handle_once gives up on it."""
        pause = 0.5
        while True:
            try:
                await self._handle_once(update.update_id, self._update_handler(update))
                return
            except Exception:
                await asyncio.sleep(pause)
                pause = min(pause * 2, 30.0)

    def _update_handler(self, update: Update) -> Callable[[], Coroutine[Any, Any, None]]:
        return lambda: self.handle(update)

    def _text_handler(
        self, uid: int, inbound: Inbound
    ) -> Callable[[], Coroutine[Any, Any, None]]:
        return lambda: self._converse(uid, inbound)

    async def _handle_once(
        self, uid: int, handle: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        """Handle each update_id once per process; a duplicate arriving while the first is in
        flight waits for it (and shares its outcome)."""
        if uid in self._seen:
            return
        running = self._in_flight.get(uid)
        if running is None:
            running = asyncio.create_task(handle())
            self._in_flight[uid] = running
            running.add_done_callback(lambda _t: self._in_flight.pop(uid, None))
        try:
            await asyncio.shield(running)
        except Exception:
            failures = self._failures.get(uid, 0) + 1
            self._failures[uid] = failures
            if failures < POISON_ATTEMPTS:
                log.exception("update %s failed (attempt %d); Telegram will redeliver", uid,
                              failures)
                raise
            log.error("update %s failed %d times; skipping it", uid, failures)
            self._failures.pop(uid, None)
        self._remember(uid)

    def _remember(self, uid: int) -> None:
        self._seen[uid] = None
        self._failures.pop(uid, None)
        while len(self._seen) > SEEN_UPDATES:
            self._seen.popitem(last=False)

    async def handle(self, update: Update) -> None:
        """Run PTB's handlers on one update; raise what they raised (PTB would swallow it into
        its error handlers, and then a failed update would look handled)."""
        handling = _Handling()
        token = _HANDLING.set(handling)
        try:
            await self.app.process_update(update)
        finally:
            _HANDLING.reset(token)
        if handling.error is not None:
            raise handling.error

    def _add_handlers(self) -> None:
        private = filters.ChatType.PRIVATE
        add = self.app.add_handler
        add(MessageHandler(filters.ChatType.GROUPS, self._guard(self._on_group)))
        add(CallbackQueryHandler(self._guard(self._on_button)))
        add(ChatMemberHandler(self._guard(self._on_membership),
                              ChatMemberHandler.MY_CHAT_MEMBER))
        add(MessageHandler(filters.UpdateType.EDITED_MESSAGE & private,
                           self._guard(self._on_edited)))
        add(MessageHandler((filters.PHOTO | filters.Document.ALL) & private,
                           self._guard(self._on_file)))
        # Contract commands by name (the dialogue reads them from the text); any other text,
        # unknown commands included, goes to the dialogue too.
        add(CommandHandler([c for c, _ in COMMANDS["en"]], self._guard(self._on_text),
                           filters=private))
        add(MessageHandler(filters.TEXT & private, self._guard(self._on_text)))
        add(MessageHandler(filters.UpdateType.MESSAGE & private, self._guard(self._on_other)))

    def _guard(self, callback: Callback) -> Callback:
        async def guarded(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            try:
                await callback(update, context)
            except Exception as exc:
                handling = _HANDLING.get()
                if handling is None:
                    raise
                handling.error = exc

        return guarded

    async def _on_text(self, update: Update, _ctx: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        assert message is not None
        await self._converse(update.update_id, conv.base_inbound(update, text=message.text))

    async def _on_button(self, update: Update, _ctx: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        # Answer first: the customer's button stops spinning whatever the dialogue does next.
        with contextlib.suppress(TelegramError):
            await query.answer()
        if query.message is None or query.message.chat.type != "private":
            return
        await self._converse(update.update_id, conv.base_inbound(
            update, button=query.data, button_ref=str(query.message.message_id)
        ))

    async def _on_membership(self, update: Update, _ctx: ContextTypes.DEFAULT_TYPE) -> None:
        """A customer blocked the bot ("kicked") or unblocked it ("member"): the outbox stops
        or starts writing to them, without a refused send to find out."""
        change = update.my_chat_member
        if change is None or change.chat.type != "private":
            return
        status = change.new_chat_member.status
        if status not in (ChatMember.BANNED, ChatMember.MEMBER):
            return
        async with self.store.transaction() as session:
            await outbox.set_reachable(
                session, reachable=status == ChatMember.MEMBER, reason="blocked the bot",
                channel=conv.CHANNEL, external_id=str(change.chat.id),
            )
        # No chat id in the log: it identifies a person.
        log.info("a Telegram customer %s the bot",
                 "unblocked" if status == ChatMember.MEMBER else "blocked")

    async def _on_edited(self, update: Update, _ctx: ContextTypes.DEFAULT_TYPE) -> None:
        # An edit is not a new message: feeding it to the dialogue could answer a question
        # twice. Say so politely and let the customer send the correction.
        await self._say(update, conv.adapter_text("edited", update))

    async def _on_group(self, update: Update, _ctx: ContextTypes.DEFAULT_TYPE) -> None:
        chat = update.effective_chat
        assert chat is not None
        if chat.id in self._refused_groups:  # once per group, not a reply to every message
            return
        self._refused_groups.add(chat.id)
        await self._say(update, conv.adapter_text("group", update))

    async def _on_other(self, update: Update, _ctx: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        assert message is not None
        await self._converse(update.update_id, conv.base_inbound(
            update, unsupported=conv.unsupported_kind(message), text=message.caption
        ))

    async def _on_file(self, update: Update, _ctx: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        assert message is not None
        found = conv.attachment_of(message)
        assert found is not None
        attachment, file_id = found
        limit_mb = self.max_file_bytes // (1024 * 1024)
        content: bytes | None = None
        refusal: str | None = None
        if attachment.size > self.max_file_bytes:
            refusal = "too_large"
        else:
            try:
                tg_file = await self.app.bot.get_file(file_id)
                if (tg_file.file_size or 0) > self.max_file_bytes:
                    refusal = "too_large"
                else:
                    content = bytes(await tg_file.download_as_bytearray())
                    if len(content) > self.max_file_bytes:
                        content, refusal = None, "too_large"
            except BadRequest as exc:  # "file is too big" (over the Bot API's 20 MB)
                refusal = "too_large" if "too big" in exc.message.lower() else "file_failed"
        if refusal is not None:
            await self._say(update, conv.adapter_text(refusal, update, limit=limit_mb))
            if not message.caption:
                return
            await self._converse(update.update_id,
                                 conv.base_inbound(update, text=message.caption))
            return
        fetched = type(attachment)(
            kind=attachment.kind, file_id=attachment.file_id, file_name=attachment.file_name,
            mime_type=attachment.mime_type, size=len(content or b""), content=content,
        )
        await self._converse(update.update_id, conv.base_inbound(
            update, text=message.caption, attachments=(fetched,)
        ))

    # --- answering ---------------------------------------------------------------------------

    async def _converse(self, update_id: int, inbound: Inbound) -> None:
        """The dialogue stores the message and its replies (outbox rows); then the replies go
        out at once. A failure to send is not a failure to handle: the worker retries it."""
        replies = await self.dialogue(inbound)
        chat_id = int(inbound.customer_ref)
        sent: list[int] = []
        deadline = asyncio.get_running_loop().time() + self._reply_deadline
        for reply in replies:
            parts = conv.chunks_of(reply)
            done = 0
            try:
                for text, markup in parts:
                    await self._send_reply(chat_id, text, markup, deadline)
                    done += 1
            except TelegramError as exc:
                log.warning("reply to update %s not sent (%s); the outbox will retry",
                            update_id, type(exc).__name__)
                if done and reply.ref is not None:
                    # A long reply cut short: the worker sends the rest, not all of it again.
                    await self._record_parts(reply.ref, done)
                break
            if reply.ref is not None:
                sent.append(reply.ref)
        if sent:
            try:
                await self._mark_delivered(self.store, sent)
            except Exception:
                log.exception("could not mark replies delivered; the outbox may resend them")

    async def _record_parts(self, row_id: int, parts: int) -> None:
        try:
            await dispatch.record_parts(self.store, row_id, parts)
        except Exception:
            log.exception("could not record the parts of a reply sent; the outbox may repeat them")

    async def _send_reply(
        self, chat_id: int, text: str, markup: conv.Markup | None, deadline: float
    ) -> None:
        """sendMessage for a chat reply. A 429 is waited out here only while the wait ends
        before `deadline`: once the dialogue's grace is over the outbox worker sends the
        reply itself, and two senders would deliver it twice. Past it, the 429 goes up and
        the reply is left to the worker."""
        loop = asyncio.get_running_loop()
        retries = 0
        while True:
            try:
                await send_text(self.app.bot, chat_id, text, markup)
                return
            except RetryAfter as exc:
                wait = _seconds(exc)
                retries += 1
                if retries > self._reply_retries or loop.time() + wait >= deadline:
                    raise
                await asyncio.sleep(wait)

    async def _say(self, update: Update, text: str) -> None:
        chat = update.effective_chat
        assert chat is not None
        try:
            await send_text(self.app.bot, chat.id, text, None)
        except TelegramError as exc:
            log.warning("notice for update %s not sent: %s", update.update_id,
                        type(exc).__name__)

    async def _publish_commands(self) -> None:
        # The menu Telegram shows next to the text box, in English and Chinese.
        for language, commands in COMMANDS.items():
            try:
                await self.app.bot.set_my_commands(
                    [BotCommand(c, d) for c, d in commands],
                    language_code=None if language == "en" else language,
                )
            except TelegramError as exc:  # cosmetic: never stop start-up for it
                log.warning("could not publish the command menu: %s", exc)


async def send_text(
    bot: ExtBot[Any], chat_id: int, text: str, markup: conv.Markup | None
) -> None:
    """sendMessage through python-telegram-bot (its request, rate limiter and error types),
    without building a `Message` from Telegram's answer: nobody reads it, and parsing it was
    40 % of a reply's CPU. `do_api_request` is PTB's call for that; it warns that
    `send_message` exists, which we know (the filter is set in TelegramChannel)."""
    params: dict[str, Any] = {"chat_id": chat_id, "text": text}
    if markup is not None:
        params["reply_markup"] = markup
    await bot.do_api_request("sendMessage", api_kwargs=params)


def _request(transport: str, pool: int) -> BaseRequest:
    if transport == "httpx":
        # httpcore scans its whole pool for every request: a few dozen warm connections
        # serve hundreds of replies a second faster than hundreds of connections would.
        return HTTPXRequest(connection_pool_size=pool)
    return AiohttpRequest(connection_pool_size=pool)


def _seconds(exc: RetryAfter) -> float:
    # PTB 22 warns that retry_after becomes a timedelta in 23; accept both, quietly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        wait = exc.retry_after
    return float(wait if isinstance(wait, int) else wait.total_seconds())
