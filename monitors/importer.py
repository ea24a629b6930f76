"""`careloop import mentions FILE`: back-fills from other tools' exports (JSON Lines or CSV).

Each row needs an id, the text, the author and when it was posted; `followers`, `url`,
`platform`, `author_id`, `name`, `in_reply_to` are used when present. Column names of the
usual exports are understood (id / tweet_id / status_id, text / content / body, author /
username / user / screen_name, created_at / posted_at / date / timestamp). Rows go through the
same parse, triage and ingest as what the monitors read, on the stream `import`; the platform
is the row's (x, mastodon, ...) or `import`. Importing a file twice adds nothing.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from monitors.triage import Triage
from monitors.types import IMPORT, Author, Post
from storage.clock import Clock, utc_now
from storage.db import Store
from storage.mentions import Grouping, NewMention, ingest

ID_KEYS = ("id", "external_id", "tweet_id", "status_id", "post_id")
TEXT_KEYS = ("text", "content", "body", "full_text", "message")
AUTHOR_KEYS = ("author", "username", "author_username", "user", "screen_name", "handle")
TIME_KEYS = ("created_at", "posted_at", "date", "timestamp", "time")
PLATFORMS = ("x", "mastodon", "import")
BATCH = 2_000


class UnreadableInput(Exception):
    """The file cannot be read at all (missing, not text, neither JSON Lines nor CSV)."""


class BadRow(Exception):
    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line


@dataclass(slots=True)
class ImportSummary:
    rows: int = 0
    imported: int = 0
    already_there: int = 0
    grouped: int = 0
    flagged: int = 0
    bad: int = 0


def _first(row: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = row.get(key)
        if value not in (None, ""):
            return value
    return None


def parse_time(value: Any) -> datetime:
    """ISO 8601 (naive = UTC), epoch seconds or milliseconds, or X's classic
    "Wed Oct 10 20:19:24 +0000 2018"."""
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip().isdigit()):
        seconds = float(value)
        if seconds > 1e11:  # milliseconds
            seconds /= 1000
        return datetime.fromtimestamp(seconds, UTC)
    if not isinstance(value, str):
        raise ValueError("not a time")
    text = value.strip()
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            at = datetime.strptime(text, "%a %b %d %H:%M:%S %z %Y")
        except ValueError:
            at = parsedate_to_datetime(text)  # RFC 2822; raises on anything else
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def row_to_post(row: dict[str, Any], line: int, default_platform: str) -> Post:
    if not isinstance(row, dict):
        raise BadRow(line, "not an object")
    # A nested author object ({"author": {"username": .., "followers": ..}}) is common too.
    nested = row.get("author")
    author_obj: dict[str, Any] = nested if isinstance(nested, dict) else {}
    external_id = _first(row, ID_KEYS)
    text = _first(row, TEXT_KEYS)
    username = _first(author_obj, ("username", "screen_name", "acct", "name")) or _first(
        {k: v for k, v in row.items() if not isinstance(v, dict)}, AUTHOR_KEYS
    )
    when = _first(row, TIME_KEYS)
    missing = [
        name for name, value in
        (("id", external_id), ("text", text), ("author", username), ("created_at", when))
        if value is None
    ]
    if missing:
        raise BadRow(line, f"missing {', '.join(missing)}")
    try:
        posted_at = parse_time(when)
    except (ValueError, TypeError, OverflowError):
        raise BadRow(line, f"created_at {str(when)[:40]!r} is not a date and time") from None
    followers_raw = _first(author_obj, ("followers", "followers_count")) or _first(
        row, ("followers", "followers_count", "author_followers")
    )
    followers: int | None = None
    if followers_raw is not None:
        try:
            followers = int(float(followers_raw))
        except (TypeError, ValueError):
            raise BadRow(line, f"followers {str(followers_raw)[:20]!r} is not a number") from None
    platform = str(row.get("platform") or default_platform).strip().lower()
    if platform not in PLATFORMS:
        raise BadRow(line, f"platform {platform[:20]!r} is not one of {', '.join(PLATFORMS)}")
    external = str(external_id).strip()
    if not external or len(external) > 128:
        raise BadRow(line, "id must be 1 to 128 characters")
    return Post(
        platform=platform,
        stream=IMPORT,
        external_id=external,
        text=str(text),
        author=Author(
            id=str(_first(author_obj, ("id",)) or row.get("author_id") or username),
            username=str(username).lstrip("@")[:200],
            name=(str(_first(author_obj, ("name", "display_name")) or row.get("name") or "")
                  or None),
            followers=followers,
        ),
        posted_at=posted_at,
        url=(str(row["url"])[:500] if row.get("url") else None),
        in_reply_to=(str(row["in_reply_to"]) if row.get("in_reply_to") else None),
    )


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) for JSON Lines or CSV, told apart by the first character."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise UnreadableInput(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        try:
            head = handle.read(4096)
        except UnicodeDecodeError:
            raise UnreadableInput(f"{path} is not UTF-8 text") from None
        if not head.strip():
            raise UnreadableInput(f"{path} is empty")
        handle.seek(0)
        try:
            if head.lstrip().startswith("{"):
                yield from _json_lines(handle)
            else:
                yield from _csv_rows(handle, path)
        except UnicodeDecodeError:
            raise UnreadableInput(f"{path} is not UTF-8 text") from None


def _json_lines(handle: io.TextIOBase) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, {"__error__": f"not valid JSON ({exc.msg})"}
            continue
        yield number, row if isinstance(row, dict) else {"__error__": "not a JSON object"}


def _csv_rows(handle: io.TextIOBase, path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames
    except csv.Error as exc:
        raise UnreadableInput(f"{path} is not CSV: {exc}") from None
    if not fields or not any(f in fields for f in TEXT_KEYS):
        raise UnreadableInput(
            f"{path} is neither JSON Lines nor CSV with a header naming a text column"
        )
    while True:
        start = reader.line_num + 1  # lines read so far; a quoted field may span several
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, {"__error__": f"bad CSV ({exc})"}
            continue
        yield start, {k.strip(): v for k, v in row.items() if isinstance(k, str)}


async def import_file(
    store: Store,
    triage: Triage,
    path: Path,
    grouping: Grouping,
    *,
    platform: str = "import",
    on_bad_row: Callable[[BadRow], None] = lambda _: None,
    clock: Clock = utc_now,
    batch_size: int = BATCH,
) -> ImportSummary:
    summary = ImportSummary()
    batch: list[Post] = []
    writing: asyncio.Task[None] | None = None

    async def write(rows: list[NewMention]) -> None:
        async with store.transaction() as session:
            result = await ingest(session, rows, cursor=None, grouping=grouping, now=clock())
        summary.imported += result.inserted
        summary.already_there += result.duplicates
        summary.grouped += result.grouped
        summary.flagged += result.flagged

    async def flush() -> None:
        nonlocal writing
        # The next batch is parsed (in a thread) while the previous one is written.
        rows = await triage.mentions(batch)
        batch.clear()
        if writing is not None:
            await writing
        writing = asyncio.create_task(write(rows))

    try:
        for line, row in read_rows(path):
            summary.rows += 1
            try:
                if "__error__" in row:
                    raise BadRow(line, str(row["__error__"]))
                batch.append(row_to_post(row, line, platform))
            except BadRow as bad:
                summary.bad += 1
                on_bad_row(bad)
                continue
            if len(batch) >= batch_size:
                await flush()
        if batch:
            await flush()
    finally:
        if writing is not None:
            await writing
    return summary
