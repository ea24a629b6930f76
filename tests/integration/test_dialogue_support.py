"""The fake channel the dialogue tests talk through: events in, replies out, like a customer's
phone. It holds no tests of its own; the test_dialogue_* modules import it."""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field

from sqlalchemy import func, select

from bot.channel import Attachment, Dialogue, Inbound, Reply
from bot.dialogue import make_dialogue
from nlu.embedded import EmbeddedInterpreter
from nlu.factory import make_interpreter
from nlu.types import Interpreter
from storage.clock import ManualClock
from storage.db import Store
from storage.models import Ticket
from storage.sla import SlaPolicy
from storage.tickets import TicketRules

_refs = itertools.count(1)


@functools.cache
def shared_interpreter() -> Interpreter:
    # Loading the model takes seconds; every test reuses one (it keeps no per-loop state).
    interpreter = make_interpreter("embedded")
    assert isinstance(interpreter, EmbeddedInterpreter)
    return interpreter


@dataclass
class FakeChat:
    """One customer on one channel. Each event moves the clock a little, like a person typing."""

    dialogue: Dialogue
    clock: ManualClock
    customer: str = "5001"
    channel: str = "telegram"
    name: str | None = "Mei"
    hint: str | None = None
    seconds_between: float = 3.0
    transcript: list[Reply] = field(default_factory=list)

    async def send(
        self,
        text: str | None = None,
        *,
        button: str | None = None,
        attachments: tuple[Attachment, ...] = (),
        unsupported: str | None = None,
        ref: str | None = None,
    ) -> list[Reply]:
        self.clock.advance(seconds=self.seconds_between)
        replies = await self.dialogue(Inbound(
            channel=self.channel, customer_ref=self.customer,
            message_ref=ref or f"m{next(_refs)}", text=text, button=button,
            attachments=attachments, display_name=self.name, language_hint=self.hint,
            unsupported=unsupported,
        ))
        self.transcript.extend(replies)
        return replies

    async def send_text_of(self, **kw: object) -> str:
        return joined(await self.send(**kw))  # type: ignore[arg-type]

    async def say(self, text: str) -> str:
        return joined(await self.send(text))

    async def press(self, data: str) -> str:
        return joined(await self.send(button=data))

    def buttons(self) -> list[str]:
        """Data of the buttons on the last reply that had any."""
        for reply in reversed(self.transcript):
            if reply.buttons:
                return [b.data for row in reply.buttons for b in row]
        return []

    def button(self, prefix: str) -> str:
        return next(d for d in self.buttons() if d.startswith(prefix))


def joined(replies: list[Reply]) -> str:
    return "\n".join(r.text for r in replies)


@dataclass
class Shop:
    """A store with the dialogue over it, and a clock the test moves."""

    store: Store
    clock: ManualClock
    rules: TicketRules
    dialogue: Dialogue

    def chat(self, customer: str = "5001", **kw: object) -> FakeChat:
        return FakeChat(self.dialogue, self.clock, customer=customer, **kw)  # type: ignore[arg-type]

    def restart(self) -> Shop:
        """A new dialogue object over the same store, as after a process restart."""
        return make_shop(self.store, self.clock)

    async def tickets(self) -> list[Ticket]:
        async with self.store.read() as s:
            return list((await s.scalars(select(Ticket).order_by(Ticket.id))).all())

    async def count(self, model: type) -> int:
        async with self.store.read() as s:
            return int(await s.scalar(select(func.count()).select_from(model)) or 0)


def make_shop(store: Store, clock: ManualClock | None = None) -> Shop:
    clock = clock or ManualClock()
    rules = TicketRules(sla=SlaPolicy(), clock=clock)
    return Shop(store, clock, rules,
                make_dialogue(store, rules, shared_interpreter(), clock=clock))
