"""Models and migrations must not drift, on either database."""

from __future__ import annotations

from storage.db import create_store
from storage.migrate import drift, upgrade


async def test_migrations_build_exactly_the_models_on_sqlite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = create_store(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    await upgrade(store)
    await upgrade(store)  # idempotent
    assert await drift(store) == []
    await store.close()


async def test_migrations_build_exactly_the_models_on_postgres(fresh_pg_database: str) -> None:
    store = create_store(fresh_pg_database)
    await upgrade(store)
    assert await drift(store) == []
    await store.close()
