"""The channel-agnostic dialogue: one customer event in, the replies out.

Each event is one store transaction: dedupe, load and lock the conversation, decide, then write
the state, the inbound message, any ticket, and every reply as an outbox row. The replies come
back with their outbox ids (`Reply.ref`); the channel sends them and calls
`bot.delivery.mark_delivered`. If the process dies between commit and send, the outbox worker
sends them after the grace period; if it dies before commit, the platform redelivers the event
and nothing was written. Either way nothing is lost and nothing is doubled.

Routing, in order: duplicate → flood throttle → buttons → commands → unsupported content →
the open question of the current step → free text by NLU intent.
"""

from __future__ import annotations

import asyncio
import logging
import re

import asyncpg
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot import catalog
from bot.channel import Dialogue, Inbound, Reply
from bot.flows import handoff, intake, status, survey
from bot.flows.turn import ChatPolicy, Turn, button, menu
from bot.understanding import Understanding
from nlu.types import Interpreter, Parse
from storage import conversations, outbox
from storage.clock import Clock
from storage.db import Store
from storage.lifecycle import DONE_STATUSES, format_number
from storage.tickets import MAX_TEXT, TicketRules

log = logging.getLogger("careloop.bot.dialogue")

# Two concurrent first messages of a new customer both try to create them; the loser's
# transaction fails on a unique constraint and simply runs again. So does an event whose
# ticket changed status between the read and the write (conversations.TicketChanged).
ATTEMPTS = 3
_CJK = re.compile(r"[\u3400-\u9fff]")
_WORD = re.compile(r"[A-Za-z]{2,}")


def make_dialogue(
    store: Store,
    rules: TicketRules,
    interpreter: Interpreter,
    *,
    clock: Clock | None = None,
    policy: ChatPolicy | None = None,
) -> Dialogue:
    """The dialogue every channel calls. Holds no state of its own: any number of processes
    may run one over the same store."""
    now_of = clock or rules.clock
    chat = policy or ChatPolicy()
    understanding = Understanding(interpreter)
    slots = asyncio.Semaphore(chat.concurrency)
    optimistic = store.is_postgres and chat.optimistic

    async def dialogue(inbound: Inbound) -> list[Reply]:
        text = (inbound.text or "").strip()[:MAX_TEXT]
        # Understood before the transaction: a Rasa backend is an HTTP call, and on SQLite an
        # open transaction holds the one write lock.
        parse = await understanding.parse(text) if text and not text.startswith("/") else None
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with slots:
                    # After a lost race, locked: a customer's burst then queues on the row lock
                    # instead of racing again.
                    if optimistic and attempt == 1:
                        try:
                            async with store.raw() as raw:
                                return await _turn(
                                    store, raw, rules, chat, now_of, inbound, text, parse
                                )
                        except conversations.NeedsTransaction:
                            pass  # nothing was written: the same event, in a transaction
                    async with store.transaction() as session:
                        turn_replies = await _turn(
                            store, session, rules, chat, now_of, inbound, text, parse
                        )
                    return turn_replies  # after the commit: the outbox ids exist now
            except (IntegrityError, conversations.TurnRaced):
                if attempt == ATTEMPTS:
                    raise
                log.info("conversation write raced (attempt %d); retrying", attempt)
        return []

    return dialogue


async def _turn(
    store: Store,
    reader: AsyncSession | asyncpg.Connection,
    rules: TicketRules,
    policy: ChatPolicy,
    now_of: Clock,
    inbound: Inbound,
    text: str,
    parse: Parse | None,
) -> list[Reply]:
    """One event, in a locked transaction (`reader` a session), or optimistic (`reader` a raw
    connection)."""
    now = now_of()
    hint = catalog.language_of(inbound.language_hint)
    loaded = await conversations.load_locked(
        reader,
        channel=inbound.channel,
        customer_ref=inbound.customer_ref,
        message_ref=inbound.message_ref,
        display_name=inbound.display_name,
        language=hint,
        now=now,
        postgres=store.is_postgres,
    )
    if loaded.duplicate:
        return []  # handled before: its replies are in the outbox already
    if not loaded.identity.reachable:
        # They write to us, so they can be written to again (they unblocked the bot).
        if not isinstance(reader, AsyncSession):
            raise conversations.NeedsTransaction("the identity was unreachable")
        await outbox.set_reachable(reader, reachable=True, identity_id=loaded.identity.id)
    conversation = loaded.conversation
    state = dict(conversation.state or {})
    session = reader if isinstance(reader, AsyncSession) else None
    turn = Turn(
        raw=None if session is not None else reader, tx=session, rules=rules, policy=policy,
        now=now, inbound=inbound, text=text, parse=parse, identity=loaded.identity,
        conversation=conversation,
        lang=_language(state, conversation.language, hint, text, parse),
        state=state, step=conversation.step, postgres=store.is_postgres,
    )
    try:
        if not _throttled(turn):
            await _route(turn)
        await turn.finish()
    except BaseException:
        await turn.end(commit=False)  # the connection goes back to the pool clean
        raise
    await turn.end(commit=True)
    return _replies(turn)


