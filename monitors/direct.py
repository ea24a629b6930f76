"""Direct messages (X and Mastodon) through the chat dialogue, exactly like a Telegram chat.

The monitors store each direct message as a social post (stream `dms`, state `new`) in the
transaction that moves the stream's cursor. `handle_direct_messages` then hands each one, oldest
first, to the dialogue as an `Inbound` of channel `x` or `mastodon` (customer = the author's
platform id, message_ref = the post's id). The dialogue stores the message, its replies as
outbox rows and any ticket in one transaction; the worker's platform sender delivers the replies
as direct messages. Afterwards the post is marked handled:

- `ticketed` with `ticket_id` when the message created a ticket (the confirming `yes`) or was
  added to one (what a customer writes about an open ticket);
- `ignored` otherwise (a greeting, an answer mid-intake): the bot took care of it, so it needs
  no review, and `handled_by = "bot"` tells it apart from noise.

A crash at any point loses and doubles nothing: a post still `new` after a restart is handed to
the dialogue again, which recognises the message_ref and answers nothing twice (its replies are
in the outbox already), and is then marked.

Platforms have no buttons in direct messages: `direct_text` writes a reply's buttons as the
words a customer types instead (`yes`, `skip`, `1`…`5`, `/status`), which the dialogue accepts.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot import catalog
from bot.channel import Button, Dialogue, Inbound, Reply
from storage import outbox
from storage.clock import Clock, utc_now
from storage.conversations import message_key
from storage.db import Store
from storage.models import (
    Conversation,
    Message,
    OutboxMessage,
    SocialPost,
    Ticket,
)

log = logging.getLogger("careloop.monitors.direct")
OUTBOX = cast(Table, OutboxMessage.__table__)
# Built once (compiled once); run with one parameter set per reply row.
_ADDRESS = (
    update(OUTBOX)
    .where(OUTBOX.c.id == bindparam("b_id"), OUTBOX.c.status == outbox.PENDING)
    .values(payload=bindparam("b_payload"), next_attempt_at=bindparam("b_due"))
)

DM_PLATFORMS = ("x", "mastodon")
DM_STREAM = "dms"
HANDLED_BY = "bot"

# What a customer types instead of pressing a button.
_WORDS = {
    "en": {"reply": "Reply: {choices}", "yes": "yes", "no": "no", "skip": "skip"},
    "zh": {"reply": "回复：{choices}", "yes": "是", "no": "不用", "skip": "跳过"},
}
_MENU = {"complaint": "/new", "suggestion": "/new", "praise": "/new", "status": "/status",
         "human": "/human"}


@dataclass(frozen=True, slots=True)
class PendingDM:
    id: int
    platform: str
    external_id: str
    author_id: str | None
    author_name: str | None
    author_username: str | None
    text: str
    language: str | None
    raw: dict[str, Any] | None


# --- replies as text ------------------------------------------------------------------------

def typed_choice(button: Button, lang: str) -> str | None:
    """The word that does what this button does, or None when only the button could."""
    words = _WORDS.get(lang, _WORDS["en"])
    action, *parts = button.data.split(":")
    if action == "confirm" or button.label == catalog.t(lang, "btn_yes"):
        return words["yes"]
    if action == "edit":
        return words["no"]
    if action in ("skip", "cskip"):
        return words["skip"]
    if action == "csat" and parts:
        return parts[-1]
    if action == "menu" and parts:
        return _MENU.get(parts[0])
    if action == "lang" and parts:
        return f"/lang {parts[0]}"
    if action == "cat":
        return button.label
    return None  # editf: the next message is taken as the corrected description anyway


def direct_text(reply: Reply, lang: str | None) -> str:
    """A reply as one direct message: its text, and its buttons as words to reply with."""
    language = catalog.language_of(lang) or catalog.DEFAULT_LANGUAGE
    choices: list[str] = []
    for row in reply.buttons:
        for button in row:
            word = typed_choice(button, language)
            if word and word not in choices:
                choices.append(word)
    if not choices:
        return reply.text
    words = _WORDS.get(language, _WORDS["en"])
    return f"{reply.text}\n\n{words['reply'].format(choices=' / '.join(choices))}"


# --- direct messages in -----------------------------------------------------------------------

async def pending_direct_messages(store: Store, *, limit: int) -> list[PendingDM]:
    async with store.read() as session:
        rows = await session.execute(
            select(
                SocialPost.id, SocialPost.platform, SocialPost.external_id,
                SocialPost.author_id, SocialPost.author_name, SocialPost.author_username,
                SocialPost.text, SocialPost.language, SocialPost.raw,
            )
            .where(
                SocialPost.stream == DM_STREAM,
                SocialPost.state == "new",
                SocialPost.platform.in_(DM_PLATFORMS),
            )
            .order_by(SocialPost.id)
            .limit(limit)
        )
        return [PendingDM(*row) for row in rows.all()]


def inbound_of(dm: PendingDM) -> Inbound | None:
    if not dm.author_id:
        return None
    text = dm.text.strip()
    media = (dm.raw or {}).get("media") or []
    unsupported = None
    if not text:
        if not media:
            return None
        # A picture with no words: the dialogue answers politely that it needs words.
        unsupported = "photo" if str(media[0]) in ("image", "gifv", "photo") else str(media[0])
    return Inbound(
        channel=dm.platform,
        customer_ref=dm.author_id,
        message_ref=dm.external_id,
        text=text or None,
        display_name=dm.author_name or dm.author_username,
        language_hint=dm.language,
        unsupported=unsupported,
    )


async def handle_direct_messages(
    store: Store, dialogue: Dialogue, *, limit: int = 100, clock: Clock = utc_now
) -> int:
    """Runs the stored, unhandled direct messages through the dialogue, oldest first; returns
    how many it handled. Called by the poll loop after it stores a page of direct messages,
    and once on start (what a crash left)."""
    handled = 0
    stuck: set[tuple[str, str | None]] = set()
    for dm in await pending_direct_messages(store, limit=limit):
        if (dm.platform, dm.author_id) in stuck:
            continue  # keep one customer's messages in order: retry them all next round
        try:
            await handle_one(store, dialogue, dm, clock=clock)
        except Exception:
            log.exception("direct message %s (%s) not handled; retried next round",
                          dm.id, dm.platform)
            stuck.add((dm.platform, dm.author_id))
            continue
        handled += 1
    return handled


def direct_messages_hook(
    store: Store, dialogue: Dialogue, *, limit: int = 100, clock: Clock = utc_now
) -> Callable[[Sequence[int]], Awaitable[None]]:
    """For monitors/poll.Monitor.on_direct_messages: after a page of direct messages is stored,
    answer every unhandled one (those just written and any a crash left), oldest first."""

    async def hook(_written: Sequence[int]) -> None:
        while await handle_direct_messages(store, dialogue, limit=limit, clock=clock) >= limit:
            pass  # a full batch: there may be more

    return hook


async def handle_one(
    store: Store, dialogue: Dialogue, dm: PendingDM, *, clock: Clock = utc_now
) -> None:
    inbound = inbound_of(dm)
    replies = await dialogue(inbound) if inbound is not None else []
    refs = [r.ref for r in replies if r.ref is not None]
    async with store.transaction() as session:
        now = clock()
        ticket_id = None
        if inbound is not None:
            created = await _address_replies(session, refs, dm, now) if refs else None
            ticket_id = created or await _ticket_of(session, dm, answered=bool(refs))
        await session.execute(
            update(SocialPost)
            .where(SocialPost.id == dm.id, SocialPost.state == "new")
            .values(
                state="ticketed" if ticket_id else "ignored",
                ticket_id=ticket_id,
                handled_by=HANDLED_BY,
                handled_at=now,
                version=SocialPost.version + 1,
            )
        )


async def _address_replies(
    session: AsyncSession, refs: list[int], dm: PendingDM, now: datetime
) -> int | None:
    """Nobody sends these replies inline (there is no open chat to answer in), so they are due
    now rather than after the dialogue's grace period, and carry the message they answer, so
    a Mastodon reply lands in the customer's conversation thread. Returns the ticket whose
    confirmation is among them (the message created it)."""
    rows = (await session.execute(
        select(OUTBOX.c.id, OUTBOX.c.kind, OUTBOX.c.ticket_id, OUTBOX.c.payload, OUTBOX.c.status)
        .where(OUTBOX.c.id.in_(refs))
    )).all()
    created = next((r.ticket_id for r in rows if r.kind == "ticket_created" and r.ticket_id), None)
    due = [
        {"b_id": r.id, "b_payload": {**(r.payload or {}), "reply_to": dm.external_id},
         "b_due": now}
        for r in rows if r.status == outbox.PENDING
    ]
    if due:
        conn = await session.connection()
        await conn.execute(_ADDRESS, due)
    return int(created) if created else None


async def _ticket_of(session: AsyncSession, dm: PendingDM, *, answered: bool) -> int | None:
    """The ticket this message was added to, if any."""
    assert dm.author_id is not None
    key = message_key(dm.author_id, dm.external_id)
    message = (await session.execute(
        select(Message.ticket_id, Message.created_at, Message.conversation_id).where(
            Message.channel == dm.platform, Message.external_id == key
        )
    )).first()
    if message is None:
        return None
    if message.ticket_id:
        return int(message.ticket_id)
    if answered:
        return None
    # Handled before a crash (the dialogue answered nothing now): the ticket its turn created
    # is the conversation's last ticket, if it was made at or after this message.
    row = (await session.execute(
        select(Ticket.id)
        .join(Conversation, Conversation.ticket_id == Ticket.id)
        .where(
            Conversation.id == message.conversation_id,
            Ticket.created_at >= message.created_at,
        )
    )).scalar()
    return int(row) if row else None
