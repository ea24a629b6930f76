"""`?limit=&cursor=` for every list of the API (CONTRACT §7), and pages of the short lists that
are read whole (desk accounts, canned replies, saved views).

Long lists (tickets, mentions) page in SQL with their own keyset cursors; a short list is read
whole and cut here. Its cursor is the last item's place in the list's order, not an offset,
so the next page starts right after it even when items were added or removed in between."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from desk.errors import ApiError

MAX_LIMIT = 200
DEFAULT_LIMIT = 50

# The query parameters every list takes, for the OpenAPI description.
PAGE_QUERY = (
    ("limit", f"1 to {MAX_LIMIT}, default {DEFAULT_LIMIT}"),
    ("cursor", "next_cursor of the previous page"),
)

Position = list[Any]  # compared element by element; equal leading kinds hold equal types


def limit_of(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(422, "invalid", f"limit: a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def _encode(position: Position) -> str:
    raw = json.dumps(position, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> Position:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(422, "invalid", "cursor: not a cursor this list gave") from exc
    if not isinstance(position, list):
        raise ApiError(422, "invalid", "cursor: not a cursor this list gave")
    return position


def short_page(
    request: web.Request, items: Sequence[dict[str, Any]],
    position: Callable[[dict[str, Any]], Position],
) -> dict[str, Any]:
    """`{"items", "next_cursor"}`: the page of `items` (in `position` order) after `?cursor=`."""
    limit = limit_of(request)
    ordered = sorted(items, key=position)
    cursor = request.query.get("cursor")
    if cursor:
        after = _decode(cursor)
        try:
            ordered = [item for item in ordered if position(item) > after]
        except TypeError as exc:  # a cursor of another list
            raise ApiError(422, "invalid", "cursor: not a cursor this list gave") from exc
    page = ordered[:limit]
    more = len(ordered) > limit
    return {"items": page, "next_cursor": _encode(position(page[-1])) if more else None}
