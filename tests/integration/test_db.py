"""Transactions on the store: atomic by default, and AUTOCOMMIT really commits (ANALYZE)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import make_url, text

from storage.db import create_store


async def test_sqlite_autocommit_work_persists_and_transactions_roll_back(tmp_path: Path) -> None:
    store = create_store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    async with store.engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await auto.exec_driver_sql("CREATE TABLE kept (x INTEGER)")
        await auto.exec_driver_sql("INSERT INTO kept VALUES (1)")
        await auto.exec_driver_sql("ANALYZE")
    with pytest.raises(RuntimeError):
        async with store.transaction() as session:
            await session.execute(text("INSERT INTO kept VALUES (2)"))
            raise RuntimeError("crash before commit")
    async with store.read() as session:
        assert (await session.execute(text("SELECT x FROM kept"))).scalars().all() == [1]
        stats = await session.scalar(
            text("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")
        )
        assert stats == 1  # ANALYZE's statistics survived
    await store.close()


@pytest.mark.postgres
async def test_postgresql_through_its_unix_socket_serves_transactions_and_raw_turns(
    pg_database: str,
) -> None:
    # The recommended URL when PostgreSQL runs on the same machine (README, PostgreSQL):
    # `?host=<socket directory>`. The chat's raw connections must come through it too.
    over_tcp = create_store(pg_database)
    async with over_tcp.read() as session:
        directories = str(await session.scalar(text("SHOW unix_socket_directories")))
        port = int(str(await session.scalar(text("SHOW port"))))
    await over_tcp.close()
    socket_dir = directories.split(",")[0].strip()
    url = make_url(pg_database)
    store = create_store(
        f"postgresql+asyncpg://{url.username}@/{url.database}?host={socket_dir}&port={port}"
    )
    try:
        async with store.transaction() as session:
            assert await session.scalar(text("SELECT inet_server_addr()")) is None  # no TCP
        async with store.raw() as raw:
            assert await raw.fetchval("SELECT inet_server_addr()") is None
            assert await raw.fetchval("SELECT count(*) FROM outbox") >= 0
    finally:
        await store.close()
