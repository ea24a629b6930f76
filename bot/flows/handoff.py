"""`/human`: a person from the team takes over a ticket.

The ticket is flagged `needs_human` with an event (the desk lists those first) and the
conversation enters human mode (`state["human"]` = the ticket id): the bot stops answering
free text, which is still recorded on the ticket, until the desk calls
`storage.conversations.hand_back`. Commands keep working, so the customer is never stuck.
"""

from __future__ import annotations

from bot.flows import intake
from bot.flows.turn import Turn
from storage.conversations import HUMAN_KEY
from storage.lifecycle import DONE_STATUSES, format_number
from storage.models import OutboxMessage, TicketEvent
from storage.tickets import NewTicket, create_ticket, load_ticket


async def human_ticket(turn: Turn) -> int | None:
    """The ticket in human mode, if it is still open (a closed one ends human mode)."""
    ticket_id = turn.state.get(HUMAN_KEY)
    if not isinstance(ticket_id, int):
        return None
    ticket = await load_ticket(turn.session, ticket_id)
    if ticket.status in DONE_STATUSES:
        turn.state.pop(HUMAN_KEY, None)
        return None
    return ticket_id


async def request(turn: Turn) -> None:
    current = await human_ticket(turn)
    if current is not None:
        turn.say("human_already", number=format_number(current))
        return
    draft = turn.state.get("draft")
    if draft and draft.get("description"):
        # Mid-intake: what they told us so far becomes the ticket, so nobody asks again.
        ticket_id = await intake.create(turn, needs_human=True)
    else:
        ticket_id = await _open_ticket(turn)
        turn.state.pop("draft", None)
        turn.step = None
    ticket = await load_ticket(turn.session, ticket_id, for_update=True)
    ticket.needs_human = True
    ticket.updated_at = turn.now
    turn.session.add(TicketEvent(
        ticket_id=ticket_id, at=turn.now, type="needs_human", actor="customer",
        note="the customer asked for a person in the chat",
    ))
    turn.state[HUMAN_KEY] = ticket_id
    turn.conversation.ticket_id = ticket_id
    turn.say("human_started", number=format_number(ticket_id))


async def _open_ticket(turn: Turn) -> int:
    """The conversation's current ticket if still open, else a new question ticket."""
    current = turn.conversation.ticket_id
    if current is not None:
        ticket = await load_ticket(turn.session, current)
        if ticket.status not in DONE_STATUSES:
            return current
    description = turn.t("human_request_text")
    if turn.text and not turn.text.startswith("/"):
        description += "\n" + turn.text
    ticket = await create_ticket(turn.session, turn.rules, NewTicket(
        kind="question", channel=turn.inbound.channel, description=description,
        customer_id=turn.customer_id, identity_id=turn.identity.id, language=turn.lang,
        needs_human=True, actor="customer",
        intake_key=f"chat:{turn.conversation.id}:human:{turn.external_id or turn.now.isoformat()}",
    ))
    # The ticket service owes the customer a "ticket created" message; "a person will take
    # over CL-n" says it already, so the customer gets one message, not two.
    for row in list(turn.session.new):
        if isinstance(row, OutboxMessage) and row.ticket_id == ticket.id \
                and row.kind == "ticket_created":
            turn.session.expunge(row)
    return ticket.id
