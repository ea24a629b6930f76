"""Outbox rows as the customer reads them. The Telegram and web-chat senders (and the dialogue,
for the ticket confirmation) call `render`; every kind the store writes has a rendering here.

Deadlines are told in words relative to the moment of sending ("within 4 hours"), in the
language the row was written in.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from bot import catalog
from bot.channel import Button, Reply
from storage.clock import utc_now
from storage.lifecycle import DONE_STATUSES, format_number
from storage.outbox import Delivery

log = logging.getLogger("careloop.bot.notifications")

Keyboard = tuple[tuple[Button, ...], ...]
Rendered = list[tuple[str, Keyboard]]
SCORES = (1, 2, 3, 4, 5)


def render(delivery: Delivery, *, now: datetime | None = None) -> list[Reply]:
    """The messages one outbox row becomes (usually one), each carrying the row id as `ref`."""
    return [
        Reply(text=text, buttons=buttons, ref=delivery.id)
        for text, buttons in render_payload(
            delivery.kind, delivery.payload, delivery.ticket_id, now=now
        )
    ]


def render_payload(
    kind: str, payload: dict[str, Any], ticket_id: int | None, *, now: datetime | None = None
) -> Rendered:
    lang = catalog.language_of(payload.get("language")) or catalog.DEFAULT_LANGUAGE
    when = now or utc_now()
    if kind == "chat_reply":
        return [(str(payload.get("text", "")), _keyboard(payload.get("buttons")))]
    number = payload.get("number") or (format_number(ticket_id) if ticket_id else "")
    if kind == "ticket_created":
        due = _parse_time(payload.get("first_response_due"))
        return [(catalog.t(
            lang, "ticket_created",
            number=number,
            category=catalog.topic_word(lang, payload.get("kind"), payload.get("category")),
            priority=catalog.priority_word(lang, payload.get("priority")),
            first_response=catalog.within_words(lang, due - when) if due else catalog.t(
                lang, "asap"),
        ), ())]
    if kind == "status_changed":
        return [_status_changed(lang, number, payload, ticket_id, when)]
    if kind == "agent_reply":
        agent = payload.get("agent") or catalog.t(lang, "agent_fallback")
        return [(catalog.t(lang, "agent_reply", agent=agent, number=number,
                           text=payload.get("text", "")), ())]
    if kind == "handed_back":
        return [(catalog.t(lang, "handed_back", number=number), ())]
    if payload.get("text"):
        return [(str(payload["text"]), ())]
    log.warning("no rendering for outbox kind %s", kind)
    return []


def _status_changed(
    lang: str, number: str, payload: dict[str, Any], ticket_id: int | None, now: datetime
) -> tuple[str, Keyboard]:
    status = str(payload.get("status", ""))
    previous = payload.get("from")
    due = _parse_time(payload.get("resolution_due"))
    words = {
        "number": number,
        "status": catalog.status_word(lang, status),
        "due": catalog.within_words(lang, due - now) if due else catalog.t(lang, "asap"),
    }
    if status == "resolved":
        buttons: Keyboard = ()
        if ticket_id is not None:
            buttons = (tuple(Button(label=str(s), data=f"csat:{ticket_id}:{s}") for s in SCORES),)
        return catalog.t(lang, "notify_resolved", **words), buttons
    if previous in DONE_STATUSES and status not in DONE_STATUSES:
        return catalog.t(lang, "notify_reopened", **words), ()
    key = f"notify_{status}"
    if key not in catalog.TEXTS["en"]:
        key = "notify_new"
    return catalog.t(lang, key, **words), ()


def _keyboard(raw: Any) -> Keyboard:
    if not raw:
        return ()
    return tuple(
        tuple(Button(label=str(b["label"]), data=str(b["data"])) for b in row) for row in raw
    )


def _parse_time(raw: Any) -> datetime | None:
    if not raw:
        return None
    try:
        parsed = datetime.fromisoformat(str(raw))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=utc_now().tzinfo)
