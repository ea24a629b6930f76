"""Writes what the monitors read: a batch of triaged mentions and the stream's new cursor in ONE
transaction, so a crash neither loses nor doubles a post.

- Idempotent on (platform, external_id): INSERT .. ON CONFLICT DO NOTHING on both dialects, so
  re-reading a page (after a crash, a reset cursor, a second import) adds nothing.
- Near-duplicates (same `fingerprint`, posted within the grouping window) form one review item:
  the first post leads (group_id NULL, group_size counting the whole group), the others point
  at it. A group that reaches `flag_size` is flagged (unless it is praise) and a flagged
  complaint rises to P2 (CONTRACT §5: repeated contact, wide reach). Only `new`/`ignored`/
  `flagged` leaders change: a person's decision (ticketed, replied, dismissed) stands.
- Fast path (`_ingest_known`): the keys already stored are read first, ids are taken from the
  sequence (PostgreSQL) or after the highest (SQLite, whose write lock is held from BEGIN
  IMMEDIATE), and every new row of the batch goes in with one COPY (PostgreSQL) or one driver
  executemany (SQLite), bypassing per-row SQLAlchemy work. It runs in a savepoint: a post that
  another process stored meanwhile makes the COPY fail on the unique key, the savepoint rolls
  back, and the batch goes through the general path below instead (same result).
- General path (`_ingest_on_conflict`): Core statements and multi-row INSERT .. ON CONFLICT DO
  NOTHING RETURNING; any dialect, and the fallback of the fast one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import (
    Dialect,
    Table,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import MonitorCursor, SocialPost

POSTS: Table = SocialPost.__table__  # type: ignore[assignment]
CURSORS: Table = MonitorCursor.__table__  # type: ignore[assignment]

# Mention review states (CONTRACT §5).
NEW, FLAGGED, TICKETED, REPLIED, DISMISSED, IGNORED = (
    "new", "flagged", "ticketed", "replied", "dismissed", "ignored",
)
DIRECT_STREAM = "dms"
# IN lists are sent in chunks: SQLite allows 32,766 parameters, asyncpg 32,767.
_CHUNK = 2000


class LeaseLost(Exception):
    """Another process holds the stream now: this batch is not written (it will read it)."""


@dataclass(slots=True)
class NewMention:
    """One triaged post, ready to store (monitors/triage.py builds these). Treat as read-only;
    not frozen because a spike builds 100,000 of them and a frozen dataclass is ten times as
    slow to build."""

    platform: str
    stream: str
    external_id: str
    text: str
    posted_at: datetime
    state: str
    url: str | None = None
    author_id: str | None = None
    author_username: str | None = None
    author_name: str | None = None
    author_followers: int | None = None
    language: str | None = None
    intent: str | None = None
    priority: str | None = None
    category: str | None = None
    sentiment_label: str | None = None
    sentiment_score: float | None = None
    fingerprint: str | None = None
    in_reply_to: str | None = None
    raw: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StreamKey:
    platform: str
    account: str
    stream: str

    def __str__(self) -> str:
        return f"{self.platform}/{self.account}/{self.stream}"


@dataclass(frozen=True, slots=True)
class CursorAdvance:
    """The stream position to store with the posts, and the reads this page cost."""

    key: StreamKey
    cursor: str | None
    reads: int = 0
    month: str = ""  # "YYYY-MM" the reads count towards
    owner: str | None = None  # the lease holder that must still hold the stream; None: no lease
    lease_until: datetime | None = None  # extends the lease while a long read goes on


@dataclass(frozen=True, slots=True)
class Grouping:
    window: timedelta = timedelta(hours=24)
    flag_size: int = 5


@dataclass(slots=True)
class IngestResult:
    inserted: int = 0
    duplicates: int = 0  # already stored (re-read) or repeated in the batch
    grouped: int = 0  # inserted as members of a group
    flagged: int = 0  # inserted or escalated into `flagged`
    direct_ids: list[int] = field(default_factory=list)  # new direct messages, for the bot


def _insert(session: AsyncSession) -> Any:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    factory = pg_insert if dialect == "postgresql" else sqlite_insert
    return factory(POSTS)


def _row(m: NewMention, now: datetime, group_id: int | None, group_size: int) -> dict[str, Any]:
    return {
        "platform": m.platform,
        "stream": m.stream,
        "external_id": m.external_id,
        "url": m.url,
        "author_id": m.author_id,
        "author_username": m.author_username,
        "author_name": m.author_name,
        "author_followers": m.author_followers,
        "text": m.text,
        "language": m.language,
        "posted_at": m.posted_at,
        "fetched_at": now,
        "state": m.state,
        "intent": m.intent,
        "priority": m.priority,
        "category": m.category,
        "sentiment_label": m.sentiment_label,
        "sentiment_score": m.sentiment_score,
        "group_id": group_id,
        "group_size": group_size,
        "fingerprint": m.fingerprint,
        "in_reply_to": m.in_reply_to,
        "raw": m.raw,
        "version": 1,
    }


def escalate(state: str, intent: str | None, priority: str | None, size: int, flag_size: int
             ) -> tuple[str, str | None]:
    """What a group leader becomes at `size` members (the SQL in `_grow_leaders` mirrors it)."""
    if size < flag_size:
        return state, priority
    if state in (NEW, IGNORED) and intent != "praise":
        state = FLAGGED
    if state == FLAGGED and priority in (None, "P3", "P4") and intent == "complaint":
        priority = "P2"
    return state, priority


async def advance_cursor(session: AsyncSession, advance: CursorAdvance, now: datetime) -> None:
    """Stores the cursor and adds the reads to the month's count. Raises LeaseLost when the
    lease moved to another process (the caller's transaction then rolls back)."""
    key = advance.key
    same_month = CURSORS.c.reads_month == advance.month
    where = [
        CURSORS.c.platform == key.platform,
        CURSORS.c.account == key.account,
        CURSORS.c.stream == key.stream,
    ]
    if advance.owner is not None:
        where.append(CURSORS.c.lease_owner == advance.owner)
    values: dict[str, Any] = {
        "cursor": advance.cursor,
        "updated_at": now,
        "health": "ok",
        "health_reason": None,
        "retry_at": None,
    }
    if advance.lease_until is not None:
        values["lease_until"] = advance.lease_until
    if advance.month:
        values["reads_count"] = case(
            (same_month, CURSORS.c.reads_count + advance.reads), else_=advance.reads
        )
        values["reads_month"] = advance.month
    result: Any = await session.execute(update(CURSORS).where(*where).values(**values))
    if result.rowcount == 1:
        return
    if advance.owner is not None:
        raise LeaseLost(str(key))
    # An import or a first write without a lease: create the row.
    await ensure_stream(session, key, now)
    await session.execute(update(CURSORS).where(*where).values(**values))


async def ensure_stream(session: AsyncSession, key: StreamKey, now: datetime) -> None:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    factory = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = factory(CURSORS).values(
        platform=key.platform, account=key.account, stream=key.stream, cursor=None,
        updated_at=now, health="ok", reads_count=0,
    ).on_conflict_do_nothing(index_elements=["platform", "account", "stream"])
    await session.execute(stmt)


async def ingest(
    session: AsyncSession,
    mentions: Sequence[NewMention],
    *,
    cursor: CursorAdvance | None,
    grouping: Grouping,
    now: datetime,
) -> IngestResult:
    """Writes the batch and the cursor in the caller's transaction (see the module doc)."""
    result = IngestResult()
    if cursor is not None:
        # First: it fails fast when the lease is gone, and on PostgreSQL its row lock orders
        # concurrent writers of one stream.
        await advance_cursor(session, cursor, now)
    batch = _unique(mentions)
    result.duplicates = len(mentions) - len(batch)
    if not batch:
        return result
    batch.sort(key=lambda m: m.posted_at)
    if _dialect(session) in ("postgresql", "sqlite"):
        try:
            async with session.begin_nested():
                return await _ingest_known(session, batch, grouping, now, result)
        except (asyncpg.UniqueViolationError, sqlite3.IntegrityError):
            pass  # stored by another process since we looked: the general path skips it
    return await _ingest_on_conflict(session, batch, grouping, now, result)


def _dialect(session: AsyncSession) -> str:
    return session.bind.dialect.name if session.bind is not None else "sqlite"


def _assign(
    batch: Sequence[NewMention], existing: dict[str, list[tuple[datetime, int]]],
    window: timedelta,
) -> tuple[list[int | tuple[int] | None], dict[int, int]]:
    """Per post: None (leads a new group or stands alone), an int (the id of a stored leader)
    or the 1-tuple of the batch position of the post leading its group in this batch; and
    the number of batch members per batch leader position."""
    assignment: list[int | tuple[int] | None] = []
    batch_leader: dict[str, int] = {}  # fingerprint -> position of the newest leader in batch
    members: dict[int, int] = {}  # batch leader position -> members in batch
    for pos, m in enumerate(batch):
        fp = m.fingerprint
        if fp is None or m.stream == DIRECT_STREAM:
            assignment.append(None)
            continue
        lead = batch_leader.get(fp)
        if lead is not None and batch[lead].posted_at >= m.posted_at - window:
            assignment.append((lead,))
            members[lead] = members.get(lead, 0) + 1
            continue
        stored = _stored_leader(existing.get(fp, ()), m.posted_at, window)
        if stored is not None:
            assignment.append(stored)
            continue
        batch_leader[fp] = pos
        assignment.append(None)
    return assignment, members


# The columns the fast path writes, in order (the others keep their defaults: NULL).
_COLUMNS = (
    "id", "platform", "stream", "external_id", "url", "author_id", "author_username",
    "author_name", "author_followers", "text", "language", "posted_at", "fetched_at", "state",
    "intent", "priority", "category", "sentiment_label", "sentiment_score", "group_id",
    "group_size", "fingerprint", "in_reply_to", "raw", "version",
)


async def _ingest_known(
    session: AsyncSession, batch: list[NewMention], grouping: Grouping, now: datetime,
    result: IngestResult,
) -> IngestResult:
    """The general path's result, with the stored keys read first so that every row of the
    batch is written in one bulk statement (see the module doc)."""
    existing = await _existing_leaders(session, batch, grouping.window)
    stored = await _stored_keys(session, batch)
    assignment, members = _assign(batch, existing, grouping.window)
    is_stored = [(m.platform, m.external_id) in stored for m in batch]

    # Leaders first, then members: ids in that order, as the general path gives them.
    lead_pos = [p for p, a in enumerate(assignment) if a is None and not is_stored[p]]
    member_pos = [p for p, a in enumerate(assignment) if a is not None and not is_stored[p]]
    ids = await _take_ids(session, len(lead_pos) + len(member_pos))
    position_id = dict(zip(lead_pos, ids, strict=False))
    for p, a in enumerate(assignment):
        if a is None and is_stored[p]:  # stored before: its batch members join its group
            row_id, group_id = stored[(batch[p].platform, batch[p].external_id)]
            position_id[p] = group_id or row_id
    result.duplicates += sum(is_stored)

    # A batch leader counts its new members; it escalates on all its copies in the batch
    # (some stored before are repeated contact all the same), as the general path does.
    new_members: dict[int, int] = {}
    leader_of: list[int] = []
    for p in member_pos:
        a = assignment[p]
        leader_id = position_id[a[0]] if isinstance(a, tuple) else a
        assert leader_id is not None
        leader_of.append(leader_id)
        new_members[leader_id] = new_members.get(leader_id, 0) + 1
    flag_size = grouping.flag_size
    assert session.bind is not None
    values = _row_values(session.bind.dialect, now)
    rows: list[tuple[Any, ...]] = []
    for p, row_id in zip(lead_pos, ids, strict=False):
        m = batch[p]
        state, priority = escalate(
            m.state, m.intent, m.priority, 1 + members.get(p, 0), flag_size
        )
        rows.append(values(m, row_id, state, priority, None, 1 + new_members.pop(row_id, 0)))
        if state == FLAGGED:
            result.flagged += 1
        if m.stream == DIRECT_STREAM:
            result.direct_ids.append(row_id)
    for p, row_id, leader_id in zip(member_pos, ids[len(lead_pos):], leader_of, strict=True):
        m = batch[p]
        rows.append(values(m, row_id, m.state, m.priority, leader_id, 1))
    await _write_rows(session, rows)
    result.inserted += len(rows)
    result.grouped = len(member_pos)
    # What is left in new_members are stored leaders: they grow by their new members.
    await _grow_leaders(session, new_members, flag_size)
    return result


_RowValues = Callable[[NewMention, int, str, "str | None", "int | None", int], tuple[Any, ...]]
# Columns whose values SQLAlchemy converts before the driver sees them; `_row_values` applies
# those conversions (a new one must be added there: the assertion below says so).
_CONVERTED = {"posted_at", "fetched_at", "sentiment_score", "raw"}


def _row_values(dialect: Dialect, now: datetime) -> _RowValues:
    """Makes the driver-ready row of a mention: SQLAlchemy's own conversions (times to UTC,
    JSON to text, on SQLite times to its text format), so the rows are stored exactly as the
    general path stores them, applied once where the value is the same for the whole batch."""
    processors = {
        c: POSTS.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in _COLUMNS
    }
    unknown = {c for c, f in processors.items() if f is not None} - _CONVERTED
    assert not unknown, f"convert {unknown} in _row_values"

    def same(value: Any) -> Any:
        return value

    to_time = _fast_sqlite_time(processors["posted_at"], now) or processors["posted_at"] or same
    to_float = processors["sentiment_score"] or same
    to_json = processors["raw"] or same
    fetched = (processors["fetched_at"] or same)(now)
    null = to_json(None)

    def values(m: NewMention, row_id: int, state: str, priority: str | None,
               group_id: int | None, group_size: int) -> tuple[Any, ...]:
        return (
            row_id, m.platform, m.stream, m.external_id, m.url, m.author_id, m.author_username,
            m.author_name, m.author_followers, m.text, m.language, to_time(m.posted_at),
            fetched, state, m.intent, priority, m.category, m.sentiment_label,
            to_float(m.sentiment_score), group_id, group_size, m.fingerprint, m.in_reply_to,
            null if m.raw is None else to_json(m.raw), 1,
        )

    return values


def _fast_sqlite_time(
    processor: Callable[[Any], Any] | None, sample: datetime
) -> Callable[[datetime], Any] | None:
    """SQLite stores times as naive UTC text; `isoformat` writes SQLAlchemy's format about
    five times faster than its processor chain. Used only when both agree on `sample`;
    a naive time still goes to SQLAlchemy's processor, which refuses it."""
    if processor is None or not isinstance(processor(sample), str):
        return None

    def fast(value: datetime) -> Any:
        if value is None or value.tzinfo is None:
            return processor(value)
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

    probe = sample.replace(microsecond=0)  # SQLAlchemy always writes the microseconds
    return fast if fast(sample) == processor(sample) and fast(probe) == processor(probe) else None


async def _driver(session: AsyncSession) -> Any:
    """The DBAPI driver's own connection (asyncpg, aiosqlite), in the session's transaction."""
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    return raw.driver_connection


async def _stored_keys(
    session: AsyncSession, batch: Sequence[NewMention]
) -> dict[tuple[str, str], tuple[int, int | None]]:
    """(platform, external_id) -> (id, group_id) of the batch's posts already stored."""
    by_platform: dict[str, list[str]] = {}
    for m in batch:
        by_platform.setdefault(m.platform, []).append(m.external_id)
    found: dict[tuple[str, str], tuple[int, int | None]] = {}
    for platform, external_ids in by_platform.items():
        if _dialect(session) == "postgresql":
            # A join with the array, not `= ANY($2)`: after five runs PostgreSQL may plan
            # the prepared statement generically, and ANY then became a scan of the table
            # testing every row against the whole array (seconds per batch).
            rows = await (await _driver(session)).fetch(
                "SELECT p.external_id, p.id, p.group_id"
                " FROM unnest($2::text[]) AS k(external_id)"
                " JOIN social_posts p ON p.platform = $1 AND p.external_id = k.external_id",
                platform, external_ids,
            )
            found.update(((platform, e), (i, g)) for e, i, g in rows)
            continue
        for i in range(0, len(external_ids), _CHUNK):
            got = await session.execute(
                select(POSTS.c.external_id, POSTS.c.id, POSTS.c.group_id).where(
                    POSTS.c.platform == platform,
                    POSTS.c.external_id.in_(external_ids[i : i + _CHUNK]),
                )
            )
            found.update(((platform, e), (r, g)) for e, r, g in got.all())
    return found


async def _take_ids(session: AsyncSession, n: int) -> list[int]:
    """n new post ids, ascending."""
    if n == 0:
        return []
    if _dialect(session) == "postgresql":
        got = await session.execute(
            text("SELECT nextval(pg_get_serial_sequence('social_posts', 'id'))"
                 " FROM generate_series(1, :n)"),
            {"n": n},
        )
        return sorted(row[0] for row in got.all())
    # SQLite: the transaction began IMMEDIATE, so no one else inserts before our commit;
    # rowids continue after the highest, as SQLite itself would number them.
    top = await session.scalar(select(func.max(POSTS.c.id)))
    start = (top or 0) + 1
    return list(range(start, start + n))


async def _write_rows(session: AsyncSession, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    driver = await _driver(session)
    if _dialect(session) == "postgresql":
        # Binary COPY: the fastest way into PostgreSQL; the unique key still holds (a post
        # stored by someone else meanwhile fails it, see `ingest`).
        await driver.copy_records_to_table("social_posts", records=rows, columns=_COLUMNS)
        return
    marks = ", ".join("?" for _ in _COLUMNS)
    await driver.executemany(
        f"INSERT INTO social_posts ({', '.join(_COLUMNS)}) VALUES ({marks})", rows
    )


async def _ingest_on_conflict(
    session: AsyncSession, batch: list[NewMention], grouping: Grouping, now: datetime,
    result: IngestResult,
) -> IngestResult:
    """The general path: INSERT .. ON CONFLICT DO NOTHING RETURNING, leaders then members."""
    existing = await _existing_leaders(session, batch, grouping.window)
    assignment, members = _assign(batch, existing, grouping.window)

    # 1. Leaders and lone posts. Their group size counts the batch members that follow; the
    # rare member skipped as already stored is corrected below.
    leads: list[dict[str, Any]] = []
    lead_pos: list[int] = []
    for pos, m in enumerate(batch):
        if assignment[pos] is None:
            size = 1 + members.get(pos, 0)
            state, priority = escalate(m.state, m.intent, m.priority, size, grouping.flag_size)
            row = _row(m, now, None, size)
            row["state"], row["priority"] = state, priority
            leads.append(row)
            lead_pos.append(pos)
    ids = await _insert_rows(session, leads)
    position_id: dict[int, int] = {}
    missing: list[int] = []
    for pos in lead_pos:
        got = ids.get((batch[pos].platform, batch[pos].external_id))
        if got is None:
            missing.append(pos)
        else:
            position_id[pos] = got
    result.inserted += len(position_id)
    if missing:  # stored before: its batch members join the stored row's group
        for pos, (row_id, group_id) in zip(
            missing, await _lookup(session, [batch[p] for p in missing]), strict=True
        ):
            position_id[pos] = group_id or row_id
    result.duplicates += len(missing)

    # 2. Members, pointing at their leader.
    follows: list[dict[str, Any]] = []
    leader_of: list[int] = []
    for pos, m in enumerate(batch):
        target = assignment[pos]
        if target is None:
            continue
        leader_id = position_id[target[0]] if isinstance(target, tuple) else target
        follows.append(_row(m, now, leader_id, 1))
        leader_of.append(leader_id)
    member_ids = await _insert_rows(session, follows)
    grown: dict[int, int] = {}
    for row, leader_id in zip(follows, leader_of, strict=True):
        if (row["platform"], row["external_id"]) in member_ids:
            grown[leader_id] = grown.get(leader_id, 0) + 1
    result.inserted += len(member_ids)
    result.grouped = len(member_ids)
    result.duplicates += len(follows) - len(member_ids)

    # 3. Group sizes: stored leaders grow by their new members; batch leaders were written
    # with their batch members counted, so only members that turned out stored come off.
    fresh = {position_id[p]: members.get(p, 0) for p in lead_pos if p not in missing}
    deltas: dict[int, int] = {}
    for leader_id, n in grown.items():
        delta = n - fresh.get(leader_id, 0) if leader_id in fresh else n
        if delta:
            deltas[leader_id] = delta
    for leader_id, n in fresh.items():
        if leader_id not in grown and n:
            deltas[leader_id] = -n
    await _grow_leaders(session, deltas, grouping.flag_size)

    result.direct_ids = [
        position_id[p] for p in lead_pos if batch[p].stream == DIRECT_STREAM and p in position_id
        and p not in missing
    ]
    result.flagged = sum(
        1 for p, row in zip(lead_pos, leads, strict=True)
        if p not in missing and row["state"] == FLAGGED
    )
    return result


def _unique(mentions: Sequence[NewMention]) -> list[NewMention]:
    seen: set[tuple[str, str]] = set()
    out: list[NewMention] = []
    for m in mentions:
        key = (m.platform, m.external_id)
        if key not in seen:
            seen.add(key)
            out.append(m)
    return out


def _stored_leader(
    candidates: Sequence[tuple[datetime, int]], posted_at: datetime, window: timedelta
) -> int | None:
    # Candidates are newest first; a group is joined while its leader is within the window.
    for leader_posted, leader_id in candidates:
        if abs(posted_at - leader_posted) <= window:
            return leader_id
    return None


async def newest_post_id(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.max(POSTS.c.id))) or 0)


