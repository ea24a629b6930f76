"""Transactions on the store: atomic by default, and AUTOCOMMIT really commits (ANALYZE)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

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
