"""Alembic, driven from code: `careloop db upgrade` and start-up both call `upgrade`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from storage.db import Store
from storage.models import Base

MIGRATIONS = Path(__file__).with_name("migrations")
# Any fixed 64-bit number: several processes starting at once on PostgreSQL take turns.
MIGRATION_LOCK_ID = 0x6361_7265_6C6F_6F70 & 0x7FFF_FFFF_FFFF_FFFF


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)


async def upgrade(store: Store, revision: str = "head") -> None:
    async with store.engine.begin() as conn:
        if store.is_postgres:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_ID})
        await conn.run_sync(_upgrade, revision)


def _diff(connection: Connection) -> list[Any]:
    ctx = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(ctx, Base.metadata))


async def drift(store: Store) -> list[Any]:
    """Differences between the migrated database and the models (empty when they agree)."""
    async with store.engine.connect() as conn:
        return await conn.run_sync(_diff)
