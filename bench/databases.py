"""Scratch databases for the benchmarks: a PostgreSQL database of its own, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

PG = os.environ.get("CARELOOP_BENCH_PG", "postgres@127.0.0.1:5432")


@asynccontextmanager
async def scratch_postgres() -> AsyncIterator[str]:
    """Yields the SQLAlchemy URL of a new, empty database on CARELOOP_BENCH_PG."""
    name = f"careloop_bench_{uuid.uuid4().hex[:8]}"
    user, _, hostport = PG.partition("@")
    host, _, port = hostport.partition(":")
    admin = await asyncpg.connect(user=user, host=host, port=int(port or 5432),
                                  database="postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        if host.startswith("/"):  # a Unix socket directory: postgres@/var/run/postgresql
            yield f"postgresql+asyncpg://{user}@/{name}?host={host}&port={port or 5432}"
        else:
            yield f"postgresql+asyncpg://{PG}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
