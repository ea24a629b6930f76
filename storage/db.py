"""Engines and transactions for SQLite (default) and PostgreSQL.

SQLite runs in WAL mode with foreign keys on and a busy timeout, and every transaction starts
with BEGIN IMMEDIATE: a read that later writes can then never deadlock against another writer
(the classic SQLITE_BUSY upgrade failure), so concurrent ticket writes simply queue.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import greenlet_spawn

SQLITE_BUSY_TIMEOUT_MS = 10_000
# asyncpg's errors for a connection the server no longer serves (class 08: connection
# exceptions; class 57: shut down or terminated by an operator), and its protocol left in a
# state it cannot use again (InternalClientError: a statement cut off by the server's
# goodbye while another was being sent).
_GONE = (
    asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError, asyncpg.InternalClientError, OSError,
)


# Raw connections kept checked out between optimistic chat turns (Store.raw): as many as the
# chat runs at once (ChatPolicy.concurrency), well inside the pool.
RAW_KEPT = 16


@dataclass(frozen=True)
class Store:
    """The engine and a session factory; `transaction()` is the unit of work."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    # Checked-out pool connections waiting for the next `raw()`: taking one off this list
    # costs nothing, a checkout from SQLAlchemy's pool and back 60-80 us of CPU (two greenlet
    # hops and the pool's bookkeeping), 2-3 % of a chat turn's.
    _kept: list[Any] = field(default_factory=list, repr=False, compare=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        async with self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def raw(self) -> AsyncIterator[asyncpg.Connection]:
        """PostgreSQL: a pooled asyncpg connection, outside any transaction (each statement
        commits by itself), for statements run directly (storage/direct.py). Taken from the
        same pool as everything else, without SQLAlchemy's Connection around it, which cost
        four times the checkout itself."""
        fairy = self._kept.pop() if self._kept else await self.engine.raw_connection()
        driver = fairy.driver_connection
        assert isinstance(driver, asyncpg.Connection)
        clean = False
        try:
            yield driver
            clean = True
        except _GONE as exc:
            # The database went away (a restart, a failover) and SQLAlchemy did not see it:
            # drop this connection, the kept ones and the pooled ones, as SQLAlchemy does on a
            # disconnect.
            fairy.invalidate(exc)
            await self._drop_kept()
            await self.engine.dispose(close=False)
            raise
        finally:
            # Kept only after a block that ended without an exception and left no transaction
            # open; anything else goes back to SQLAlchemy's pool, which resets or drops it (a
            # statement cut off mid-way can leave asyncpg's protocol busy).
            if (clean and len(self._kept) < RAW_KEPT and not driver.is_closed()
                    and not driver.is_in_transaction()):
                self._kept.append(fairy)
            else:
                await greenlet_spawn(fairy.close)

    async def _drop_kept(self) -> None:
        kept, self._kept[:] = list(self._kept), []
        for fairy in kept:
            fairy.invalidate()
            await greenlet_spawn(fairy.close)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        kept, self._kept[:] = list(self._kept), []
        for fairy in kept:
            await greenlet_spawn(fairy.close)
        await self.engine.dispose()


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # WAL + NORMAL survives a process crash with no loss; only an OS crash may drop the
        # last transactions, which is the usual trade for SQLite servers.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # ANALYZE and VACUUM ask for AUTOCOMMIT; wrapped in BEGIN they would be rolled back.
        # (get_isolation_level() reads the PRAGMA, not this option, so it cannot tell.)
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            conn.exec_driver_sql("BEGIN IMMEDIATE")


# PostgreSQL connections a process keeps open. The chat alone has 16 turns in flight
# (ChatPolicy.concurrency); the desk, the outbox worker and the delivered-marks batcher need
# theirs beside it. A connection beyond the pool (overflow) is opened for a burst and closed
# again when it comes back to a full pool, and opening one costs ~50 ms on a busy event loop
# (connect, then asyncpg's type introspection): with 10 + 10 overflow, the chat opened 26-43
# such connections in 30 s at 300 messages/s and its median reply went from 14 ms to 330 ms.
DEFAULT_POOL_SIZE = 24


def create_store(
    url: str, *, echo: bool = False, pool_size: int = DEFAULT_POOL_SIZE
) -> Store:
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"echo": echo}
    if parsed.get_backend_name() == "postgresql":
        # No pre-ping: it costs a round trip per transaction. A connection that died with the
        # server fails one statement, and SQLAlchemy then invalidates the whole pool. A small
        # overflow only for the rare spike above the pool (see DEFAULT_POOL_SIZE).
        kwargs |= {
            "pool_size": pool_size, "max_overflow": max(2, pool_size // 4),
            "pool_recycle": 1800,
        }
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    return Store(engine=engine, sessions=sessions)
