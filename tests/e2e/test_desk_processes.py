"""Several desk processes on one port (CARELOOP_DESK_PROCESSES) in Telegram webhook mode: both
answer, customers are answered once each, a process that dies is replaced, and stopping the
first stops them all."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.service import careloop_env, free_port, start, wait_healthy
from tests.e2e.social import eventually
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.telegram_updates import Customer

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def _desk_children(pid: int) -> set[int]:
    """The spawned desk processes of `pid` (not multiprocessing's resource tracker)."""
    found = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                          if ":\t" in line)
            cmdline = (status.parent / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, ValueError):
            continue
        if int(fields.get("PPid", "0")) == pid and b"spawn_main" in cmdline:
            found.add(int(status.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _answering(port: int, tries: int = 60) -> set[int]:
    """Which processes answer /healthz, each request on a new connection."""
    seen = set()
    for _ in range(tries):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            seen.add(int(json.load(r)["process"]))
    return seen


async def _until(check: Callable[[], bool], what: str) -> None:
    async def probe() -> bool:
        return await asyncio.to_thread(check)

    await eventually(probe, what)


async def _all_answered_once(fake: FakeTelegram, crowd: list[Customer], text: str) -> None:
    before = {c.id: len(fake.bot_messages(c.id)) for c in crowd}
    for c in crowd:
        fake.text(c, text)
    for c in crowd:
        await fake.wait_for_messages(c.id, before[c.id] + 1, 30.0)
    await asyncio.sleep(0.5)  # a doubled reply would arrive by now
    for c in crowd:
        assert len(fake.bot_messages(c.id)) == before[c.id] + 1, fake.texts_to(c.id)


async def test_two_desk_processes_share_the_webhook_port(
    fake: FakeTelegram, tmp_path: Path, fresh_pg_database: str
) -> None:
    port = free_port()
    env = careloop_env(
        fresh_pg_database, port,
        CARELOOP_DESK_PROCESSES="2",
        CARELOOP_TELEGRAM_TOKEN=fake.token,
        CARELOOP_TELEGRAM_MODE="webhook",
        CARELOOP_TELEGRAM_WEBHOOK_URL=f"http://127.0.0.1:{port}/telegram/hook",
        CARELOOP_TELEGRAM_WEBHOOK_SECRET="s3cret-token_B",
    )
    env["CARELOOP_TELEGRAM_API_BASE"] = fake.api_base
    proc = start(env, "--role", "desk", log=tmp_path / "run.log")
    try:
        await asyncio.to_thread(wait_healthy, port, proc)
        await _until(lambda: len(_desk_children(proc.pid)) == 1, "a second desk process")
        [child] = _desk_children(proc.pid)
        await _until(lambda: _answering(port) == {proc.pid, child}, "both processes answer")

        crowd = [Customer(7000 + n, f"C{n}", "en") for n in range(30)]
        for c in crowd:
            fake.add_customer(c)
        await _all_answered_once(fake, crowd, "/start")
        await _all_answered_once(fake, crowd, "hello, I have a question about my order")

        os.kill(child, signal.SIGKILL)  # a crash: the first process starts another
        await _until(lambda: _desk_children(proc.pid) - {child} != set(), "a replacement")
        [replacement] = _desk_children(proc.pid)
        await _until(lambda: _answering(port) == {proc.pid, replacement}, "the replacement answers")
        await _all_answered_once(fake, crowd, "/status")
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 20)
    assert proc.returncode == 0
    assert not _running(replacement)
    log = (tmp_path / "run.log").read_text()
    assert "exited with -9" in log and fake.token not in log
