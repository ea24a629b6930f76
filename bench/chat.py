"""Chat benchmark: N concurrent Telegram customers through the real python-telegram-bot stack
(webhook mode) against the fake Bot API, next to a bare PTB echo bot measured in the same run;
then a status-update fan-out through the Telegram outbox sender and its 30 msg/s limiter.
Prints figures; never passes or fails.

    .venv/bin/python -m bench.chat [--db sqlite|postgres] [--customers 200] [--seconds 15]
                                   [--rate 300] [--fanout 10000]

The fake Bot API and the simulated customers run in a child process, so the bot's process
spends its CPU on the bot only. A customer writes, waits for the first reply (the latency is
from the fake queueing the update to the fake receiving the bot's sendMessage), waits until the
webhook POST is answered (all replies sent), and writes again: at once, or with `--rate`
after a think time that makes all of them together offer that many messages a second. What
they write follows the bot (`Cycle`): /new, a new complaint, "skip" until the summary's
Confirm shows, "yes", /status, a word more. The customers are machines: the dialogue's flood
throttle (8 messages per 10 s per chat) is raised for the run, or it would answer only the
first few messages of each.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import multiprocessing as mp
import os
import random
import socket
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from sqlalchemy import event, func, insert, select
from telegram import Update
from telegram.ext import Application, ApplicationBuilder, ContextTypes, MessageHandler, filters
from telegram.request import HTTPXRequest

from bench.databases import scratch_postgres
from bot import delivery
from bot.dialogue import make_dialogue
from bot.flows.turn import ChatPolicy
from bot.telegram import TelegramChannel
from bot.telegram_http import AiohttpRequest
from nlu.factory import make_interpreter
from nlu.types import Interpreter, Parse
from storage import dispatch, outbox
from storage.db import Store, create_store
from storage.direct import Direct
from storage.dispatch import DispatchPolicy
from storage.migrate import upgrade
from storage.models import ChannelIdentity, Customer, OutboxMessage
from storage.sla import SlaPolicy
from storage.tickets import TicketRules

SECRET = "bench_secret"
# Every complaint is a new text (a phrasing and an order number), as real complaints are: the
# NLU parses each one. The short answers repeat, as they do in real chats. One customer in
# five writes Chinese.
COMPLAINTS = {
    "en": [
        "My parcel for order {order} never arrived",
        "order {order} came damaged, the box was crushed and the mug is broken",
        "I was charged twice for order {order}, please refund one payment",
        "the delivery for {order} is a week late and nobody answers the phone",
        "wrong size sent for order {order}, I ordered a medium",
    ],
    "zh": [
        "订单{order}的快递一直没到，已经等了十天了",
        "订单{order}收到的杯子是碎的，包装也压坏了",
        "订单{order}被扣了两次钱，请退一笔",
    ],
}
WORDS = {
    "en": {"skip": "skip", "yes": "yes", "more": "hello, any news?"},
    "zh": {"skip": "跳过", "yes": "是", "more": "你好，有进展吗"},
}
MAX_SKIPS = 4


class Cycle:
    """One simulated customer, round and round: /new, a complaint, "skip" to each question
    until the summary's confirm button shows, "yes" (a ticket), /status, a word more (it goes
    on the new ticket). Customers start at different points, so the mix is steady."""

    def __init__(self, customer: int) -> None:
        self.customer = customer
        self.language = "zh" if customer % 5 == 4 else "en"
        self.phase = customer % 5
        self.complaints = 0
        self.skips = 0

    def kind_of(self, text: str) -> str:
        """What a text is, for latency by kind (a ticket's confirmation costs the most)."""
        words = WORDS[self.language]
        if text.startswith("/"):
            return text[1:]
        for kind in ("skip", "yes", "more"):
            if text == words[kind]:
                return "confirm" if kind == "yes" else kind
        return "complaint"

    def next(self, confirm_shown: bool) -> str:
        words = WORDS[self.language]
        phase = self.phase
        if phase == 2:  # answering the intake's questions
            if confirm_shown or self.skips >= MAX_SKIPS:
                self.phase, self.skips = 3, 0
                return words["yes"]
            self.skips += 1
            return words["skip"]
        self.phase = (phase + 1) % 5
        if phase == 0:
            return "/new"
        if phase == 1:
            self.complaints += 1
            templates = COMPLAINTS[self.language]
            template = templates[(self.customer + self.complaints) % len(templates)]
            return template.format(order=f"{100 + self.customer % 900}-{self.complaints:04d}")
        if phase == 3:
            return "/status"
        return words["more"]


ECHO_BASE, OURS_BASE, FANOUT_BASE = 100_000, 200_000, 1_000_000


# --- the child process: fake Bot API + customers ---------------------------------------------

def _child(conn: Connection) -> None:
    asyncio.run(_child_main(conn))


async def _child_main(conn: Connection) -> None:
    from tests.fakes.telegram_api import FakeTelegram

    fake = FakeTelegram(check_updates=False)
    await fake.start()
    conn.send(fake.api_base)
    loop = asyncio.get_running_loop()
    while True:
        command, args = await loop.run_in_executor(None, conn.recv)
        if command == "stop":
            break
        if command == "drive":
            conn.send(await _drive(fake, **args))
        elif command == "customers":
            from tests.fakes.telegram_updates import Customer as TgCustomer

            for i in range(args["n"]):
                fake.add_customer(TgCustomer(args["base"] + i))
            conn.send(True)
        elif command == "count":
            counts = [len(fake.bot_messages(args["base"] + i)) for i in range(args["n"])]
            conn.send({"lost": counts.count(0), "doubled": sum(1 for c in counts if c > 1),
                       "violations": len(fake.violations)})
    await fake.stop()


async def _drive(
    fake: Any, base: int, customers: int, seconds: float, warmup: list[str], rate: float = 0
) -> dict[str, Any]:
    from tests.fakes.telegram_updates import Customer as TgCustomer

    loop = asyncio.get_running_loop()
    first_reply: dict[int, asyncio.Future[float]] = {}
    delivered: dict[int, asyncio.Future[None]] = {}

    sends = 0

    confirm_shown: dict[int, bool] = {}

    def on_send(chat_id: int, msg: dict[str, Any]) -> None:
        nonlocal sends
        sends += 1
        rows = (msg.get("reply_markup") or {}).get("inline_keyboard") or []
        confirm_shown[chat_id] = any(
            str(b.get("callback_data", "")).startswith("confirm:") for row in rows for b in row
        )
        f = first_reply.get(chat_id)
        if f is not None and not f.done():
            f.set_result(time.monotonic())

    def on_delivered(uid: int) -> None:
        f = delivered.get(uid)
        if f is not None and not f.done():
            f.set_result(None)

    fake.on_send[:] = [on_send]
    fake.on_delivered[:] = [on_delivered]
    latencies: list[float] = []
    by_kind: dict[str, list[float]] = {}
    timeouts = 0

    async def one(who: Any, text: str, measured: bool, kind: str = "") -> None:
        nonlocal timeouts
        first_reply[who.id] = loop.create_future()
        uid = fake.text(who, text)
        delivered[uid] = loop.create_future()
        started = fake.injected_at[uid]
        try:
            at = await asyncio.wait_for(first_reply[who.id], 30)
            await asyncio.wait_for(delivered[uid], 30)
        except TimeoutError:
            timeouts += 1
            return
        finally:
            delivered.pop(uid, None)
        if measured:
            latencies.append(at - started)
            by_kind.setdefault(kind, []).append(at - started)

    async def warm(i: int) -> None:
        who = TgCustomer(base + i, f"C{i}", "zh-hans" if i % 5 == 4 else "en")
        for text in warmup:
            await one(who, text, measured=False)

    async def customer(i: int, deadline: float) -> None:
        who = TgCustomer(base + i, f"C{i}", "zh-hans" if i % 5 == 4 else "en")
        cycle = Cycle(i)
        # Paced (--rate): each customer writes every customers/rate seconds on average, with
        # jitter, so together they offer `rate` messages a second; one who falls behind
        # writes at once but never makes up for lost time in a burst. Unpaced: the next
        # message goes as soon as the last one is answered.
        jitter = random.Random(i)
        interval = customers / rate if rate else 0.0
        next_at = time.monotonic() + jitter.uniform(0, interval)
        while time.monotonic() < deadline:
            if interval:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at = max(next_at + interval * jitter.uniform(0.5, 1.5), time.monotonic())
            text = cycle.next(confirm_shown.get(who.id, False))
            await one(who, text, measured=True, kind=cycle.kind_of(text))

    # Warm-up first (identities, conversations, connections), then the measured window.
    await asyncio.gather(*(warm(i) for i in range(customers)))
    sends = 0
    pauses = GcPauses()
    gc.callbacks.append(pauses.on_gc)
    # The load generator keeps every message the bot sent (the fake's chats), so its heap
    # grows all run and its full collections reached 130–210 ms: a stall here is latency
    # charged to the bot. The generator collects before and after the window, not in it.
    gc.collect()
    gc.freeze()
    gc.disable()
    started, child_cpu, pg_cpu = time.monotonic(), time.process_time(), _postgres_cpu()
    try:
        with LoopLag() as lag:
            await asyncio.gather(*(customer(i, started + seconds) for i in range(customers)))
    finally:
        # The callback goes first: the collection the 30 s of garbage triggers once enabled
        # happens after the window and delays no reply that was measured.
        gc.callbacks.remove(pauses.on_gc)
        gc.enable()
    elapsed = time.monotonic() - started
    child_cpu, pg_cpu = time.process_time() - child_cpu, _postgres_cpu() - pg_cpu
    latencies.sort()
    return {
        "messages": len(latencies), "elapsed": elapsed, "timeouts": timeouts,
        "replies_per_message": sends / max(len(latencies), 1),
        "p50": _pct(latencies, 50), "p99": _pct(latencies, 99),
        "p99_by_kind": {k: _pct(sorted(v), 99) for k, v in sorted(by_kind.items())},
        # The rest of the machine's CPU per message: the fake Bot API with the simulated
        # customers (this process), and every PostgreSQL process.
        "child_cpu_ms": 1000 * child_cpu / max(len(latencies), 1),
        "child_gc_longest_ms": 1000 * pauses.longest,
        "child_lag": lag.summary(),
        "pg_cpu_ms": 1000 * pg_cpu / max(len(latencies), 1),
        "violations": len(fake.violations),
    }


@dataclass
class GcPauses:
    """The garbage collector's pauses while `on_gc` is in `gc.callbacks`."""

    seconds: list[float] = field(default_factory=list)
    _started: float = 0.0

    def on_gc(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds.append(time.perf_counter() - self._started)

    @property
    def longest(self) -> float:
        return max(self.seconds, default=0.0)


class LoopLag:
    """How late the event loop runs a 5 ms timer: a stall here (a long callback, a collection)
    delays every customer waiting on this process, whatever the database does."""

    def __init__(self) -> None:
        self.late: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.005
            await asyncio.sleep(0.005)
            self.late.append(loop.time() - due)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._watch())
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def summary(self) -> str:
        late = sorted(self.late)
        over = sum(1 for x in late if x > 0.020)
        return (f"p99 {1000 * _pct(late, 99):.1f} ms, longest {1000 * max(late, default=0):.1f}"
                f" ms, {over} stalls over 20 ms")


def _postgres_cpu() -> float:
    """CPU seconds used so far by the machine's PostgreSQL processes (Linux /proc)."""
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            if "(postgres" not in fields[0]:
                continue
            values = fields[1].split()
            total += int(values[11]) + int(values[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue  # a process that ended meanwhile
    return total / tick


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * p / 100))]


