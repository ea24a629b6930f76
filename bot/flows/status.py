"""Where do my tickets stand: `/status`, `/status CL-123` and free-text status questions.

A customer sees only their own tickets. Someone else's number and a number that does not exist
get the very same sentence, so the bot cannot be used to probe other people's tickets.
"""

from __future__ import annotations

from bot import catalog
from bot.flows.turn import Turn
from storage import conversations
from storage.conversations import VisibleTicket
from storage.lifecycle import DONE_STATUSES, format_number, parse_number


def describe(turn: Turn, ticket: VisibleTicket) -> str:
    lang = turn.lang
    if ticket.status == "waiting_customer":
        nxt = turn.t("status_next_waiting")
    elif ticket.status in DONE_STATUSES:
        nxt = turn.t("status_next_done")
    else:
        nxt = turn.t("status_next_due",
                     due=catalog.within_words(lang, ticket.resolution_due - turn.now))
    return turn.t(
        "status_one",
        number=ticket.number,
        category=catalog.topic_word(lang, ticket.kind, ticket.category),
        status=catalog.status_word(lang, ticket.status),
        next=nxt,
    ).rstrip()


async def one(turn: Turn, raw_number: str) -> None:
    ticket_id = parse_number(raw_number)
    shown = format_number(ticket_id) if ticket_id else raw_number.strip()[:32]
    ticket = (
        await conversations.customer_ticket(turn.reader, turn.customer_id, ticket_id)
        if ticket_id
        else None
    )
    if ticket is None:
        turn.say("status_unknown", number=shown)
    else:
        turn.say_text(describe(turn, ticket))


async def all_open(turn: Turn) -> None:
    found = await conversations.open_tickets(turn.reader, turn.customer_id)
    if not found:
        turn.say("status_none")
        return
    if len(found) == 1:
        turn.say_text(describe(turn, found[0]))
        return
    lines = "\n".join(
        turn.t(
            "status_line",
            number=t.number,
            category=catalog.topic_word(turn.lang, t.kind, t.category),
            status=catalog.status_word(turn.lang, t.status),
        )
        for t in found
    )
    turn.say("status_list", lines=lines)


async def answer(turn: Turn, raw_number: str | None) -> None:
    if raw_number:
        await one(turn, raw_number)
    else:
        await all_open(turn)
