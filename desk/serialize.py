"""Rows to the JSON of CONTRACT §7."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from storage.lifecycle import allowed_moves, format_number
from storage.models import Agent, Message, TicketEvent
from storage.queries import TicketDetail, TicketRow


def _t(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _sla_state(met_at: datetime | None, breached_at: datetime | None) -> str:
    if breached_at is not None:
        return "breached"
    return "met" if met_at is not None else "running"


def customer_json(c: Any) -> dict[str, Any]:
    return {"id": c.id, "name": c.name, "phone": c.phone, "email": c.email}


def ticket_json(t: Any, customer: Any, assignee: str | None) -> dict[str, Any]:
    """`t` is a Ticket or a row with the same columns; `customer` likewise."""
    return {
        "number": format_number(t.id),
        "status": t.status,
        "priority": t.priority,
        "category": t.category,
        "channel": t.channel,
        "kind": t.kind,
        "subject": t.subject,
        "description": t.description,
        "order_number": t.order_number,
        "store": t.store,
        "language": t.language,
        "customer": customer_json(customer),
        "assignee": assignee,
        "needs_human": t.needs_human,
        "created_at": _t(t.created_at),
        "updated_at": _t(t.updated_at),
        "first_response_due": _t(t.first_response_due),
        "resolution_due": _t(t.resolution_due),
        "first_response_at": _t(t.first_response_at),
        "resolved_at": _t(t.resolved_at),
        "closed_at": _t(t.closed_at),
        "csat": t.csat,
        "sla": {
            "first_response": _sla_state(t.first_response_at, t.first_response_breached_at),
            "resolution": _sla_state(t.resolved_at, t.resolution_breached_at),
            "paused": t.paused_at is not None,
        },
        "allowed_moves": sorted(allowed_moves(t.status)),
    }


def row_json(row: TicketRow) -> dict[str, Any]:
    return ticket_json(row.ticket, row.customer, row.assignee)


def event_json(e: TicketEvent) -> dict[str, Any]:
    return {
        "at": _t(e.at),
        "type": e.type,
        "from": e.from_value,
        "to": e.to_value,
        "actor": e.actor,
        "note": e.note,
    }


def message_json(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "at": _t(m.created_at),
        "direction": m.direction,
        "author_type": m.author_type,
        "author": m.author_name,
        "text": m.text,
        "public": m.public,
        "channel": m.channel,
    }


def detail_json(d: TicketDetail) -> dict[str, Any]:
    return ticket_json(d.ticket, d.customer, d.assignee) | {
        "events": [event_json(e) for e in d.events],
        "messages": [message_json(m) for m in d.messages],
    }


def agent_json(a: Agent) -> dict[str, Any]:
    return {
        "username": a.username,
        "display_name": a.display_name,
        "role": a.role,
        "language": a.language,
        "active": a.active,
        "created_at": _t(a.created_at),
    }


def mention_json(post: Any, assignee: str | None = None) -> dict[str, Any]:
    """A social post in the review queue (CONTRACT §7); `post` is a row of social_posts."""
    return {
        "id": post.id,
        "platform": post.platform,
        "stream": post.stream,
        "external_id": post.external_id,
        "url": post.url,
        "author": {
            "id": post.author_id,
            "username": post.author_username,
            "name": post.author_name,
            "followers": post.author_followers,
        },
        "text": post.text,
        "language": post.language,
        "state": post.state,
        "intent": post.intent,
        "priority": post.priority,
        "category": post.category,
        "sentiment": {"label": post.sentiment_label, "score": post.sentiment_score}
        if post.sentiment_label is not None
        else None,
        "created_at": _t(post.posted_at),
        "fetched_at": _t(post.fetched_at),
        "group_id": post.group_id,
        "group_size": post.group_size,
        "ticket": format_number(post.ticket_id) if post.ticket_id is not None else None,
        "assignee": assignee,
        "handled_by": post.handled_by,
        "handled_at": _t(post.handled_at),
        "reply_text": post.reply_text,
        "version": post.version,
    }