def _replies(turn: Turn) -> list[Reply]:
    return [Reply(text=s.text, buttons=s.buttons, ref=s.row.id) for s in turn.said]


def _language(
    state: dict[str, object], current: str | None, hint: str | None, text: str,
    parse: Parse | None,
) -> str:
    """The customer's language: fixed by /lang, else what they write in (when a message says
    enough to tell), else what they wrote before, else the platform's hint."""
    if state.get("lang_fixed") and current:
        return current
    if parse is not None and _telling(text):
        detected = catalog.language_of(parse.language)
        if detected:
            return detected
    return current or hint or catalog.DEFAULT_LANGUAGE


def _telling(text: str) -> bool:
    """Enough words to trust language detection ("CL-12" or "ok" is not)."""
    return len(_CJK.findall(text)) >= 2 or len(_WORD.findall(text)) >= 2


def _throttled(turn: Turn) -> bool:
    """At most `burst` events per window are answered; the rest are stored, unanswered, with
    one polite note per window. State lives in the conversation, like everything else."""
    window_start, count, warned = turn.state.get("rl") or (0.0, 0, False)
    stamp = turn.now.timestamp()
    if stamp - float(window_start) >= turn.policy.window.total_seconds():
        window_start, count, warned = stamp, 0, False
    count = int(count) + 1
    over = count > turn.policy.burst
    if over and not warned:
        turn.say("throttled")
        warned = True
    turn.state["rl"] = [window_start, count, warned]
    return over


async def _route(turn: Turn) -> None:
    if turn.inbound.button:
        await _on_button(turn, turn.inbound.button)
        return
    if turn.text.startswith("/"):
        await _on_command(turn)
        return
    if turn.inbound.unsupported and not turn.text and not turn.inbound.attachments:
        turn.say("unsupported", what=catalog.unsupported_word(turn.lang, turn.inbound.unsupported))
        if turn.step in intake.INTAKE_STEPS:
            intake.ask(turn, turn.step)
        return
    if turn.step == "comment":
        await survey.comment(turn, None if catalog.is_skip(turn.text) else turn.text or None)
        return
    if turn.step in intake.INTAKE_STEPS and turn.state.get("draft") is not None:
        await _in_intake(turn)
        return
    await _idle(turn)


async def _in_intake(turn: Turn) -> None:
    parse = turn.parse
    if turn.inbound.attachments:
        intake.files_received(turn)
        if not turn.text or turn.step == "photos":
            return
    if parse is not None:
        # A question about a ticket is answered even mid-intake, even at "what happened?"
        # (CONTRACT §4: free text works everywhere), and the question is asked again.
        number = parse.entity("ticket_id")
        if parse.intent.name == "check_status" and number:
            await status.answer(turn, number)
            intake.ask(turn, turn.step or "describe")
            return
    if parse is not None and turn.step != "describe":
        # A request for a person too, except as the answer to "what happened?".
        if (
            parse.intent.name == "request_human"
            and parse.intent.confidence >= turn.policy.human_confidence
        ):
            await handoff.request(turn)
            return
    await intake.answer_text(turn)


async def _idle(turn: Turn) -> None:
    """No question open: files, then what the text is about."""
    current = await _open_current_ticket(turn)
    human = await handoff.human_ticket(turn)
    if turn.inbound.attachments and not turn.text:
        if human is not None or current is not None:
            target = human if human is not None else current
            assert target is not None
            await turn.on_ticket(target)
            if human is None:
                turn.say("attachment_added", number=format_number(target))
        else:
            intake.start(turn, "complaint")
        return
    parse = turn.parse
    if parse is None:
        turn.say("not_understood", menu(turn))
        return
    intent = parse.intent.name
    if intent == "check_status":
        await status.answer(turn, parse.entity("ticket_id"))
        return
    if human is not None:
        # Human mode: a person answers; the bot only records what the customer writes.
        await turn.on_ticket(human)
        return
    if await survey.digit_answer(turn):
        return
    if intent == "request_human":
        await handoff.request(turn)
        return
    if current is not None and intent not in ("greet", "goodbye"):
        # What the customer writes after a ticket was created is about that ticket; /new (or
        # the menu) starts something else.
        await turn.on_ticket(current)
        turn.say("added_to_ticket", number=format_number(current))
        return
    if intent in intake.INTAKE_KINDS:
        intake.start(turn, None, parse)
    elif intent == "question":
        intake.question(turn, parse)
    elif intent == "greet":
        turn.say("greet", menu(turn))
    elif intent == "goodbye":
        turn.say("goodbye")
    else:
        turn.say("not_understood", menu(turn))


