"""Debian's Chromium for the browser tests (the `browser` fixture is in conftest.py), and the
in-process desk they open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web
from argon2 import PasswordHasher

from bot import notifications
from bot.dialogue import make_dialogue
from bot.webchat import WebChat
from desk.app import make_app
from desk.context import DeskContext
from storage.db import Store
from storage.dispatch import DispatchPolicy, run_dispatcher
from storage.intake import TicketIntake
from storage.tickets import TicketRules
from tests.e2e.service import free_port
from tests.integration.test_dialogue_support import shared_interpreter

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
HAVE_CHROMIUM = Path(CHROMIUM).exists()


@asynccontextmanager
async def serve_desk_with_chat(
    store: Store, rules: TicketRules, hasher: PasswordHasher, secret: str
) -> AsyncIterator[str]:
    """The desk and the web chat in this process, with an outbox worker for the chat:
    yields the base URL. (The browser tests seed the store directly, which a service
    process would not let them do.)"""
    chat = WebChat(store, make_dialogue(store, rules, shared_interpreter()), secret,
                   notifications.render)
    intake = TicketIntake(store, rules)
    ctx = DeskContext(store=store, rules=rules, hasher=hasher, intake=intake, secret=secret)
    runner = web.AppRunner(make_app(ctx, extra=[chat.hook]), handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    worker = asyncio.ensure_future(run_dispatcher(
        store, {"webchat": chat.sender}, DispatchPolicy(idle_seconds=0.2), stop, worker="e2e"
    ))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await worker
        await runner.cleanup()
        await intake.close()
