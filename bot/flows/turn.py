"""One customer event being handled: the locked conversation, the parse, and the replies owed.

A flow reads and changes `turn.state` / `turn.step` and calls `turn.say(...)`; the dialogue
writes all of it back in the same transaction. Replies are outbox rows (kind `chat_reply`) due a
little later, so the channel sends them at once and the worker only picks up what a crash left.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot import catalog
from bot.channel import Button, Inbound
from nlu.types import Parse
from storage import conversations, outbox, tickets
from storage.models import ChannelIdentity, Conversation, Message, OutboxMessage
from storage.tickets import TicketRules

CHAT_REPLY = "chat_reply"


@dataclass(frozen=True)
class ChatPolicy:
    """Knobs of the dialogue; the defaults suit a retail chat."""

    # The outbox worker waits this long before sending a reply itself: the channel that got
    # the reply back from the dialogue normally sends it (and marks it delivered) well before.
    grace: timedelta = timedelta(seconds=15)
    # Floods: at most this many events per window are answered; the rest are only stored.
    burst: int = 8
    window: timedelta = timedelta(seconds=10)
    # Below this NLU confidence the bot asks the customer to confirm the category.
    category_confidence: float = 0.75
    # Transactions in flight per dialogue. Above the connection pool's size, a burst of
    # customers would queue inside the pool, which is not first-come-first-served and gives up
    # after 30 s; an asyncio semaphore queues them fairly instead. Keep it below the pool size
    # so the desk and the worker in the same process still get connections.
    concurrency: int = 16


Keyboard = tuple[tuple[Button, ...], ...]


@dataclass
class Said:
    row: OutboxMessage
    text: str
    buttons: Keyboard


@dataclass
class Turn:
    session: AsyncSession
    rules: TicketRules
    policy: ChatPolicy
    now: datetime
    inbound: Inbound
    text: str
    parse: Parse | None
    identity: ChannelIdentity
    conversation: Conversation
    lang: str
    state: dict[str, Any]
    step: str | None
    said: list[Said] = field(default_factory=list)
    message: Message | None = None  # the stored inbound event, once written
    attachments_to_ticket: int | None = None
    _reply_key: str = ""

    def __post_init__(self) -> None:
        key = conversations.message_key(self.inbound.customer_ref, self.inbound.message_ref)
        # The reply keys derive from the event, so they are unique without a round trip.
        self._reply_key = f"{self.conversation.id}:{key or uuid.uuid4().hex}"

    @property
    def customer_id(self) -> int:
        return self.identity.customer_id

    @property
    def external_id(self) -> str | None:
        return conversations.message_key(self.inbound.customer_ref, self.inbound.message_ref)

    def t(self, key: str, **args: object) -> str:
        return catalog.t(self.lang, key, **args)

    def say(self, key: str, buttons: Keyboard = (), **args: object) -> None:
        self.say_text(self.t(key, **args), buttons)

    def say_text(self, text: str, buttons: Keyboard = ()) -> None:
        row = outbox.enqueue(
            self.session,
            key=f"reply:{self._reply_key}:{len(self.said)}"[:200],
            channel=self.inbound.channel,
            identity_id=self.identity.id,
            ticket_id=None,
            kind=CHAT_REPLY,
            payload={
                "text": text,
                "buttons": [[{"label": b.label, "data": b.data} for b in row] for row in buttons],
                "language": self.lang,
            },
            now=self.now,
        )
        row.next_attempt_at = self.now + self.policy.grace
        self.said.append(Said(row=row, text=text, buttons=buttons))

    def adopt(self, row: OutboxMessage, text: str, buttons: Keyboard = ()) -> None:
        """Answer with an outbox row somebody else wrote (the ticket service's confirmation),
        so the customer gets one confirmation, never two."""
        row.next_attempt_at = self.now + self.policy.grace
        self.said.append(Said(row=row, text=text, buttons=buttons))

    async def on_ticket(self, ticket_id: int) -> None:
        """This event is the customer writing about a ticket: it goes on the ticket (which
        wakes a ticket waiting for them) and is the stored inbound event at the same time."""
        self.message = await tickets.add_customer_message(
            self.session, self.rules, ticket_id, self.stored_text(), external_id=self.external_id
        )
        self.message.conversation_id = self.conversation.id
        self.attachments_to_ticket = ticket_id

    def stored_text(self) -> str:
        """The event as text for the transcript (buttons and files have none of their own)."""
        parts = [self.text] if self.text else []
        if self.inbound.button:
            parts.append(f"[button {self.inbound.button}]")
        for a in self.inbound.attachments:
            parts.append(f"[{a.kind}{' ' + a.file_name if a.file_name else ''}]")
        if self.inbound.unsupported:
            parts.append(f"[{self.inbound.unsupported}]")
        return " ".join(parts) or "[empty]"

    async def finish(self) -> None:
        """Writes the inbound event (if no flow put it on a ticket), its files and the state."""
        if self.message is None:
            self.message = conversations.record_inbound(
                self.session, self.conversation, channel=self.inbound.channel,
                external_id=self.external_id, text=self.stored_text(), now=self.now,
            )
        if self.inbound.attachments:
            await self.session.flush()  # the message id, so each file says where it came from
            for a in self.inbound.attachments:
                conversations.store_attachment(
                    self.session, conversation_id=self.conversation.id,
                    channel=self.inbound.channel, kind=a.kind, file_id=a.file_id,
                    file_name=a.file_name, mime_type=a.mime_type, size=a.size,
                    content=a.content, now=self.now, ticket_id=self.attachments_to_ticket,
                    message_id=self.message.id,
                )
        self.conversation.state = self.state
        self.conversation.step = self.step
        self.conversation.updated_at = self.now
        if self.conversation.language != self.lang:
            self.conversation.language = self.lang
            await conversations.set_customer_language(self.session, self.customer_id, self.lang)


def button(label: str, data: str) -> Button:
    return Button(label=label, data=data)


def menu(turn: Turn) -> Keyboard:
    """The main menu, built from data like python-telegram-bot's examples."""
    return (
        (button(turn.t("menu_complaint"), "menu:complaint"),),
        (button(turn.t("menu_suggestion"), "menu:suggestion"),
         button(turn.t("menu_praise"), "menu:praise")),
        (button(turn.t("menu_status"), "menu:status"),
         button(turn.t("menu_human"), "menu:human")),
    )
