"""Canned replies: texts the team reuses, with `{customer}`, `{ticket}`, `{agent}`, `{status}`…
filled in from the ticket when an agent inserts one (the agent still reads and sends it)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage.errors import Conflict, Invalid, NotFound
from storage.lifecycle import STATUS_WORDS, format_number
from storage.models import Agent, CannedReply, Customer, Ticket

MAX_NAME = 100
MAX_BODY = 5_000
LANGUAGES = ("en", "zh")
# The placeholders a canned reply may use, and what each becomes.
VARIABLES: dict[str, str] = {
    "customer": "the customer's name",
    "ticket": "the ticket number (CL-…)",
    "agent": "your name",
    "status": "the ticket's status, in the customer's language",
    "priority": "the priority (P1–P4)",
    "category": "the category",
    "subject": "the ticket's subject",
    "order": "the order number",
    "store": "the store",
}
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def variables_for(ticket: Ticket, customer: Customer, agent: Agent) -> dict[str, str]:
    language = "zh" if ticket.language == "zh" else "en"
    fallback = "顾客" if language == "zh" else "customer"
    return {
        "customer": customer.name or fallback,
        "ticket": format_number(ticket.id),
        "agent": agent.display_name or agent.username,
        "status": STATUS_WORDS[language].get(ticket.status, ticket.status),
        "priority": ticket.priority,
        "category": (ticket.category or "").replace("_", " "),
        "subject": ticket.subject,
        "order": ticket.order_number or "",
        "store": ticket.store or "",
    }


def fill(body: str, variables: Mapping[str, str]) -> str:
    """Known placeholders are replaced; anything else in braces stays as typed, so a stray
    `{` in a reply is never an error."""
    return PLACEHOLDER.sub(lambda m: variables.get(m.group(1), m.group(0)), body)


def unknown_variables(body: str) -> list[str]:
    return sorted({m for m in PLACEHOLDER.findall(body) if m not in VARIABLES})


def _checked(name: str, body: str, language: str | None) -> tuple[str, str, str | None]:
    name = " ".join(name.split())
    body = body.strip()
    if not name:
        raise Invalid("name: give the canned reply a name")
    if len(name) > MAX_NAME:
        raise Invalid(f"name: at most {MAX_NAME} characters")
    if not body:
        raise Invalid("body: the reply is empty")
    if len(body) > MAX_BODY:
        raise Invalid(f"body: at most {MAX_BODY} characters")
    unknown = unknown_variables(body)
    if unknown:
        known = ", ".join("{" + v + "}" for v in VARIABLES)
        raise Invalid(f"body: unknown variable {{{unknown[0]}}}; use {known}")
    if language not in (None, *LANGUAGES):
        raise Invalid("language: en, zh or none")
    return name, body, language


async def list_canned(session: AsyncSession) -> list[CannedReply]:
    return list((await session.scalars(select(CannedReply).order_by(CannedReply.name))).all())


async def get_canned(session: AsyncSession, canned_id: int) -> CannedReply:
    row = await session.get(CannedReply, canned_id)
    if row is None:
        raise NotFound(f"no canned reply {canned_id}")
    return row


async def create_canned(
    session: AsyncSession, *, name: str, body: str, language: str | None, now: datetime
) -> CannedReply:
    name, body, language = _checked(name, body, language)
    row = CannedReply(name=name, body=body, language=language, created_at=now)
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:
        raise Conflict(f"a canned reply named {name!r} exists already") from None
    return row


async def update_canned(
    session: AsyncSession, canned_id: int, *, name: str, body: str, language: str | None
) -> CannedReply:
    row = await get_canned(session, canned_id)
    row.name, row.body, row.language = _checked(name, body, language)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict(f"a canned reply named {row.name!r} exists already") from None
    return row


async def delete_canned(session: AsyncSession, canned_id: int) -> None:
    await session.delete(await get_canned(session, canned_id))


def for_language(replies: list[CannedReply], language: str | None) -> list[CannedReply]:
    """The replies that suit a customer: their language's first, then the language-neutral."""
    lang = "zh" if language == "zh" else "en"
    return [r for r in replies if r.language == lang] + [r for r in replies if r.language is None]
