"""The web chat: a page at /chat and a websocket at /chat/ws carrying the same dialogue as
Telegram, plus the outbox sender for channel "webchat". Served by the desk process.

Identity: a random visitor id in a signed cookie (webchat_security.VisitorCookie) is the
customer's `customer_ref`, so a returning visitor is the same customer.

Delivery (docs/webchat.md): the web chat is a mailbox. Everything the visitor is sent is an
outbox row for their identity, and the socket shows those rows:
- on connect, the recent conversation (what they wrote, and every row they were sent, including
  what arrived while they were away);
- while connected, rows pushed by the outbox sender when the worker runs in this process, and
  rows found by a once-a-second poll otherwise (several desk processes behind a load balancer:
  the visitor's socket lives in one of them, the worker in any).
So the sender never waits for the visitor: a row is "sent" once it is in the mailbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from bot import delivery as inline_delivery
from bot import webchat_store
from bot.channel import Dialogue, Reply
from bot.webchat_frames import (
    ChatLimits,
    ClientFrame,
    FrameError,
    Throttle,
    buttons_json,
    parse_frame,
    reply_frame,
)
from bot.webchat_security import (
    COOKIE_NAME,
    VisitorCookie,
    origin_allowed,
    page_headers,
    set_visitor_cookie,
)
from storage.clock import Clock, utc_now
from storage.db import Store
from storage.dispatch import PermanentFailure
from storage.outbox import PENDING, Delivery

log = logging.getLogger("careloop.webchat")

Renderer = Callable[[Delivery], list[Reply] | Awaitable[list[Reply]]]
"""Outbox row → replies in the customer's language (bot.notifications.render)."""

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {"chat.js": "text/javascript", "chat.css": "text/css", "camera.svg": "image/svg+xml"}
# How long a socket remembers which rows it showed; older ones fall below its floor.
SHOWN_MEMORY_SECONDS = 60.0
_LANG = re.compile(r"^[a-z]{2,3}$")


class Visit:
    """One open socket of one visitor."""

    def __init__(self, visitor: str, ws: web.WebSocketResponse, floor: int) -> None:
        self.visitor = visitor
        self.ws = ws
        # Rows at or below the floor were in the history (or are too old to push).
        self.floor = floor
        self.shown: dict[int, float] = {}
        # The handler, the poller and the sender all write here: frames go out whole.
        self._lock = asyncio.Lock()

    def claim(self, row_id: int) -> bool:
        """True once per row: whoever claims it first (reply, push or poll) shows it."""
        if row_id in self.shown:
            return False
        self.shown[row_id] = time.monotonic()
        return True

    def forget_old(self, now: float) -> None:
        old = [i for i, at in self.shown.items() if now - at > SHOWN_MEMORY_SECONDS]
        for i in old:
            del self.shown[i]
        if old:
            self.floor = max(self.floor, *old)

    async def send(self, frames: Iterable[dict[str, Any]]) -> bool:
        async with self._lock:
            try:
                for frame in frames:
                    await self.ws.send_json(frame)
            except (ConnectionError, RuntimeError):
                return False  # gone: the mailbox still has it for the next visit
        return True


def _language(request: web.Request) -> str | None:
    """The browser's language: the page passes navigator.language; Accept-Language otherwise."""
    for raw in (request.query.get("lang", ""), request.headers.get("Accept-Language", "")):
        tag = raw.split(",")[0].split(";")[0].strip().lower().replace("_", "-").split("-")[0]
        if _LANG.match(tag):
            return tag
    return None


