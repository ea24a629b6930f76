"""Which chat channels this process runs, built from the settings and the process's role.

- the web chat lives in desk processes (it is served on the desk's port); its outbox rows are
  a mailbox that whichever desk process holds the visitor's socket shows, so a worker-only
  process marks them delivered without holding any socket;
- Telegram receives in `bot` processes (polling) or on the desk's port (webhook), and sends
  outbox messages from `worker` processes;
- a customer channel with no adapter configured gets the log sender.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from bot import notifications
from bot.channel import Dialogue
from bot.dialogue import make_dialogue
from bot.logsender import log_sender
from bot.webchat import WebChat
from config.settings import Settings
from desk.app import RouteHook
from nlu.types import Interpreter
from storage.db import Store
from storage.dispatch import Sender
from storage.outbox import Delivery
from storage.tickets import TicketRules

log = logging.getLogger("careloop")
CUSTOMER_CHANNELS = ("telegram", "webchat", "x", "mastodon")


async def webchat_mailbox(delivery: Delivery) -> None:
    """Web chat rows need no push from a process without sockets: the desk process holding
    the visitor's socket shows them (it polls), or the visitor sees them on the next visit."""


@dataclass
class Channels:
    dialogue: Dialogue
    webchat: WebChat | None = None
    route_hooks: list[RouteHook] = field(default_factory=list)
    senders: dict[str, Sender] = field(default_factory=dict)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        if self.webchat is not None:
            await self.webchat.close()


def build_channels(
    role: str,
    settings: Settings,
    store: Store,
    rules: TicketRules,
    interpreter: Interpreter,
    secret: str,
) -> Channels:
    dialogue = make_dialogue(store, rules, interpreter)
    channels = Channels(dialogue=dialogue)
    channels.senders = {channel: log_sender for channel in CUSTOMER_CHANNELS}
    channels.senders["webchat"] = webchat_mailbox
    if role in ("all", "desk"):
        channels.webchat = WebChat(store, dialogue, secret, notifications.render)
        channels.route_hooks.append(channels.webchat.hook)
        channels.senders["webchat"] = channels.webchat.sender
    if role in ("all", "bot") and not settings.telegram_enabled:
        log.info("Telegram is off (set CARELOOP_TELEGRAM_TOKEN to turn it on)")
    return channels
