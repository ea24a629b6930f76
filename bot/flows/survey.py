"""Satisfaction: a 1-5 score from the keyboard on the resolved notification (or a bare digit
where there are no buttons), then an optional comment. The ticket service reopens on 1-2."""

from __future__ import annotations

from sqlalchemy import func, select

from bot.flows.turn import Turn, button
from storage.lifecycle import DONE_STATUSES, format_number
from storage.models import Survey, Ticket
from storage.tickets import record_survey

SURVEY_KEY = "survey"


def keyboard_data(ticket_id: int, score: int) -> str:
    return f"csat:{ticket_id}:{score}"


async def already_rated(turn: Turn, ticket: Ticket) -> bool:
    """Rated since the ticket was last resolved (a second press of the same keyboard)."""
    last = await turn.session.scalar(
        select(func.max(Survey.answered_at)).where(Survey.ticket_id == ticket.id)
    )
    if last is None:
        return False
    return ticket.resolved_at is None or last >= ticket.resolved_at


async def score(turn: Turn, ticket_id: int, value: int) -> bool:
    """False when the button is not this customer's or not a score (answered as stale)."""
    if not 1 <= value <= 5:
        return False
    ticket = await turn.session.get(Ticket, ticket_id)
    if ticket is None or ticket.customer_id != turn.customer_id:
        return False
    number = format_number(ticket_id)
    if await already_rated(turn, ticket):
        turn.say("csat_already", number=number)
        return True
    survey = await record_survey(
        turn.session, turn.rules, ticket_id, value, channel=turn.inbound.channel
    )
    await turn.session.flush()
    turn.state[SURVEY_KEY] = {"ticket": ticket_id, "survey": survey.id, "resume": turn.step}
    turn.step = "comment"
    skip = ((button(turn.t("btn_skip"), f"cskip:{ticket_id}"),),)
    turn.say("csat_low" if value <= 2 else "csat_ask_comment", skip, number=number, score=value)
    return True


async def comment(turn: Turn, text: str | None) -> None:
    """The optional comment after a score; None or a skip word skips it."""
    pending = turn.state.pop(SURVEY_KEY, {}) or {}
    turn.step = pending.get("resume")
    survey = await turn.session.get(Survey, pending.get("survey", 0)) if pending else None
    if text is None or survey is None:
        turn.say("csat_comment_skipped")
        return
    survey.comment = text[:2000]
    turn.say("csat_comment_saved")


async def digit_answer(turn: Turn) -> bool:
    """"4" typed after a resolved notification (X and Mastodon DMs have no keyboards)."""
    text = turn.text.strip()
    if len(text) != 1 or text not in "12345" or turn.conversation.ticket_id is None:
        return False
    ticket = await turn.session.get(Ticket, turn.conversation.ticket_id)
    if ticket is None or ticket.status not in DONE_STATUSES:
        return False
    return await score(turn, ticket.id, int(text))
