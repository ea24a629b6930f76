"""Running the real Telegram channel against the fake: a channel in polling or webhook mode (its
webhook route on a loopback aiohttp server), and a small dialogue for channel-level tests."""

from __future__ import annotations

import itertools
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import aiohttp
from aiohttp import web
from sqlalchemy.exc import IntegrityError

from bot.channel import Button, Dialogue, Inbound, Reply
from bot.telegram import TelegramChannel
from storage import outbox
from storage.clock import utc_now
from storage.db import Store
from storage.tickets import identity_for
from tests.fakes.telegram_api import FakeTelegram

WEBHOOK_SECRET = "s3cret_Webhook-token"
LONG_LINE = "Your order history, line {n}: parcel handed to the courier and on its way."


@dataclass
class EchoDialogue:
    """A stand-in dialogue with the real one's storage contract: the customer's message and
    its replies are stored in one transaction (replies as outbox rows keyed by message_ref, due
    a little later), and a message_ref seen before gets no answer — also across processes."""

    store: Store
    seen: list[Inbound] = field(default_factory=list)

    async def __call__(self, inbound: Inbound) -> list[Reply]:
        self.seen.append(inbound)
        replies = self.answer(inbound)
        now = utc_now()
        try:
            async with self.store.transaction() as session:
                identity = await identity_for(
                    session, channel=inbound.channel, external_id=inbound.customer_ref,
                    display_name=inbound.display_name, language=inbound.language_hint, now=now,
                )
                stored = []
                for i, reply in enumerate(replies):
                    row = outbox.enqueue(
                        session, key=f"reply:{inbound.message_ref}:{i}", channel="telegram",
                        identity_id=identity.id, ticket_id=None, kind="chat_reply",
                        payload={"text": reply.text}, now=now + timedelta(seconds=30),
                    )
                    await session.flush()
                    stored.append(Reply(reply.text, reply.buttons, ref=row.id))
                return stored
        except IntegrityError:
            return []  # already answered: a redelivered update

    @staticmethod
    def answer(inbound: Inbound) -> list[Reply]:
        if inbound.unsupported:
            return [Reply(f"Sorry, I can't read a {inbound.unsupported} yet.")]
        if inbound.button:
            return [Reply(f"You chose {inbound.button}.")]
        if inbound.attachments:
            a = inbound.attachments[0]
            return [Reply(f"Got your {a.kind} ({len(a.content or b'')} bytes).")]
        text = inbound.text or ""
        if text == "/start":
            return [Reply("Welcome! Is this about an order?",
                          ((Button("Yes", "order:yes"), Button("No", "order:no")),))]
        if text == "/long":
            return [Reply("\n".join(LONG_LINE.format(n=n) for n in range(120)))]
        return [Reply(f"echo: {text}")]


@asynccontextmanager
async def webhook_server() -> AsyncIterator[tuple[web.Application, socket.socket, str]]:
    """An aiohttp app on a loopback port chosen now, so its URL is known before the channel
    (which needs the URL for setWebhook) adds its route."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = web.Application(client_max_size=1024 * 1024)
    yield app, sock, f"http://127.0.0.1:{port}/telegram/webhook"


@asynccontextmanager
async def running_channel(
    fake: FakeTelegram,
    store: Store,
    mode: Literal["polling", "webhook"],
    dialogue: Dialogue | None = None,
    *,
    public_url: str | None = None,
    local_urls: list[str] | None = None,
    **options: Any,
) -> AsyncIterator[TelegramChannel]:
    """`public_url`: what Telegram is told to post to, when a proxy or load balancer stands
    in front of this process (its path must be the channel's own); the process's own URL is
    appended to `local_urls`, for the load balancer."""
    dialogue = dialogue or EchoDialogue(store)
    options.setdefault("polling_timeout", 1)
    if mode == "polling":
        channel = TelegramChannel(
            fake.token, fake.api_base, "polling", None, None, dialogue, store, **options
        )
        await channel.start()
        try:
            yield channel
        finally:
            await channel.stop()
        return
    async with webhook_server() as (app, sock, url):
        if local_urls is not None:
            local_urls.append(url)
        channel = TelegramChannel(
            fake.token, fake.api_base, "webhook", public_url or url, WEBHOOK_SECRET, dialogue,
            store, **options,
        )
        channel.webhook_hook(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        await channel.start()
        try:
            yield channel
        finally:
            await channel.stop()
            await runner.cleanup()


@asynccontextmanager
async def load_balancer(backends: list[str]) -> AsyncIterator[str]:
    """Round-robin in front of several processes' webhook routes (same path on each), as a
    proxy in front of two careloop processes would be; answers what the backend answered."""
    turn = itertools.count()

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        target = backends[next(turn) % len(backends)]
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("content-type", "x-telegram-bot-api-secret-token")}
        async with aiohttp.ClientSession() as http, http.post(
            target, data=body, headers=headers
        ) as response:
            return web.Response(status=response.status, body=await response.read())

    async with webhook_server() as (app, sock, url):
        app.router.add_post("/telegram/webhook", forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        try:
            yield url
        finally:
            await runner.cleanup()