class WebChat:
    """Build once per process; `hook` adds the routes to the desk app, `sender` goes into the
    outbox worker's senders under "webchat"."""

    def __init__(
        self,
        store: Store,
        dialogue: Dialogue,
        secret: str,
        render: Renderer,
        *,
        limits: ChatLimits | None = None,
        allowed_origins: Collection[str] = (),
        clock: Clock = utc_now,
    ) -> None:
        self.store = store
        self.dialogue = dialogue
        self.render = render
        self.limits = limits or ChatLimits()
        self.cookie = VisitorCookie(secret)
        self.allowed_origins = frozenset(o.rstrip("/") for o in allowed_origins)
        self.clock = clock
        self._page = (STATIC / "chat.html").read_bytes()
        self._assets = {name: (STATIC / name).read_bytes() for name in ASSETS}
        self._visits: dict[str, list[Visit]] = {}
        self._turns: dict[str, asyncio.Lock] = {}
        self._poller: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[Any]] = set()
        self._closing = False

    # --- wiring ---------------------------------------------------------------------------

    def hook(self, app: web.Application) -> None:
        app.router.add_get("/chat", self.page)
        app.router.add_get("/chat/ws", self.socket)
        app.router.add_get("/chat/static/{name}", self.asset)
        # Open sockets would hold shutdown until aiohttp's timeout: close them first (the page
        # reconnects, to another process behind a load balancer).
        app.on_shutdown.append(self._on_shutdown)

    async def _on_shutdown(self, _app: web.Application) -> None:
        await self.close()

    async def close(self) -> None:
        self._closing = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        for visits in list(self._visits.values()):
            for visit in list(visits):
                await visit.ws.close(code=WSCloseCode.GOING_AWAY, message=b"restarting")
        # Turns in flight finish (their replies are in the outbox either way); a few seconds
        # at most, inside the 10 s a SIGTERM allows.
        if self._background:
            await asyncio.wait(list(self._background), timeout=5.0)

    @property
    def open_sockets(self) -> int:
        return sum(len(v) for v in self._visits.values())

    # --- HTTP -----------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        visitor = self.cookie.verify(request.cookies.get(COOKIE_NAME))
        response = web.Response(
            body=self._page, content_type="text/html", charset="utf-8",
            headers=page_headers(request) | {"Cache-Control": "no-store"},
        )
        # A tampered or unknown cookie gets a new visitor, never the one it claimed to be.
        # Re-signing a valid one renews its year.
        set_visitor_cookie(
            response, request, self.cookie.sign(visitor or self.cookie.new_visitor())
        )
        return response

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return web.Response(
            body=self._assets[name], content_type=ASSETS[name],
            charset="utf-8" if name.endswith((".js", ".css")) else None,
            headers=page_headers(request) | {"Cache-Control": "no-cache"},
        )

    # --- the socket -----------------------------------------------------------------------

    async def socket(self, request: web.Request) -> web.StreamResponse:
        if not origin_allowed(request, self.allowed_origins):
            log.warning("web chat socket refused: Origin %r", request.headers.get("Origin"))
            raise web.HTTPForbidden(text="cross-origin chat connections are refused")
        # No valid cookie (blocked cookies, tampering): a visitor for this socket only.
        visitor = self.cookie.verify(request.cookies.get(COOKIE_NAME))
        visitor = visitor or self.cookie.new_visitor()
        ws = web.WebSocketResponse(
            heartbeat=self.limits.heartbeat_seconds, max_msg_size=self.limits.max_frame_bytes
        )
        await ws.prepare(request)
        language = _language(request)
        history = await webchat_store.history(self.store, visitor, self.limits.history)
        visit = Visit(visitor, ws, history.floor)
        for row in history.rows:
            visit.claim(row.delivery.id)
        self._register(visit)
        try:
            await visit.send([await self._history_frame(history)])
            await self._mark_shown([r for r in history.rows if r.status == PENDING])
            await self._serve(visit, language)
        finally:
            self._unregister(visit)
        return ws

    async def _serve(self, visit: Visit, language: str | None) -> None:
        """Reads frames as they come and queues them; `_answer` works through the queue at
        the throttled rate. A queue over the cap is a flood: that socket is closed."""
        backlog: asyncio.Queue[ClientFrame | None] = asyncio.Queue()
        # A task of its own, shielded: aiohttp may cancel the handler when the connection
        # drops, and a turn cut off mid-way would leave its replies unmarked or half-sent.
        answering = asyncio.ensure_future(self._answer(visit, backlog, language))
        self._background.add(answering)
        answering.add_done_callback(self._background.discard)
        try:
            async for msg in visit.ws:
                if msg.type == WSMsgType.BINARY:
                    await visit.send([FrameError("bad_frame", "frames are JSON text").frame()])
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    frame = parse_frame(msg.data, self.limits)
                except FrameError as exc:
                    await visit.send([exc.frame()])
                    continue
                if backlog.qsize() >= self.limits.max_backlog:
                    log.warning("web chat: closing a flooding socket")
                    await visit.send([FrameError(
                        "flood", "Too many messages at once; the chat was closed."
                    ).frame()])
                    await visit.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"flood")
                    break
                backlog.put_nowait(frame)
        finally:
            # What was received is answered even if the visitor left: the replies wait in
            # their mailbox. Bounded by max_backlog, and unthrottled once shutting down.
            backlog.put_nowait(None)
            await asyncio.shield(answering)

    async def _answer(
        self, visit: Visit, backlog: asyncio.Queue[ClientFrame | None], language: str | None
    ) -> None:
        throttle = Throttle(self.limits)
        warned = False
        while (frame := await backlog.get()) is not None:
            wait = throttle.take()
            if wait > 0 and not self._closing:
                if not warned:
                    warned = True
                    await visit.send([FrameError(
                        "slow_down", "You are sending quickly; answers follow in order."
                    ).frame()])
                await asyncio.sleep(wait)
            elif wait == 0:
                warned = False
            await self._turn(visit, frame, language)

    async def _turn(self, visit: Visit, frame: ClientFrame, language: str | None) -> None:
        # The page's id for the message: a resend after a reconnect is the same event, which
        # the dialogue drops as a duplicate (it namespaces refs by visitor itself).
        inbound = frame.inbound(visit.visitor, language, frame.client_id or uuid.uuid4().hex)
        # Two tabs of one visitor take turns here; across processes the dialogue's own
        # transaction (versioned conversation row) keeps the state consistent.
        async with self._turns.setdefault(visit.visitor, asyncio.Lock()):
            try:
                replies = await self.dialogue(inbound)
            except Exception:
                log.exception("web chat dialogue failed")
                await visit.send([FrameError(
                    "unavailable", "Sorry, that did not go through. Please try again.",
                    frame.client_id,
                ).frame()])
                return
        # Claimed before any await: the poller may already see these rows committed.
        fresh = [r for r in replies if r.ref is None or visit.claim(r.ref)]
        # The ack comes last: "answered", so the page (and a script) knows the turn is over.
        ack = [{"type": "ack", "id": frame.client_id}] if frame.client_id else []
        await visit.send([reply_frame(r) for r in fresh] + ack)
        await self._mark_ids([r.ref for r in replies if r.ref is not None])

    # --- pushing what the outbox holds ----------------------------------------------------

    async def sender(self, delivery: Delivery) -> None:
        """The outbox Sender for "webchat": shows the row on this process's open sockets of
        the visitor. Not connected here is not a failure: the row is in their mailbox, shown
        by the socket that holds them (poll) or on their next visit (history)."""
        if delivery.recipient is None:
            raise PermanentFailure("web chat row without a visitor")
        visits = [v for v in self._visits.get(delivery.recipient, []) if v.claim(delivery.id)]
        if not visits:
            return
        try:
            replies = await self._render(delivery)
        except Exception:
            for v in visits:
                v.shown.pop(delivery.id, None)
            raise
        for visit in visits:
            await visit.send(reply_frame(r) for r in replies)

    async def poll_once(self) -> int:
        """Show rows written since each socket's floor (by any process); returns how many."""
        visits = [v for vs in self._visits.values() for v in vs]
        if not visits:
            return 0
        floor = min(v.floor for v in visits)
        rows = await webchat_store.rows_after(self.store, {v.visitor for v in visits}, floor)
        shown: list[webchat_store.Row] = []
        for row in rows:
            targets = [
                v for v in self._visits.get(row.delivery.recipient or "", [])
                if row.delivery.id > v.floor and v.claim(row.delivery.id)
            ]
            if not targets:
                continue
            try:
                replies = await self._render(row.delivery)
            except Exception:
                log.exception("web chat: outbox row %s could not be rendered", row.delivery.id)
                continue
            for visit in targets:
                await visit.send(reply_frame(r) for r in replies)
            shown.append(row)
        await self._mark_shown([r for r in shown if r.status == PENDING])
        now = time.monotonic()
        for visit in visits:
            visit.forget_old(now)
        return len(shown)

    async def _poll_loop(self) -> None:
        while self._visits:
            await asyncio.sleep(self.limits.poll_seconds)
            try:
                await self.poll_once()
            except Exception:  # the database blinked: the next round catches up
                log.exception("web chat poll failed; retrying")
                await asyncio.sleep(5 * self.limits.poll_seconds)

    # --- helpers --------------------------------------------------------------------------

    def _register(self, visit: Visit) -> None:
        visits = self._visits.setdefault(visit.visitor, [])
        visits.append(visit)
        # Many tabs of one visitor: the oldest goes, so one browser cannot hold unbounded sockets.
        while len(visits) > self.limits.sockets_per_visitor:
            oldest = visits.pop(0)
            closing = asyncio.ensure_future(
                oldest.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too many tabs")
            )
            self._background.add(closing)
            closing.add_done_callback(self._background.discard)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll_loop())

    def _unregister(self, visit: Visit) -> None:
        visits = self._visits.get(visit.visitor, [])
        if visit in visits:
            visits.remove(visit)
        if not visits:
            self._visits.pop(visit.visitor, None)
            lock = self._turns.get(visit.visitor)
            if lock is not None and not lock.locked():
                del self._turns[visit.visitor]

    async def _render(self, delivery: Delivery) -> list[Reply]:
        result = self.render(delivery)
        replies = await result if inspect.isawaitable(result) else result
        # A button on a pushed message (the 1-5 survey) names the row it came with.
        return [r if r.ref is not None else dataclasses.replace(r, ref=delivery.id)
                for r in replies]

    async def _history_frame(self, history: webchat_store.History) -> dict[str, Any]:
        items: list[tuple[Any, int, int, dict[str, Any]]] = [
            (s.created_at, 0, s.id, {"from": "customer", "text": s.text})
            for s in history.said
        ]
        for row in history.rows:
            try:
                replies = await self._render(row.delivery)
            except Exception:  # one bad row must not keep the visitor out of the chat
                log.exception("web chat: outbox row %s could not be rendered", row.delivery.id)
                continue
            for n, reply in enumerate(replies):
                items.append((row.created_at, 1, row.delivery.id * 100 + n, {
                    "from": "bot", "text": reply.text, "buttons": buttons_json(reply),
                    "ref": reply.ref,
                }))
        items.sort(key=lambda item: item[:3])
        return {
            "type": "history",
            "language": history.language,
            "items": readable(item[3] for item in items)[-self.limits.history :],
        }

    async def _mark_shown(self, rows: list[webchat_store.Row]) -> None:
        await self._mark_ids([r.delivery.id for r in rows])

    async def _mark_ids(self, ids: list[int]) -> None:
        if not ids:
            return
        try:
            await inline_delivery.mark_delivered(self.store, ids, clock=self.clock)
        except Exception:  # the worker sends them later; the socket already dedupes
            log.exception("web chat: could not mark %d rows delivered", len(ids))


_BUTTON = re.compile(r"\[button ([^\]]*)\]")
_FILE = re.compile(r"\[(photo|document)( [^\]]*)?\]")


def readable(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The transcript as the visitor saw it: the dialogue stores a pressed button as
    "[button DATA]" and a photo as "[photo NAME]"; the page had shown the button's label and a
    camera. Labels come from the keyboards shown before (the newest first)."""
    labels: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for item in items:
        if item["from"] == "bot":
            for row in item.get("buttons", []):
                labels.update({b["data"]: b["label"] for b in row})
            out.append(item)
            continue
        text = _BUTTON.sub(lambda m: labels.get(m.group(1), ""), item["text"])
        text = _FILE.sub(lambda m: "📷" + (m.group(2) or ""), text).strip()
        if text:
            out.append(item | {"text": text})
    return out
