"""The one small interface every social platform adapter has (X, Mastodon, and the next one):
read a stream since a cursor, reply publicly, send a direct message, say who we are.

Adapters translate the platform's errors into the exceptions below, so the poll loop
(monitors/poll.py) handles rate limits, outages and revoked credentials the same way for all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from storage import outbox

# Streams a monitor can poll. `import` is the stream of `careloop import mentions`.
MENTIONS, DIRECT, SEARCH, IMPORT = "mentions", "dms", "search", "import"

# Outbox kinds the platform senders handle besides the ticket notifications they share with
# the chat channels (those are rendered by bot/notifications.py and sent as direct messages).
PUBLIC_REPLY = outbox.PUBLIC_REPLY  # the outbox kind, named here for the senders


@dataclass(frozen=True, slots=True)
class Author:
    id: str
    username: str | None = None
    name: str | None = None
    followers: int | None = None  # None when the platform did not say (no metrics)


@dataclass(frozen=True, slots=True)
class Post:
    """A mention, a keyword hit or a direct message as the platform gave it."""

    platform: str  # x | mastodon | import
    stream: str
    external_id: str
    text: str
    author: Author
    posted_at: datetime  # aware UTC
    url: str | None = None
    in_reply_to: str | None = None
    # For direct messages: the conversation to answer in (X dm_conversation_id, Mastodon
    # status id to reply to with direct visibility).
    conversation: str | None = None
    raw: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One read: the posts (oldest first) and the cursor to store with them.

    `more` says another read right away would return more (pagination within one poll);
    `reads` is what the platform bills for this request (X counts posts read)."""

    posts: Sequence[Post]
    cursor: str | None
    more: bool = False
    reads: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class MonitorError(Exception):
    """Base of the errors an adapter raises; the poll loop records them as stream health."""


class RateLimited(MonitorError):
    """429: no request to this endpoint before `until` (aware UTC, from the reset header)."""

    def __init__(self, until: datetime, reason: str = "rate limited") -> None:
        super().__init__(reason)
        self.until = until


class Unavailable(MonitorError):
    """5xx, a network error, malformed JSON: back off with jitter and try again."""


class Paused(MonitorError):
    """401, 402, 403, a revoked token: stop the stream until a person fixes it."""


class CursorRejected(MonitorError):
    """The platform no longer accepts the stored cursor (too old): read afresh from the newest."""


class Adapter(Protocol):
    platform: str

    def streams(self) -> Sequence[str]:
        """The streams this adapter polls with its settings (mentions, dms, search)."""
        ...

    async def whoami(self) -> Author:
        """The account we read as; its id is the `account` of the stored cursors."""
        ...

    async def read(self, stream: str, cursor: str | None) -> Page:
        """Posts newer than `cursor` (None: what the platform still serves, newest first
        page); oldest first. Raises the MonitorError subclasses above."""
        ...

    async def reply(self, in_reply_to: str, text: str) -> str:
        """A public reply in the thread; returns the new post's id."""
        ...

    async def send_direct(self, recipient: str, text: str, conversation: str | None) -> str:
        """A direct message to `recipient` (platform user id); returns its id."""
        ...

    async def close(self) -> None: ...
