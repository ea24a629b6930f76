"""The composition root: the one place that builds the store, the rules, the desk, the workers
and (as they arrive) the channels and monitors from settings, and runs them."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TextIO

from aiohttp import web
from argon2 import PasswordHasher
from sqlalchemy import text

from config import processes
from config.channels import Channels, build_channels
from config.logging import setup_logging
from config.monitors import monitor_health, run_monitors
from config.settings import Settings
from desk.app import make_app
from desk.client_address import parse_networks
from desk.context import DeskContext
from nlu.factory import make_interpreter
from nlu.types import Interpreter
from storage import accounts
from storage.db import Store, create_store
from storage.dispatch import DispatchPolicy, run_dispatcher
from storage.intake import TicketIntake
from storage.migrate import MIGRATION_LOCK_ID, upgrade
from storage.sla import SlaPolicy, Target
from storage.sla_timer import check_deadlines
from storage.tickets import TicketRules

log = logging.getLogger("careloop")
ROLES = ("all", "bot", "monitors", "desk", "worker")
STOP_GRACE_SECONDS = 8.0


def sla_policy(settings: Settings) -> SlaPolicy:
    def target(t: Any) -> Target:
        return Target(
            timedelta(minutes=t.first_response_minutes), timedelta(minutes=t.resolution_minutes)
        )

    return SlaPolicy(
        priorities={p: target(t) for p, t in settings.sla.priorities.items()},
        categories={
            c: {p: target(t) for p, t in row.items()} for c, row in settings.sla.categories.items()
        },
        remind_at_fraction=settings.sla.remind_at_fraction,
    )


def dispatch_policy(settings: Settings) -> DispatchPolicy:
    return DispatchPolicy(
        max_attempts=settings.outbox_max_attempts,
        backoff_seconds=settings.outbox_backoff_seconds,
        backoff_max_seconds=settings.outbox_backoff_max_seconds,
        batch_size=settings.outbox_batch_size,
    )


def password_hasher() -> PasswordHasher:
    return PasswordHasher()


@dataclass
class Service:
    settings: Settings
    store: Store
    rules: TicketRules
    hasher: PasswordHasher
    interpreter: Interpreter
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")


def build_service(settings: Settings) -> Service:
    return Service(
        settings=settings,
        store=create_store(settings.database_url, pool_size=settings.db_pool_size),
        rules=TicketRules(sla=sla_policy(settings)),
        hasher=password_hasher(),
        interpreter=make_interpreter(settings.nlu_backend, settings.rasa_url),
    )


async def prepare(service: Service, out: TextIO, *, first_admin: bool = True) -> str:
    """Migrations, the secret key and the first admin: everything start-up must make sure of.
    Returns the key that signs cookies (the setting, or the one kept in the database)."""
    await upgrade(service.store)
    settings = service.settings
    now = service.rules.clock()
    async with service.store.transaction() as session:
        if service.store.is_postgres:  # processes starting at once: one makes key and admin
            await session.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                                  {"k": MIGRATION_LOCK_ID})
        secret = await accounts.secret_key(session)
        if settings.admin_user and settings.admin_password:
            await accounts.upsert_agent(
                session, service.hasher, username=settings.admin_user, role="admin",
                password=settings.admin_password.get_secret_value(), now=now,
            )
        elif first_admin and await accounts.count_agents(session) == 0:
            password = accounts.new_password()
            await accounts.upsert_agent(
                session, service.hasher, username="admin", role="admin", password=password,
                now=now,
            )
            # Printed once, on the terminal only (never logged): the operator needs it to log in.
            print(
                f"First desk account created: user admin, password {password}",
                file=out,
                flush=True,
            )
    return settings.secret_key.get_secret_value() if settings.secret_key else secret


async def _sla_loop(service: Service, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            async with service.store.transaction() as session:
                result = await check_deadlines(
                    session, service.rules, postgres=service.store.is_postgres
                )
            if result.breached or result.reminded:
                log.info("SLA: %d breached, %d reminded", result.breached, result.reminded)
        except Exception:
            log.exception("SLA pass failed; retrying")
        try:
            await asyncio.wait_for(stop.wait(), service.settings.sla_check_seconds)
        except TimeoutError:
            pass


async def _serve_desk(
    service: Service, channels: Channels, stop: asyncio.Event, out: TextIO, secret: str,
    reuse_port: bool,
) -> None:
    intake = TicketIntake(service.store, service.rules)
    intake.start()
    ctx = DeskContext(
        store=service.store,
        rules=service.rules,
        hasher=service.hasher,
        intake=intake,
        health={
            "nlu": service.interpreter.health,
            "monitors": await monitor_health(service.store, service.settings),
        },
        secret=secret,
        trusted_proxies=parse_networks(service.settings.desk_trusted_proxies),
    )
    app = make_app(ctx, extra=channels.route_hooks)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(
        runner, service.settings.desk_host, service.settings.desk_port, reuse_port=reuse_port
    )
    await site.start()
    host, port = service.settings.desk_host, service.settings.desk_port
    if port == 0 and runner.addresses:
        port = runner.addresses[0][1]
    print(f"careloop desk on http://{host}:{port}/", file=out, flush=True)
    if channels.webchat is not None:
        print(f"web chat on http://{host}:{port}/chat", file=out, flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()  # finishes requests in flight, so their tickets are written
        await intake.close()


def _parts(
    role: str, service: Service, channels: Channels, stop: asyncio.Event, out: TextIO,
    secret: str, reuse_port: bool,
) -> list[Awaitable[None]]:
    s = service.settings
    parts: list[Awaitable[None]] = []
    if role in ("all", "desk"):
        parts.append(_serve_desk(service, channels, stop, out, secret, reuse_port))
        if s.desk_processes > 1:
            # Spawned once this process has migrated the database and made the first admin.
            parts.append(processes.supervise(
                desk_process, (_for_desk_process(s),),
                s.desk_processes - 1, stop, grace_seconds=STOP_GRACE_SECONDS + 2,
            ))
    if role in ("all", "worker"):
        parts.append(
            run_dispatcher(
                service.store, channels.senders, dispatch_policy(s), stop,
                worker=service.worker_id,
            )
        )
        parts.append(_sla_loop(service, stop))
    if role in ("all", "monitors") and not (s.x_enabled or s.mastodon_enabled):
        log.info("social monitors are off (no X or Mastodon credentials)")
    elif role in ("all", "monitors"):
        # Only a part that runs until stopped goes in: a part that returns stops the service.
        parts.append(run_monitors(
            s, service.store, service.interpreter, service.worker_id, stop,
            dialogue=channels.dialogue, rules=service.rules,
        ))
    return parts


def _for_desk_process(settings: Settings) -> Settings:
    # load_settings' class is made at run time (it carries the TOML file's path), so it cannot
    # be pickled for a spawned process; the values, checked already, go in the plain class.
    values = {name: getattr(settings, name) for name in Settings.model_fields}
    return Settings.model_construct(**(values | {"desk_processes": 1}))


def desk_process(settings: Settings) -> None:
    """An extra desk process (config/processes.py): the `desk` role on the shared port."""
    setup_logging(settings.log_level)
    with open(os.devnull, "w") as quiet:  # the first process already printed the addresses
        asyncio.run(run_service(settings, "desk", quiet, reuse_port=True))


async def run_service(
    settings: Settings, role: str, out: TextIO, stop: asyncio.Event | None = None,
    *, reuse_port: bool = False,
) -> None:
    """`reuse_port`: the desk port is shared with other processes (CARELOOP_DESK_PROCESSES);
    set in each of them, the first one included."""
    reuse_port = reuse_port or settings.desk_processes > 1
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = build_service(settings)
    channels: Channels | None = None
    try:
        secret = await prepare(service, out)
        if role != "worker":  # workers deliver and time; they never read a customer's words
            # Train or load the NLU model now, not on the first customer's message.
            await service.interpreter.parse("hello")
        channels = build_channels(
            role, settings, service.store, service.rules, service.interpreter, secret
        )
        await channels.start()
        tasks = [
            asyncio.ensure_future(p)
            for p in _parts(role, service, channels, stop, out, secret, reuse_port)
        ]
        # Everything built at start-up (the NLU model's tables, PTB, SQLAlchemy's mappers)
        # lives as long as the process: keep it out of the garbage collector's full scans,
        # which otherwise stall the event loop ~120 ms a few times a minute under chat load
        # (bench.chat: the longest full collection 122 ms → 13 ms).
        gc.collect()
        gc.freeze()
        log.info("careloop running as %s (%s)", role, service.worker_id)
        await _until_stopped(tasks, stop)
    finally:
        if channels is not None:
            await channels.close()
        await service.interpreter.close()
        await service.store.close()


async def _until_stopped(tasks: Sequence[asyncio.Future[Any]], stop: asyncio.Event) -> None:
    """Run until SIGTERM (or a part crashing); then give work in flight a few seconds."""
    waiter: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    crashed = [t.exception() for t in done if t is not waiter and t.exception() is not None]
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE_SECONDS)
        for task in pending:
            task.cancel()
    if crashed and crashed[0] is not None:
        raise crashed[0]