# --- the bot's process -----------------------------------------------------------------------

@dataclass
class Timed:
    """Where the time goes inside our handler: the NLU and the whole dialogue call."""

    nlu: list[float] = field(default_factory=list)
    dialogue: list[float] = field(default_factory=list)


class TimedInterpreter:
    def __init__(self, inner: Interpreter, timed: Timed) -> None:
        self.inner, self.timed = inner, timed

    async def parse(self, text: str) -> Parse:
        started = time.perf_counter()
        try:
            return await self.inner.parse(text)
        finally:
            self.timed.nlu.append(time.perf_counter() - started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Child:
    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=_child, args=(child_conn,), daemon=True)
        self.proc.start()
        self.api_base: str = self.conn.recv()

    async def ask(self, command: str, **args: Any) -> Any:
        self.conn.send((command, args))
        return await asyncio.get_running_loop().run_in_executor(None, self.conn.recv)

    def stop(self) -> None:
        self.conn.send(("stop", {}))
        self.proc.join(10)


async def serve(route: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/telegram/webhook", route)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/telegram/webhook"


async def echo_phase(child: Child, token: str, args: argparse.Namespace) -> dict[str, Any]:
    """The baseline: PTB's echo example behind the same kind of aiohttp webhook route."""
    async def echo(update: Update, _ctx: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None and update.message.text is not None
        await update.message.reply_text(update.message.text)

    # PTB's default request has a pool of one connection, which would serialise the echo
    # bot's replies: the baseline gets the same pool size as careloop's reply bot (32), on
    # PTB's default transport (httpx) unless --echo-transport says otherwise.
    request = (AiohttpRequest(32) if args.echo_transport == "aiohttp"
               else HTTPXRequest(connection_pool_size=32))
    app: Application[Any, Any, Any, Any, Any, Any] = (
        ApplicationBuilder().token(token).base_url(f"{child.api_base}/bot")
        .base_file_url(f"{child.api_base}/file/bot").request(request).build()
    )
    app.add_handler(MessageHandler(filters.TEXT, echo))

    async def route(request: web.Request) -> web.Response:
        update = Update.de_json(await request.json(), app.bot)
        await app.process_update(update)
        return web.Response()

    runner, url = await serve(route)
    await app.initialize()
    await app.bot.set_webhook(url, max_connections=100)
    result = await measured(child, ECHO_BASE, args, warmup=["hi"])
    await app.shutdown()
    await runner.cleanup()
    return result


async def measured(child: Child, base: int, args: argparse.Namespace,
                   warmup: list[str], trips: dict[str, int] | None = None,
                   timed: Timed | None = None,
                   others: BotProcesses | None = None) -> dict[str, Any]:
    # The warm-up (first contact: customers, identities, conversations) runs first, outside
    # the CPU measurement: its messages are not counted, so its CPU must not be either.
    await child.ask("drive", base=base, customers=args.customers, seconds=0,
                    warmup=warmup)
    # As `careloop run` does once started (config/bootstrap.py), for the echo bot too: what
    # start-up built stays out of the garbage collector's full scans.
    if timed is not None:  # the window's calls only, not the warm-up's first contacts
        timed.nlu.clear()
        timed.dialogue.clear()
    gc.collect()
    gc.freeze()
    # The garbage collector's pauses in the window: each one stalls every customer waiting.
    pauses = GcPauses()
    gc.callbacks.append(pauses.on_gc)
    profiler = cProfile.Profile() if args.profile and base != ECHO_BASE else None
    before = dict(trips or {})
    cpu, times = time.process_time(), os.times()
    others_cpu = await others.cpu() if others is not None else (0.0, 0.0)
    if profiler is not None:
        profiler.enable()
    with LoopLag() as lag:
        result: dict[str, Any] = await child.ask(
            "drive", base=base, customers=args.customers, seconds=args.seconds,
            rate=args.rate, warmup=[],
        )
    result["lag"] = lag.summary()
    gc.callbacks.remove(pauses.on_gc)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(f"{args.profile}.{base}")
    done, cpu = os.times(), time.process_time() - cpu
    more, more_sys = others_cpu
    if others is not None:
        after = await others.cpu()
        more, more_sys = after[0] - more, after[1] - more_sys
    result["cpu_per_message_ms"] = 1000 * (cpu + more) / max(result["messages"], 1)
    # The kernel's share (system time) is mostly loopback socket work: round trips to the
    # database and HTTP to the fake, so it moves with the number of round trips per message.
    result["sys_per_message_ms"] = (
        1000 * (done.system - times.system + more_sys) / max(result["messages"], 1)
    )
    result["rate"] = result["messages"] / result["elapsed"]
    result["gc_longest_ms"] = 1000 * pauses.longest
    result["gc_total_ms"] = 1000 * sum(pauses.seconds)
    if trips is not None:
        # Counted in this process only: per message it handled (the dialogue's calls).
        handled = len(timed.dialogue) if timed is not None else result["messages"]
        result["trips"] = {k: (v - before.get(k, 0)) / max(handled, 1)
                           for k, v in trips.items()}
    return result


def _careloop_dialogue(store: Store, interpreter: Any, args: argparse.Namespace,
                       flags: list[str]) -> Any:
    return make_dialogue(store, TicketRules(sla=SlaPolicy()), interpreter,
                         policy=ChatPolicy(burst=1_000_000,
                                           concurrency=args.concurrency or ChatPolicy.concurrency,
                                           optimistic="locked" not in flags))


async def _careloop_channel(
    token: str, api_base: str, store: Store, dialogue: Any, sock: socket.socket,
    transport: str, flags: list[str],
) -> tuple[TelegramChannel, web.AppRunner]:
    """careloop's Telegram channel in webhook mode, served on `sock`."""
    app = web.Application()
    runner = web.AppRunner(app, access_log=None)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/telegram/webhook"
    channel = TelegramChannel(
        token, api_base, "webhook", url, SECRET, dialogue, store,
        transport=transport,  # type: ignore[arg-type]
        mark_delivered=delivery.mark_delivered if "inline" in flags else None,
    )
    # The channel needs its URL before the route exists; bind first, then add the route.
    channel.webhook_hook(app)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    await channel.start()
    return channel, runner


def _shared_socket(port: int = 0) -> socket.socket:
    """A listening address several processes bind at once (SO_REUSEPORT), as
    CARELOOP_DESK_PROCESSES does: the kernel spreads the fake's connections over them."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def _bot_process(conn: Connection, db_url: str, token: str, api_base: str, port: int,
                 variant: str, args: argparse.Namespace) -> None:
    """One more careloop process (--processes): the same channel on the shared port."""
    async def main() -> None:
        store = create_store(db_url)
        transport, *flags = variant.split("-")
        interpreter = make_interpreter("embedded")
        await interpreter.parse("warm up the model")
        dialogue = _careloop_dialogue(store, interpreter, args, flags)
        channel, runner = await _careloop_channel(
            token, api_base, store, dialogue, _shared_socket(port), transport, flags)
        gc.collect()
        gc.freeze()  # as `careloop run` does once started
        conn.send("ready")
        loop = asyncio.get_running_loop()
        while (command := await loop.run_in_executor(None, conn.recv)) != "stop":
            if command == "cpu":
                t = os.times()
                conn.send((t.user + t.system, t.system))
        await channel.stop()
        await runner.cleanup()
        await store.close()

    asyncio.run(main())


class BotProcesses:
    """careloop processes beside this one, on the same port; their CPU is counted with ours."""

    def __init__(self) -> None:
        self.conns: list[Connection] = []
        self.procs: list[Any] = []

    def start(self, n: int, *args: Any) -> None:
        ctx = mp.get_context("spawn")
        for _ in range(n):
            conn, child_conn = ctx.Pipe()
            proc = ctx.Process(target=_bot_process, args=(child_conn, *args), daemon=True)
            proc.start()
            self.conns.append(conn)
            self.procs.append(proc)
        for conn in self.conns:
            assert conn.recv() == "ready"

    async def cpu(self) -> tuple[float, float]:
        """CPU seconds so far, all of them together: (user + system, system)."""
        def ask() -> tuple[float, float]:
            total = system = 0.0
            for conn in self.conns:
                conn.send("cpu")
                both, sys_ = conn.recv()
                total, system = total + both, system + sys_
            return total, system
        return await asyncio.get_running_loop().run_in_executor(None, ask)

    def stop(self) -> None:
        for conn, proc in zip(self.conns, self.procs, strict=True):
            conn.send("stop")
            proc.join(15)
        self.conns, self.procs = [], []


async def ours_phase(
    child: Child, token: str, store: Store, args: argparse.Namespace, base: int, variant: str,
    db_url: str,
) -> tuple[dict[str, Any], Timed, TelegramChannel, web.AppRunner]:
    timed = Timed()
    interpreter = TimedInterpreter(make_interpreter("embedded"), timed)
    await interpreter.parse("warm up the model")
    timed.nlu.clear()
    # A variant is a transport plus flags: "aiohttp-inline" marks replies delivered inline,
    # one transaction each, as before the background batch (bot/delivery.py); "-locked" runs
    # every turn in a locked transaction, as before optimistic turns (ChatPolicy.optimistic).
    transport, *flags = variant.split("-")
    inner = _careloop_dialogue(store, interpreter, args, flags)

    async def dialogue(inbound: Any) -> Any:
        started = time.perf_counter()
        try:
            return await inner(inbound)
        finally:
            timed.dialogue.append(time.perf_counter() - started)

    sock = _shared_socket()
    others = BotProcesses()
    if args.processes > 1:
        others.start(args.processes - 1, db_url, token, child.api_base,
                     sock.getsockname()[1], variant, args)
    channel, runner = await _careloop_channel(
        token, child.api_base, store, dialogue, sock, transport, flags)
    # Database round trips per message: statements, and transactions (BEGIN and COMMIT are
    # a round trip each on asyncpg).
    trips = {"statements": 0, "transactions": 0, "connections": 0}

    def on_connect(*_a: Any) -> None:
        trips["connections"] += 1

    def on_statement(*_a: Any) -> None:
        trips["statements"] += 1

    # Statements run on asyncpg directly (storage/direct.py) pass no SQLAlchemy event.
    originals = {name: getattr(Direct, name) for name in ("fetch", "fetchrow")}

    def counting(run: Any) -> Any:
        async def counted(self: Direct, raw: Any, params: dict[str, Any]) -> Any:
            trips["statements"] += 1
            return await run(self, raw, params)
        return counted

    # Transactions: asyncpg's Transaction.start runs for every one, SQLAlchemy's (a locked
    # turn) and those opened on a raw connection (a ticket confirmed in an optimistic turn).
    raw_start = asyncpg.transaction.Transaction.start

    async def counted_start(self: Any) -> None:
        trips["transactions"] += 1
        await raw_start(self)

    event.listen(store.engine.sync_engine, "before_cursor_execute", on_statement)
    event.listen(store.engine.sync_engine, "connect", on_connect)
    for name, run in originals.items():
        setattr(Direct, name, counting(run))
    asyncpg.transaction.Transaction.start = counted_start  # type: ignore[method-assign]
    try:
        print(f"careloop ({variant}): warm-up, then {args.seconds:.0f} s measured (pid "
              f"{os.getpid()})", file=sys.stderr, flush=True)
        result = await measured(child, base, args, warmup=["/start"], trips=trips, timed=timed,
                                others=others if args.processes > 1 else None)
    finally:
        others.stop()
        asyncpg.transaction.Transaction.start = raw_start  # type: ignore[method-assign]
        for name, run in originals.items():
            setattr(Direct, name, run)
        event.remove(store.engine.sync_engine, "before_cursor_execute", on_statement)
        event.remove(store.engine.sync_engine, "connect", on_connect)
    return result, timed, channel, runner


async def fanout_phase(child: Child, channel: TelegramChannel, store: Store,
                       n: int) -> dict[str, Any]:
    await child.ask("customers", base=FANOUT_BASE, n=n)
    now = datetime.now(UTC)
    async with store.transaction() as session:
        first_customer = int(await session.scalar(select(func.coalesce(func.max(Customer.id), 0)))
                             or 0) + 1
        first_identity = int(await session.scalar(
            select(func.coalesce(func.max(ChannelIdentity.id), 0))) or 0) + 1
        await session.execute(insert(Customer), [
            {"id": first_customer + i, "name": f"F{i}", "language": "en", "created_at": now}
            for i in range(n)])
        await session.execute(insert(ChannelIdentity), [
            {"id": first_identity + i, "customer_id": first_customer + i, "channel": "telegram",
             "external_id": str(FANOUT_BASE + i), "reachable": True, "created_at": now}
            for i in range(n)])
        await session.execute(insert(OutboxMessage), [
            {"key": f"bench-status-{uuid.uuid4().hex}", "channel": "telegram",
             "identity_id": first_identity + i, "ticket_id": None, "kind": "status_changed",
             "payload": {"number": f"CL-{10_000 + i}", "status": "in_progress",
                         "from": "acknowledged", "language": "en"},
             "status": outbox.PENDING, "attempts": 0, "next_attempt_at": now, "created_at": now}
            for i in range(n)])
    # The worker a `careloop run` process runs (run_dispatcher), stopped once every message
    # has had its answer from the fake; the time includes recording the last outcomes.
    policy = DispatchPolicy(batch_size=200, concurrency=60)
    stop = asyncio.Event()
    answered = 0

    async def sender(message: outbox.Delivery) -> None:
        nonlocal answered
        try:
            await channel.sender(message)
        except dispatch.RetryAfter:
            raise
        except dispatch.PermanentFailure:
            answered += 1
            raise
        answered += 1
        if answered >= n:
            stop.set()

    started = time.monotonic()
    await dispatch.run_dispatcher(store, {"telegram": sender}, policy, stop, worker="bench")
    elapsed = time.monotonic() - started
    async with store.read() as session:
        statuses = dict((await session.execute(
            select(OutboxMessage.status, func.count()).where(
                OutboxMessage.kind == "status_changed").group_by(OutboxMessage.status)
        )).all())
    counted = await child.ask("count", base=FANOUT_BASE, n=n)
    return {"messages": n, "elapsed": elapsed, "rate": n / elapsed, "statuses": statuses,
            **counted}


async def run(db_url: str, label: str, args: argparse.Namespace) -> None:
    store = create_store(db_url)
    await upgrade(store)
    child = Child()
    from tests.fakes.telegram_api import DEFAULT_TOKEN

    try:
        echo = await echo_phase(child, DEFAULT_TOKEN, args)
        rows = [(f"bare PTB echo ({args.echo_transport})", echo)]
        transports = args.transport.split(",")
        for n, transport in enumerate(transports):
            ours, timed, channel, runner = await ours_phase(
                child, DEFAULT_TOKEN, store, args, OURS_BASE + 100_000 * n, transport, db_url)
            procs = f" x{args.processes}" if args.processes > 1 else ""
            rows.append((f"careloop ({transport}){procs}", ours))
            if n < len(transports) - 1:
                await channel.stop()
                await runner.cleanup()
        pace = f"paced at {args.rate:.0f} msg/s offered" if args.rate else "unpaced"
        print(f"\n== {label}: {args.customers} concurrent customers ({pace}), "
              f"{args.seconds:.0f} s, "
              f"webhook mode, cores: {os.cpu_count()}")
        print(f"{'':24}{'msg/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/msg':>12}"
              f"{'of it sys':>10}{'timeouts':>10}")
        for name, r in rows:
            print(f"{name:24}{r['rate']:8.0f}{1000 * r['p50']:9.1f}{1000 * r['p99']:9.1f}"
                  f"{r['cpu_per_message_ms']:12.2f}{r['sys_per_message_ms']:10.2f}"
                  f"{r['timeouts']:10d}")
        for name, r in rows[1:]:
            ratio = r["cpu_per_message_ms"] / max(echo["cpu_per_message_ms"], 1e-9)
            print(f"per-message CPU, {name} / echo: {ratio:.2f}x; per message: "
                  f"{r['replies_per_message']:.2f} replies (echo {echo['replies_per_message']:.2f})"
                  f", {r['trips']['statements']:.2f} statements in "
                  f"{r['trips']['transactions']:.2f} transactions; "
                  f"{r['trips']['connections'] * r['messages']:.0f} new database connections")
        for name, r in rows:
            print(f"machine CPU per message, {name}: bot {r['cpu_per_message_ms']:.2f} ms + "
                  f"fake API and customers {r['child_cpu_ms']:.2f} ms + PostgreSQL "
                  f"{r['pg_cpu_ms']:.2f} ms")
        for name, r in rows:
            print(f"garbage collector, {name}: longest pause {r['gc_longest_ms']:.1f} ms, "
                  f"{r['gc_total_ms']:.0f} ms in all (the fake's and customers' process: "
                  f"longest {r['child_gc_longest_ms']:.1f} ms)")
        for name, r in rows:
            print(f"event loop lateness, {name}: bot {r['lag']}; fake API and customers "
                  f"{r['child_lag']}")
        for name, r in rows:
            kinds = ", ".join(f"{k} {1000 * v:.0f}" for k, v in r["p99_by_kind"].items())
            print(f"p99 ms by message, {name}: {kinds}")
        if timed.dialogue:
            d = statistics.mean(timed.dialogue) * 1000
            nlu = statistics.mean(timed.nlu) * 1000 if timed.nlu else 0.0
            share_nlu = len(timed.nlu) / len(timed.dialogue)
            calls = sorted(timed.dialogue)
            d50, d99 = 1000 * _pct(calls, 50), 1000 * _pct(calls, 99)
            print(f"inside careloop's handler: dialogue call mean {d:.1f} ms, p50 {d50:.1f}, "
                  f"p99 {d99:.1f} (NLU parse "
                  f"{nlu:.1f} ms on {share_nlu:.0%} of messages; the rest is the store "
                  f"transaction), PTB + HTTP + sendMessage make up the remainder")
        print(f"fake API violations: {sum(r['violations'] for _, r in rows)}")
        if args.fanout:
            f = await fanout_phase(child, channel, store, args.fanout)
            print(f"fan-out: {f['messages']} status updates in {f['elapsed']:.1f} s = "
                  f"{f['rate']:.2f} msg/s ({f['rate'] / 30:.1%} of Telegram's 30 msg/s); "
                  f"lost {f['lost']}, doubled {f['doubled']}; outbox {f['statuses']}")
        await channel.stop()
        await runner.cleanup()
    finally:
        child.stop()
        await store.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    ap.add_argument("--customers", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--rate", type=float, default=0,
                    help="paced customers offering this many messages/s in all (think time "
                         "between messages); 0 = each writes again as soon as answered")
    ap.add_argument("--fanout", type=int, default=10_000)
    ap.add_argument("--transport", default="aiohttp",
                    help="careloop variant(s), comma-separated to compare in one run: the reply "
                         "transport, aiohttp (bot/telegram_http.py) or httpx (PTB's default), "
                         "optionally with -inline (delivered marks inline) and/or -locked "
                         "(every turn in a locked transaction): e.g. aiohttp,aiohttp-locked")
    ap.add_argument("--echo-transport", choices=["httpx", "aiohttp"], default="httpx")
    ap.add_argument("--concurrency", type=int, default=0,
                    help="the dialogue's transactions in flight (ChatPolicy.concurrency); "
                         "0 = the default")
    ap.add_argument("--processes", type=int, default=1,
                    help="careloop processes sharing the webhook port, as "
                         "CARELOOP_DESK_PROCESSES runs them (CPU is summed over them; "
                         "statements are counted in the first)")
    ap.add_argument("--profile", default="",
                    help="cProfile careloop's measured window into PATH.<base> (slows it down)")
    args = ap.parse_args()
    if args.db == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            await run(f"sqlite+aiosqlite:///{Path(tmp) / 'chat.db'}", "SQLite", args)
        return
    async with scratch_postgres() as url:
        await run(url, "PostgreSQL", args)


if __name__ == "__main__":
    asyncio.run(main())
