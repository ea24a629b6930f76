"""Shared fixtures: no outgoing connections, a store on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.db import Store, create_store
from storage.migrate import upgrade
from storage.models import Base

PG_HOST = os.environ.get("CARELOOP_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("CARELOOP_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("CARELOOP_TEST_PG_USER", "postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# --- no real internet, ever -------------------------------------------------------------

def _local(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if not _local(address):
        raise ConnectionRefusedError(f"tests may not connect to {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> Any:
    if not _local(address):
        raise ConnectionRefusedError(f"tests may not connect to {address!r}")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if name not in (None, "localhost") and not _is_ip_literal(name):
        raise socket.gaierror(f"tests may not resolve {name!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
socket.getaddrinfo = _guarded_getaddrinfo


# --- PostgreSQL: one database per test run ----------------------------------------------

async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres", timeout=5
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _pg_available() -> str | None:
    try:
        asyncio.run(_pg_admin("SELECT 1"))
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def pg_url(database: str) -> str:
    return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


@pytest.fixture(scope="session")
def pg_server() -> None:
    problem = _pg_available()
    if problem:
        message = f"PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable ({problem})"
        if IN_CI:
            pytest.fail(message + " — CI must test on the real server", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def pg_database(pg_server: None) -> Iterator[str]:
    name = f"careloop_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    url = pg_url(name)

    async def migrate() -> None:
        store = create_store(url)
        await upgrade(store)
        await store.close()

    asyncio.run(migrate())
    yield url
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def fresh_pg_database(pg_server: None) -> Iterator[str]:
    """An empty database of its own, for tests that run migrations or other processes."""
    name = f"careloop_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    yield pg_url(name)
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'careloop.db'}"
    return str(request.getfixturevalue("pg_database"))


async def _truncate(store: Store) -> None:
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    async with store.engine.begin() as conn:
        await conn.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """A migrated, empty store on SQLite or PostgreSQL (the test runs once on each)."""
    s = create_store(db_url)
    if s.is_postgres:
        await _truncate(s)
    else:
        await upgrade(s)
    yield s
    await s.close()


# --- Telegram: the fake Bot API ------------------------------------------------------------

@pytest.fixture
async def fake() -> AsyncIterator[Any]:
    """A fake Telegram Bot API on a loopback port. The test fails if the bot sent anything the
    real API would have rejected, or called a method the fake does not implement."""
    from tests.fakes.telegram_api import FakeTelegram

    server = FakeTelegram()
    await server.start()
    yield server
    await server.stop()
    assert server.violations == [], server.violations
    assert server.unimplemented == [], server.unimplemented
