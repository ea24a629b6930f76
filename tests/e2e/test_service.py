"""`careloop run` as an operator runs it: start, drive the API, stop, crash, restart."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.service import careloop, careloop_env, free_port, start, wait_healthy

pytestmark = pytest.mark.e2e


def _token(env: dict[str, str], name: str = "ops") -> str:
    assert careloop("agents", "add", name, "--role", "admin", env=env).returncode == 0
    result = careloop("agents", "token", name, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_run_serves_the_api_and_stops_on_sigterm_within_10s(tmp_path: Path) -> None:
    port = free_port()
    env = careloop_env(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", port)
    log = tmp_path / "run.log"
    proc = start(env, log=log)
    try:
        wait_healthy(port, proc)
        token = _token(env)

        async def drive() -> dict[str, object]:
            headers = {"Authorization": f"Bearer {token}"}
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=headers) as http:
                r = await http.post("/api/tickets", json={
                    "channel": "in_store", "description": "Broken glass in aisle 4",
                    "customer": {"name": "Sam"}, "category": "product_safety"})
                assert r.status == 201
                number = (await r.json())["number"]
                r = await http.post(f"/api/tickets/{number}/status", json={"status": "resolved"})
                assert r.status == 200
                health = await (await http.get("/healthz")).json()
                assert health["nlu"]["backend"] == "embedded"
                assert health["nlu"]["status"] == "ok"
                return await (await http.get(f"/api/tickets/{number}")).json()  # type: ignore[no-any-return]

        ticket = asyncio.run(drive())
        assert ticket["priority"] == "P1" and ticket["status"] == "resolved"
        first_line = log.read_text()
        assert "First desk account created: user admin, password" in first_line
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()


def test_bad_settings_stop_start_up_with_one_line(tmp_path: Path) -> None:
    env = careloop_env(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", 0,
                       CARELOOP_TELEGRAM_MODE="pigeon")
    result = careloop("run", env=env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "CARELOOP_TELEGRAM_MODE" in result.stderr
    assert careloop("frobnicate", env=env).returncode == 2
    assert careloop("agents", "token", "ghost", env=env).returncode == 2


def test_agents_add_reads_the_password_from_stdin(tmp_path: Path) -> None:
    env = careloop_env(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", 0)
    done = careloop("agents", "add", "mei", "--role", "agent", "--password-stdin",
                    env=env, stdin="long enough secret\n")
    assert done.returncode == 0 and "long enough secret" not in done.stdout
    short = careloop("agents", "add", "mei", "--role", "agent", "--password-stdin",
                     env=env, stdin="short\n")
    assert short.returncode == 2 and "8 characters" in short.stderr
    assert careloop("db", "upgrade", env=env).returncode == 0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def crash_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'crash.db'}"
    return str(request.getfixturevalue("fresh_pg_database"))


def test_sigkill_during_concurrent_writes_loses_no_acknowledged_ticket(
    tmp_path: Path, crash_db: str
) -> None:
    """Every ticket the API acknowledged (201) survives a SIGKILL; numbers are never reused."""
    port = free_port()
    env = careloop_env(crash_db, port)
    proc = start(env, log=tmp_path / "run.log")
    wait_healthy(port, proc)
    token = _token(env)
    acknowledged: list[str] = []

    async def client(http: aiohttp.ClientSession, i: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                r = await http.post("/api/tickets", json={
                    "channel": "phone", "description": f"client {i} complaint",
                    "customer": {"name": f"c{i}", "phone": f"+1{i:04d}"}})
                if r.status == 201:
                    acknowledged.append((await r.json())["number"])
            except (TimeoutError, aiohttp.ClientError):
                return

    async def storm() -> None:
        stop = asyncio.Event()
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=headers) as http:
            tasks = [asyncio.create_task(client(http, i, stop)) for i in range(20)]
            while len(acknowledged) < 150:  # noqa: ASYNC110 - polling a plain list is the point
                await asyncio.sleep(0.02)
            proc.send_signal(signal.SIGKILL)  # no goodbye: mid-transaction for many clients
            await asyncio.wait_for(asyncio.gather(*tasks), 30)

    try:
        asyncio.run(storm())
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()

    proc2 = start(env, log=tmp_path / "run2.log")
    try:
        wait_healthy(port, proc2)

        async def check() -> tuple[set[str], str]:
            headers = {"Authorization": f"Bearer {token}"}
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=headers) as http:
                found: set[str] = set()
                cursor = None
                while True:
                    url = "/api/tickets?limit=200" + (f"&cursor={cursor}" if cursor else "")
                    page = await (await http.get(url)).json()
                    found |= {t["number"] for t in page["items"]}
                    cursor = page["next_cursor"]
                    if not cursor:
                        break
                r = await http.post("/api/tickets", json={
                    "channel": "phone", "description": "after the crash",
                    "customer": {"name": "late"}})
                return found, (await r.json())["number"]

        found, newest = asyncio.run(check())
        assert set(acknowledged) <= found
        numbers = [int(n[3:]) for n in found]
        assert len(numbers) == len(set(numbers))
        assert int(newest[3:]) > max(numbers)  # never reused
    finally:
        proc2.send_signal(signal.SIGTERM)
        try:
            proc2.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc2.kill()


def test_agents_revoke_takes_one_token_or_all_of_an_agent(tmp_path: Path) -> None:
    from storage import accounts
    from storage.db import create_store

    url = f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"
    env = careloop_env(url, free_port())
    first, second = _token(env), careloop("agents", "token", "ops", env=env).stdout.strip()

    async def working(*tokens: str) -> list[bool]:
        store = create_store(url)
        try:
            async with store.transaction() as s:
                now = datetime.now(UTC)
                return [await accounts.agent_for_token(s, t, now) is not None for t in tokens]
        finally:
            await store.close()

    assert asyncio.run(working(first, second)) == [True, True]
    one = careloop("agents", "revoke", "--token-stdin", env=env, stdin=first + "\n")
    assert one.returncode == 0 and one.stdout.strip() == "revoked 1 token"
    assert first not in one.stdout + one.stderr  # the token is not echoed back
    assert asyncio.run(working(first, second)) == [False, True]
    every = careloop("agents", "revoke", "ops", env=env)
    assert every.returncode == 0 and every.stdout.strip() == "revoked 1 token of ops"
    assert asyncio.run(working(first, second)) == [False, False]
    assert careloop("agents", "revoke", "ghost", env=env).returncode == 2
    assert careloop("agents", "revoke", env=env).returncode == 2
    both = careloop("agents", "revoke", "ops", "--token-stdin", env=env, stdin=second)
    assert both.returncode == 2 and "NAME" in both.stderr