async def _open_current_ticket(turn: Turn) -> int | None:
    ticket_id = turn.conversation.ticket_id
    if ticket_id is None:
        return None
    loaded_id, status = turn.conversation.loaded_ticket
    if loaded_id != ticket_id:
        status = await conversations.ticket_status(turn.reader, ticket_id)
    if status is None or status in DONE_STATUSES:
        return None
    return ticket_id


async def _on_command(turn: Turn) -> None:
    head, _, rest = turn.text.partition(" ")
    command = head[1:].split("@", 1)[0].lower()
    arg = rest.strip()
    if command in ("start", "help", "menu"):
        name = turn.inbound.display_name
        turn.say("welcome", menu(turn), name=f" {name}" if name and turn.lang == "en" else "")
    elif command == "new":
        intake.start(turn, None)
    elif command == "status":
        await status.answer(turn, arg or None)
    elif command == "lang":
        _set_language(turn, arg)
    elif command == "human":
        await handoff.request(turn)
    elif command == "cancel":
        _cancel(turn)
    elif command == "skip":
        await _skip(turn)
    else:
        turn.say("unknown_command", menu(turn))


def _set_language(turn: Turn, arg: str) -> None:
    lang = catalog.language_of(arg)
    if lang is None:
        turn.say("lang_choose", ((button("English", "lang:en"), button("中文", "lang:zh")),))
        return
    turn.lang = lang
    turn.state["lang_fixed"] = True
    turn.say("lang_set")
    if turn.step in intake.INTAKE_STEPS and turn.state.get("draft") is not None:
        intake.ask(turn, turn.step)  # the open question again, in the new language


def _cancel(turn: Turn) -> None:
    had = turn.state.pop("draft", None) is not None or turn.step is not None
    turn.state.pop(survey.SURVEY_KEY, None)
    turn.step = None
    turn.say("cancelled" if had else "nothing_to_cancel")


async def _skip(turn: Turn) -> None:
    """`/skip` is the word `skip` for whatever is open."""
    turn.text = "skip"
    if turn.step == "comment":
        await survey.comment(turn, None)
    elif turn.step in intake.INTAKE_STEPS and turn.state.get("draft") is not None:
        await intake.answer_text(turn)
    else:
        turn.say("nothing_to_cancel")


async def _on_button(turn: Turn, data: str) -> None:
    action, *parts = data.split(":")
    handled = False
    if action == "menu":
        handled = await _menu(turn, parts[0] if parts else "")
    elif action == "lang":
        _set_language(turn, parts[0] if parts else "")
        handled = True
    elif action == "csat" and len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
        handled = await survey.score(turn, int(parts[0]), int(parts[1]))
    elif action == "cskip":
        if turn.step == "comment":
            await survey.comment(turn, None)
        else:
            turn.say("stale_step")
        handled = True
    elif action in ("skip", "cat", "confirm", "edit", "editf"):
        handled = await intake.on_button(turn, action, parts)
        if not handled:
            _stale_intake_button(turn, action, parts)
            return
    if not handled:
        turn.say("stale_button", menu(turn))


def _stale_intake_button(turn: Turn, action: str, parts: list[str]) -> None:
    """An old or repeated intake button: say so kindly, never create anything."""
    done = turn.state.get("done")
    flow = parts[0] if parts else ""
    if done and str(done[0]) == flow:
        turn.say("already_created", number=format_number(int(done[1])))
    elif turn.state.get("draft") is not None and flow == str(intake.flow_no(turn)):
        turn.say("stale_step")
        intake.ask(turn, turn.step or "describe")
    else:
        turn.say("stale_button", menu(turn))


async def _menu(turn: Turn, choice: str) -> bool:
    if choice in intake.INTAKE_KINDS:
        intake.start(turn, choice)
    elif choice == "status":
        await status.answer(turn, None)
    elif choice == "human":
        await handoff.request(turn)
    else:
        return False
    return True