async def recent_leaders(
    session: AsyncSession, *, after_id: int, since: datetime, limit: int
) -> list[tuple[int, str, str]]:
    """(id, text, fingerprint) of group leaders posted since `since` with an id above
    `after_id`, in id order: the groups another process started, or this one before a restart,
    for the monitors' near-duplicate memory. `after_id` 0: the newest `limit` of the window."""
    query = select(POSTS.c.id, POSTS.c.text, POSTS.c.fingerprint).where(
        POSTS.c.id > after_id,
        POSTS.c.group_id.is_(None),
        POSTS.c.stream != DIRECT_STREAM,
        POSTS.c.fingerprint.is_not(None),
        POSTS.c.posted_at >= since,
    )
    newest_first = after_id == 0
    rows = (await session.execute(
        query.order_by(POSTS.c.id.desc() if newest_first else POSTS.c.id).limit(limit)
    )).all()
    out = [(int(i), str(t), str(fp)) for i, t, fp in rows]
    return out[::-1] if newest_first else out


async def _existing_leaders(
    session: AsyncSession, batch: Sequence[NewMention], window: timedelta
) -> dict[str, list[tuple[datetime, int]]]:
    fps = sorted({m.fingerprint for m in batch if m.fingerprint and m.stream != DIRECT_STREAM})
    found: dict[str, list[tuple[datetime, int]]] = {}
    if not fps:
        return found
    since = batch[0].posted_at - window
    until = batch[-1].posted_at + window
    for i in range(0, len(fps), _CHUNK):
        rows = await session.execute(
            select(POSTS.c.fingerprint, POSTS.c.posted_at, POSTS.c.id)
            .where(
                POSTS.c.fingerprint.in_(fps[i : i + _CHUNK]),
                POSTS.c.group_id.is_(None),
                POSTS.c.stream != DIRECT_STREAM,
                POSTS.c.posted_at >= since,
                POSTS.c.posted_at <= until,
            )
            .order_by(POSTS.c.posted_at.desc(), POSTS.c.id.desc())
        )
        for fp, posted_at, row_id in rows.all():
            found.setdefault(fp, []).append((posted_at, row_id))
    return found


