"""A statement SQLAlchemy compiled once, run on the asyncpg connection underneath.

For the two statements of an optimistic chat turn (its read and its one write), which run
outside any transaction: SQLAlchemy's per-execution work (parameter and result processing,
cache lookups, the greenlet hop) cost more CPU than asyncpg's own. The SQL, its parameter
order and its literal values still come from SQLAlchemy's compiler, so the schema lives in
storage/models.py as everywhere else. Callers pass values asyncpg can send as they are: aware
datetimes, JSON already serialised to text, lists for arrays.

Run it on `Store.raw()`, never inside a transaction SQLAlchemy manages: that transaction's
BEGIN is only sent with its first SQLAlchemy statement, so a statement run here first would run
outside it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True, slots=True)
class Direct:
    sql: str
    names: tuple[str, ...]
    fixed: dict[str, Any]  # the statement's own literal values (`literal(...)`, `== 1`)

    @classmethod
    def compile(cls, statement: ClauseElement, dialect: Dialect) -> Direct:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        names = tuple(compiled.positiontup or ())
        fixed = {
            name: bind.value for name, bind in compiled.binds.items()
            if name in names and not bind.required
        }
        return cls(sql=compiled.string, names=names, fixed=fixed)

    def arguments(self, params: dict[str, Any]) -> list[Any]:
        values = self.fixed | params
        return [values[name] for name in self.names]

    async def fetchrow(self, raw: asyncpg.Connection, params: dict[str, Any]) -> Any:
        return await raw.fetchrow(self.sql, *self.arguments(params))

    async def fetch(self, raw: asyncpg.Connection, params: dict[str, Any]) -> list[Any]:
        return list(await raw.fetch(self.sql, *self.arguments(params)))
