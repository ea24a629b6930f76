"""Complaint, suggestion and praise intake: ask only for what the NLU did not find, show a
summary, create the ticket on confirmation.

The draft lives in `state["draft"]`; `state["flow"]` numbers the intakes of a conversation.
Buttons carry that number (`confirm:7`), so a button from an older summary is recognised as
stale, and the ticket's intake key is `chat:<conversation>:<flow>`, so a retried confirmation
returns the same ticket instead of a second one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from bot import catalog
from bot.flows.turn import Keyboard, PendingReply, Said, Turn, button
from nlu.types import CATEGORIES, Parse
from storage import conversations
from storage.lifecycle import PRIORITIES, default_priority
from storage.models import OutboxMessage
from storage.tickets import (
    MAX_TEXT,
    NewTicket,
    create_ticket,
    create_ticket_core,
    create_ticket_raw,
)

INTAKE_KINDS = ("complaint", "suggestion", "praise")
# Steps of the intake, in the order questions are asked.
QUESTIONS = ("describe", "category", "order", "store", "photos")
INTAKE_STEPS = frozenset({*QUESTIONS, "confirm", "edit"})
# Which optional questions make sense for which complaint category: nobody has an order number
# for a dirty store, nor a store for a website bug.
NO_ORDER = frozenset({"store_environment", "service_attitude"})
STORE_MATTERS = frozenset({
    "service_attitude", "service_speed", "store_environment", "product_quality",
    "product_safety", "pricing", "returns", "other",
})
EDITABLE = ("description", "category", "order", "store")
MAX_ORDER = 64
MAX_STORE = 200


def draft_of(turn: Turn) -> dict[str, Any]:
    draft: dict[str, Any] = turn.state.setdefault("draft", {})
    return draft


def flow_no(turn: Turn) -> int:
    return int(turn.state.get("flow", 0))


def start(turn: Turn, kind: str | None, parse: Parse | None = None) -> None:
    """A new intake (dropping any unfinished one): fill in what the message already says."""
    turn.state["flow"] = flow_no(turn) + 1
    draft: dict[str, Any] = {"kind": kind, "answered": [], "files": 0}
    turn.state["draft"] = draft
    if turn.inbound.attachments:
        draft["files"] = len(turn.inbound.attachments)
    if parse is not None and turn.text:
        absorb(turn, draft, parse, infer_kind=kind is None)
    ask_next(turn)


def question(turn: Turn, parse: Parse) -> None:
    """A retail question the bot cannot answer itself (delivery options, invoices, opening
    hours...): a P4 `question` ticket with the customer's words, which the team answers in
    this chat. Nothing to ask: straight to the summary, as every ticket is confirmed first
    (CONTRACT §4), so a message misread as a question never opens a ticket by itself."""
    turn.state["flow"] = flow_no(turn) + 1
    draft: dict[str, Any] = {"kind": "question", "answered": [], "files": 0}
    turn.state["draft"] = draft
    absorb(turn, draft, parse, infer_kind=False)
    ask_next(turn)


def absorb(turn: Turn, draft: dict[str, Any], parse: Parse, *, infer_kind: bool) -> None:
    """What one free-text description tells us: kind, category, priority, order, store."""
    if infer_kind:
        draft["kind"] = parse.intent.name if parse.intent.name in INTAKE_KINDS else "complaint"
    draft["description"] = turn.text[:MAX_TEXT]
    if draft["kind"] == "complaint":
        if parse.category is not None and not draft.get("category_sure"):
            draft["category"] = parse.category.name
            draft["category_sure"] = (
                parse.category.confidence >= turn.policy.category_confidence
                and parse.category.name != "other"
            )
        draft["urgency"] = parse.urgency
    for entity, key in (("order_id", "order"), ("store", "store")):
        value = parse.entity(entity)
        if value and not draft.get(key):
            draft[key] = value


def missing(draft: dict[str, Any]) -> str | None:
    """The first question still to ask, or None when the summary can be shown."""
    kind = draft.get("kind") or "complaint"
    answered = set(draft.get("answered", ()))
    category = draft.get("category")
    if not draft.get("description"):
        return "describe"
    if kind == "complaint":
        if not draft.get("category_sure") and "category" not in answered:
            return "category"
        if category not in NO_ORDER and not draft.get("order") and "order" not in answered:
            return "order"
        if category in STORE_MATTERS and not draft.get("store") and "store" not in answered:
            return "store"
        if not draft.get("files") and "photos" not in answered:
            return "photos"
    if kind == "praise" and not draft.get("store") and "store" not in answered:
        return "store"
    return None


def skip_row(turn: Turn, step: str) -> tuple[Any, ...]:
    return (button(turn.t("btn_skip"), f"skip:{flow_no(turn)}:{step}"),)


def ask_next(turn: Turn) -> None:
    draft = draft_of(turn)
    step = None if draft.get("editing") else missing(draft)
    if step is None:
        draft.pop("editing", None)
        summary(turn)
        return
    turn.step = step
    ask(turn, step)


def ask(turn: Turn, step: str) -> None:
    draft = draft_of(turn)
    kind = draft.get("kind") or "complaint"
    flow = flow_no(turn)
    if step == "describe":
        turn.say("ask_describe_" + draft["kind"] if draft.get("kind") else "ask_describe")
    elif step == "category":
        guess = draft.get("category")
        rows: list[tuple[Any, ...]] = []
        if guess and guess != "other":
            rows.append((button(turn.t("btn_yes"), f"cat:{flow}:{guess}"),))
        names = [c for c in CATEGORIES if c != guess or guess == "other"]
        for i in range(0, len(names), 2):
            rows.append(tuple(
                button(catalog.category_word(turn.lang, c), f"cat:{flow}:{c}")
                for c in names[i:i + 2]
            ))
        rows.append(skip_row(turn, step))  # optional too: skipped, the guess stands or "other"
        if guess and guess != "other":
            turn.say("ask_category_guess", tuple(rows),
                     category=catalog.category_word(turn.lang, guess))
        else:
            turn.say("ask_category", tuple(rows))
    elif step == "order":
        turn.say("ask_order", (skip_row(turn, step),))
    elif step == "store":
        turn.say("ask_store_praise" if kind == "praise" else "ask_store", (skip_row(turn, step),))
    elif step == "photos":
        turn.say("ask_photos", (skip_row(turn, step),))
    elif step == "confirm":
        summary(turn)
    elif step == "edit":
        ask_edit(turn)


def summary(turn: Turn) -> None:
    draft = draft_of(turn)
    lang = turn.lang
    kind = draft.get("kind") or "complaint"
    lines = [
        turn.t("summary_kind", value=catalog.kind_word(lang, kind)),
        turn.t("summary_question" if kind == "question" else "summary_description",
               value=_short(draft.get("description", ""))),
    ]
    if kind == "complaint":
        lines.append(turn.t("summary_category",
                            value=catalog.category_word(lang, draft.get("category"))))
        if draft.get("order"):
            lines.append(turn.t("summary_order", value=draft["order"]))
    if draft.get("store"):
        lines.append(turn.t("summary_store", value=draft["store"]))
    if draft.get("files"):
        lines.append(turn.t("summary_attachments", value=draft["files"]))
    flow = flow_no(turn)
    text = turn.t("summary", lines="\n".join(lines)) + "\n" + turn.t("summary_hint")
    turn.step = "confirm"
    turn.say_text(text, (
        (button(turn.t("btn_confirm"), f"confirm:{flow}"),
         button(turn.t("btn_edit"), f"edit:{flow}")),
    ))


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def ask_edit(turn: Turn) -> None:
    flow = flow_no(turn)
    kind = draft_of(turn).get("kind")
    fields = [f for f in EDITABLE if kind == "complaint" or f in ("description", "store")]
    turn.step = "edit"
    rows: Keyboard = tuple(
        (button(turn.t(f"field_{f}"), f"editf:{flow}:{f}"),) for f in fields
    )
    turn.say("ask_edit", rows)


def _answered(draft: dict[str, Any], step: str) -> None:
    answered = draft.setdefault("answered", [])
    if step not in answered:
        answered.append(step)


async def answer_text(turn: Turn) -> None:
    """Free text while a question is open: the answer to it."""
    draft = draft_of(turn)
    step = turn.step or "describe"
    text = turn.text
    if step == "confirm":
        if catalog.is_yes(text) or _intent(turn) == "affirm":
            await confirm(turn)
        elif catalog.is_skip(text) or _intent(turn) == "deny":
            ask_edit(turn)
        else:  # more detail: add it to the description and show the summary again
            draft["description"] = (draft.get("description", "") + "\n" + text)[:MAX_TEXT]
            summary(turn)
        return
    if step == "edit":
        draft["description"] = text[:MAX_TEXT]
        summary(turn)
        return
    if step == "describe":
        if turn.parse is not None:
            absorb(turn, draft, turn.parse, infer_kind=draft.get("kind") is None)
        else:
            draft["description"] = text[:MAX_TEXT]
    elif step == "category":
        if catalog.is_yes(text) or catalog.is_skip(text):
            draft.setdefault("category", "other")
        else:
            draft["category"] = _category_from(turn, text, draft.get("category"))
        draft["category_sure"] = True
    elif step == "order":
        if not catalog.is_skip(text):
            found = turn.parse.entity("order_id") if turn.parse else None
            draft["order"] = (found or text)[:MAX_ORDER]
    elif step == "store":
        if not catalog.is_skip(text):
            draft["store"] = text[:MAX_STORE]
    elif step == "photos":
        if not (catalog.is_skip(text) or catalog.is_done(text)):
            # Words instead of a photo: they belong to the description, nothing is lost.
            draft["description"] = (draft.get("description", "") + "\n" + text)[:MAX_TEXT]
    _answered(draft, step)
    ask_next(turn)


def _intent(turn: Turn) -> str | None:
    return turn.parse.intent.name if turn.parse else None


def _category_from(turn: Turn, text: str, guess: str | None) -> str:
    """A typed category: its name or its words in either language, else what the NLU reads."""
    wanted = catalog.normalise_answer(text)
    for lang in catalog.LANGUAGES:
        for name, word in catalog.CATEGORY_WORDS[lang].items():
            if wanted in (name, word.lower()) or (len(wanted) >= 2 and wanted in word.lower()):
                return name
    if turn.parse is not None and turn.parse.category is not None:
        return turn.parse.category.name
    return guess or "other"


def files_received(turn: Turn) -> None:
    """Photos or documents while an intake is open: kept for the ticket."""
    draft = draft_of(turn)
    draft["files"] = int(draft.get("files", 0)) + len(turn.inbound.attachments)
    if turn.step == "photos":
        flow = flow_no(turn)
        turn.say("photo_received", ((button(turn.t("btn_done"), f"skip:{flow}:photos"),),),
                 count=draft["files"])
    elif not turn.text:
        turn.say("attachment_kept")
        if turn.step:
            ask(turn, turn.step)


async def on_button(turn: Turn, action: str, parts: list[str]) -> bool:
    """Intake buttons (`skip`, `cat`, `confirm`, `edit`, `editf`). False when stale."""
    draft = turn.state.get("draft")
    flow = parts[0] if parts else ""
    if draft is None or flow != str(flow_no(turn)):
        return False
    if action == "confirm":
        if turn.step != "confirm":
            return False
        await confirm(turn)
        return True
    if action == "edit":
        ask_edit(turn)
        return True
    if action == "editf" and len(parts) > 1 and parts[1] in EDITABLE:
        field = parts[1]
        draft["editing"] = True
        if field == "description":
            turn.step = "edit"
            turn.say("ask_edit_description")
        else:
            if field == "category":
                draft["category_sure"] = False
            turn.step = field
            ask(turn, field)
        return True
    value = parts[1] if len(parts) > 1 else ""
    if action == "cat" and turn.step == "category" and value in CATEGORIES:
        draft["category"] = value
        draft["category_sure"] = True
        _answered(draft, "category")
        ask_next(turn)
        return True
    step = value
    if action == "skip" and step == turn.step:
        _answered(draft, step)
        if step == "category":
            draft.setdefault("category", "other")
            draft["category_sure"] = True
        ask_next(turn)
        return True
    return False


def ticket_fields(turn: Turn, draft: dict[str, Any]) -> NewTicket:
    kind = draft.get("kind") or "complaint"
    category = draft.get("category", "other") if kind == "complaint" else None
    # The NLU's urgency may raise a priority, never lower what the category alone demands
    # (product safety is P1 however calmly it is told).
    candidates = [default_priority(kind, category)]
    if kind == "complaint" and draft.get("urgency") in PRIORITIES:
        candidates.append(draft["urgency"])
    if kind == "complaint" and _repeated(turn, category):
        candidates.append("P2")
    return NewTicket(
        kind=kind,
        channel=turn.inbound.channel,
        description=draft.get("description") or turn.t("human_request_text"),
        customer_id=turn.customer_id,
        identity_id=turn.identity.id,
        category=category,
        priority=min(candidates),
        order_number=draft.get("order"),
        store=draft.get("store"),
        language=turn.lang,
        actor="customer",
        intake_key=f"chat:{turn.conversation.id}:{flow_no(turn)}",
    )


# This chat's complaint tickets of the repeat window, [[ISO time, category], ...], newest last:
# kept in the conversation's state, so telling a repeat costs no query.
RECENT_COMPLAINTS = "complaints"


def _recent_complaints(turn: Turn) -> list[tuple[datetime, str | None]]:
    since = turn.now - turn.policy.repeat_window
    recent = [(datetime.fromisoformat(at), category)
              for at, category in turn.state.get(RECENT_COMPLAINTS, ())]
    return [(at, category) for at, category in recent if at >= since]


def _repeated(turn: Turn, category: str | None) -> bool:
    return any(c == category for _, c in _recent_complaints(turn))


def _remember_complaint(turn: Turn, category: str | None) -> None:
    kept = [*_recent_complaints(turn)[-9:], (turn.now, category)]
    turn.state[RECENT_COMPLAINTS] = [[at.isoformat(), c] for at, c in kept]


async def create(turn: Turn, *, needs_human: bool = False) -> int:
    """The ticket from the draft. The ticket service writes the confirmation to the outbox; it
    is rendered here and becomes this turn's reply (one confirmation, with the number)."""
    from bot.notifications import render_payload  # here: notifications imports the catalogue

    draft = draft_of(turn)
    new = ticket_fields(turn, draft)
    new.needs_human = needs_human
    if turn.tx is None and not draft.get("files") and not turn.said:
        # An optimistic turn on PostgreSQL (the common confirm): the ticket, its confirmation
        # and the turn's write in one transaction on the raw connection. Files, or replies
        # said before the ticket, take the locked path below (`turn.session` raises).
        created = await create_ticket_raw(
            await turn.raw_transaction(), turn.rules, new,
            confirmation_due=turn.now + turn.policy.grace,
        )
        if not created.created:  # made by an earlier try: the locked path adopts its reply
            raise conversations.NeedsTransaction("the ticket exists already")
        ticket_id = created.id
    elif turn.session.new or any(s.row.id is None for s in turn.said):
        # ORM rows waiting for a flush (which a Core statement would not wait for), or
        # replies said before the ticket, whose ids must stay below the confirmation's: the
        # ORM flush writes them first (bot/flows/turn.py). No flow does either before
        # creating today, so this is the rare path.
        ticket_id = (await create_ticket(turn.session, turn.rules, new)).id
        created = None
    else:
        # The common path: Core statements, the confirmation due only after the reply grace
        # (as `Turn.adopt` would set it), so the worker leaves it to the channel.
        created = await create_ticket_core(
            turn.session, turn.rules, new, confirmation_due=turn.now + turn.policy.grace
        )
        ticket_id = created.id
    if draft.get("files"):
        await conversations.attach_pending_to_ticket(
            turn.session, turn.conversation.id, ticket_id
        )
    turn.attachments_to_ticket = ticket_id
    if new.kind == "complaint":
        _remember_complaint(turn, new.category)
    if created is not None and created.confirmation is not None:
        reply = PendingReply(created.confirmation, id=created.confirmation_id)
        for reply_text, buttons in render_payload(
            "ticket_created", created.confirmation["payload"], ticket_id, now=turn.now
        ):
            turn.said.append(Said(row=reply, text=reply_text, buttons=buttons))
    else:
        row = _created_row(turn, ticket_id) or await _stored_created_row(turn, ticket_id)
        if row is not None:
            for reply_text, buttons in render_payload(
                "ticket_created", row.payload, ticket_id, now=turn.now
            ):
                turn.adopt(row, reply_text, buttons)
    turn.conversation.ticket_id = ticket_id
    turn.state.pop("draft", None)
    turn.state["done"] = [flow_no(turn), ticket_id]
    turn.step = None
    return ticket_id


def _created_row(turn: Turn, ticket_id: int) -> OutboxMessage | None:
    for obj in turn.session.new:
        if (
            isinstance(obj, OutboxMessage)
            and obj.ticket_id == ticket_id
            and obj.kind == "ticket_created"
        ):
            return obj
    return None


async def _stored_created_row(turn: Turn, ticket_id: int) -> OutboxMessage | None:
    # Only when the intake key found an existing ticket (a retry after a lost commit reply).
    return (
        await turn.session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.ticket_id == ticket_id, OutboxMessage.kind == "ticket_created"
            )
        )
    ).first()


async def confirm(turn: Turn) -> None:
    await create(turn)