async def _insert_rows(
    session: AsyncSession, rows: list[dict[str, Any]]
) -> dict[tuple[str, str], int]:
    """Inserts what is not stored yet; returns (platform, external_id) -> id of the new rows."""
    if not rows:
        return {}
    stmt = (
        _insert(session)
        .on_conflict_do_nothing(index_elements=["platform", "external_id"])
        .returning(POSTS.c.id, POSTS.c.platform, POSTS.c.external_id)
    )
    out: dict[tuple[str, str], int] = {}
    # RETURNING with many parameter sets: SQLAlchemy sends multi-row INSERTs
    # ("insertmanyvalues"), a few round trips for thousands of rows.
    got = await session.execute(stmt, rows)
    for row_id, platform, external_id in got.all():
        out[(platform, external_id)] = row_id
    return out


async def _lookup(
    session: AsyncSession, mentions: Sequence[NewMention]
) -> list[tuple[int, int | None]]:
    keys = [(m.platform, m.external_id) for m in mentions]
    found: dict[tuple[str, str], tuple[int, int | None]] = {}
    for i in range(0, len(keys), _CHUNK // 2):
        part = keys[i : i + _CHUNK // 2]
        rows = await session.execute(
            select(POSTS.c.platform, POSTS.c.external_id, POSTS.c.id, POSTS.c.group_id).where(
                or_(*(and_(POSTS.c.platform == p, POSTS.c.external_id == e) for p, e in part))
                if len(part) < 50
                else tuple_(POSTS.c.platform, POSTS.c.external_id).in_(part)
            )
        )
        for platform, external_id, row_id, group_id in rows.all():
            found[(platform, external_id)] = (row_id, group_id)
    return [found[k] for k in keys]


async def _grow_leaders(session: AsyncSession, deltas: dict[int, int], flag_size: int) -> None:
    if not deltas:
        return
    size = POSTS.c.group_size + bindparam("delta")
    # No IN (...) here: expanding parameters cannot run as executemany.
    open_state = or_(POSTS.c.state == NEW, POSTS.c.state == IGNORED)
    not_praise = func.coalesce(POSTS.c.intent, "") != "praise"
    low = or_(POSTS.c.priority.is_(None), POSTS.c.priority == "P3", POSTS.c.priority == "P4")
    big = size >= flag_size
    stmt = (
        update(POSTS)
        .where(POSTS.c.id == bindparam("leader"))
        .values(
            group_size=size,
            state=case((and_(big, open_state, not_praise), FLAGGED), else_=POSTS.c.state),
            priority=case(
                (
                    and_(
                        big, low, POSTS.c.intent == "complaint",
                        or_(POSTS.c.state == FLAGGED, and_(open_state, not_praise)),
                    ),
                    "P2",
                ),
                else_=POSTS.c.priority,
            ),
        )
        # The version is left alone: a growing count is not a conflict with a reviewer's
        # action on the post, and an escalation never overrides one (see `escalate`).
    )
    # In id order, so two writers growing the same groups cannot deadlock on PostgreSQL.
    params = [{"leader": k, "delta": v} for k, v in sorted(deltas.items())]
    await session.execute(stmt, params)


async def stream_health(session: AsyncSession) -> list[dict[str, Any]]:
    """Every stream's position and health, for /healthz and the docs' troubleshooting."""
    rows = await session.execute(
        select(
            CURSORS.c.platform, CURSORS.c.account, CURSORS.c.stream, CURSORS.c.health,
            CURSORS.c.health_reason, CURSORS.c.retry_at, CURSORS.c.updated_at,
            CURSORS.c.reads_month, CURSORS.c.reads_count, CURSORS.c.lease_owner,
        ).order_by(CURSORS.c.platform, CURSORS.c.account, CURSORS.c.stream)
    )
    return [dict(row._mapping) for row in rows.all()]
