"""Which chat channels this process runs, built from the settings and the process's role.

- the web chat lives in desk processes (it is served on the desk's port); its outbox rows are
  a mailbox that whichever desk process holds the visitor's socket shows, so a worker-only
  process marks them delivered without holding any socket;
- Telegram receives in `bot` processes (polling) or on the desk's port (webhook), and sends
  outbox messages from `worker` processes (one role, one job: two pollers of one bot would
  make Telegram refuse both with 409 Conflict);
- a customer channel with no adapter configured gets the log sender.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot import notifications
from bot.channel import Dialogue
from bot.dialogue import make_dialogue
from bot.logsender import log_sender
from bot.telegram import TelegramChannel
from bot.webchat import WebChat
from config.settings import Settings
from desk.app import RouteHook
from monitors.mastodon_sender import make_mastodon_sender
from monitors.x import make_x_adapter
from monitors.x_sender import make_x_sender
from nlu.types import Interpreter
from storage.db import Store
from storage.dispatch import Sender
from storage.outbox import Delivery
from storage.social_replies import record_reply_id
from storage.tickets import TicketRules

log = logging.getLogger("careloop")
CUSTOMER_CHANNELS = ("telegram", "webchat", "x", "mastodon")


def x_reply_recorder(store: Store) -> Callable[[int, str], Awaitable[None]]:
    async def recorded(post_id: int, external_id: str) -> None:
        await record_reply_id(store, post_id, external_id)

    return recorded


async def webchat_mailbox(delivery: Delivery) -> None:
    """Web chat rows need no push from a process without sockets: the desk process holding
    the visitor's socket shows them (it polls), or the visitor sees them on the next visit."""


@dataclass
class Channels:
    dialogue: Dialogue
    webchat: WebChat | None = None
    telegram: TelegramChannel | None = None
    telegram_receives: bool = False
    route_hooks: list[RouteHook] = field(default_factory=list)
    senders: dict[str, Sender] = field(default_factory=dict)
    # Platform clients the senders hold (the X adapter's HTTP session), closed on stop.
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def start(self) -> None:
        if self.telegram is not None:
            await self.telegram.start(receive=self.telegram_receives)

    async def close(self) -> None:
        if self.telegram is not None:
            await self.telegram.stop()
        if self.webchat is not None:
            await self.webchat.close()
        for close in self.closers:
            await close()


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
    if settings.mastodon_enabled and role in ("all", "worker"):
        channels.senders["mastodon"] = make_mastodon_sender(settings, store)
    if settings.x_enabled and role in ("all", "worker"):
        # Its own client: writes (DMs, replies) have their own rate-limit windows on X.
        x_adapter = make_x_adapter(settings)
        channels.senders["x"] = make_x_sender(x_adapter, on_replied=x_reply_recorder(store))
        channels.closers.append(x_adapter.close)
    if settings.telegram_token is None:
        if role in ("all", "bot"):
            log.info("Telegram is off (set CARELOOP_TELEGRAM_TOKEN to turn it on)")
        return channels
    polling = settings.telegram_mode == "polling"
    receives = role in (("all", "bot") if polling else ("all", "desk"))
    sends = role in ("all", "worker")
    if not (receives or sends):
        if role == "bot":
            log.info("Telegram is in webhook mode: desk processes receive its updates")
        return channels
    hook_secret = settings.telegram_webhook_secret
    channels.telegram = TelegramChannel(
        settings.telegram_token.get_secret_value(),
        settings.telegram_api_base,
        settings.telegram_mode,
        settings.telegram_webhook_url,
        hook_secret.get_secret_value() if hook_secret else None,
        dialogue,
        store,
    )
    channels.telegram_receives = receives
    if receives and not polling:
        channels.route_hooks.append(channels.telegram.webhook_hook)
    if sends:
        channels.senders["telegram"] = channels.telegram.sender
    return channels
