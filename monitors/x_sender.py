"""The outbox sender for channel `x`: ticket notifications (rendered by bot/notifications.py,
the same words the chat channels send) go to the customer as X direct messages; a
PUBLIC_REPLY row — a reply a person pressed send on in the review queue — goes out as a reply
post in the mention's thread (`reply.in_reply_to_tweet_id`).

X's answers become the dispatcher's outcomes (storage/dispatch.py): 429 → RetryAfter until
x-rate-limit-reset; 401 (revoked token), 402, 400 → PermanentFailure; 403 on a direct message
(the customer doesn't accept DMs from us, or blocked us) → PermanentFailure(unreachable=True)
so nothing more is tried for that customer; 5xx and network errors stay plain exceptions, so
the dispatcher backs off and tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bot.notifications import render
from monitors.direct import direct_text
from monitors.types import PUBLIC_REPLY, Adapter, MonitorError, Paused, RateLimited
from monitors.x import Refused
from storage import dispatch
from storage.clock import Clock, utc_now
from storage.outbox import Delivery

log = logging.getLogger("careloop.monitors.x_sender")

MAX_DM_CHARS = 10_000  # X's limit for one direct message
DUPLICATE = "duplicate content"

# Told once X has the reply: (social post id, the reply's id on X), so the mention can keep
# `reply_external_id`. The composition root wires it to the store.
RepliedHook = Callable[[int, str], Awaitable[None]]


def dm_texts(delivery: Delivery) -> list[str]:
    """The direct messages one outbox row becomes. X DMs have no inline buttons: the
    choices are written out, and the customer answers by typing one (CONTRACT §4)."""
    texts: list[str] = []
    lang = delivery.payload.get("language")
    for reply in render(delivery):
        # The same typed words the dialogue accepts (yes / skip / 1-5), as on Mastodon.
        text = direct_text(reply, lang if isinstance(lang, str) else None)
        texts.extend(text[i:i + MAX_DM_CHARS] for i in range(0, len(text), MAX_DM_CHARS))
    return [t for t in texts if t.strip()]


def make_x_sender(
    adapter: Adapter,
    *,
    on_replied: RepliedHook | None = None,
    clock: Clock = utc_now,
) -> dispatch.Sender:
    async def send(delivery: Delivery) -> None:
        try:
            if delivery.kind == PUBLIC_REPLY:
                await _public_reply(adapter, delivery, on_replied)
            else:
                await _direct(adapter, delivery)
        except RateLimited as exc:
            wait = max((exc.until - clock()).total_seconds(), 1.0)
            raise dispatch.RetryAfter(wait, str(exc)) from exc
        except Refused as exc:
            unreachable = exc.status == 403 and delivery.kind != PUBLIC_REPLY
            raise dispatch.PermanentFailure(str(exc), unreachable=unreachable) from exc
        except Paused as exc:
            raise dispatch.PermanentFailure(str(exc)) from exc
        except MonitorError:
            raise  # Unavailable: the dispatcher backs off and tries again

    return send


async def _direct(adapter: Adapter, delivery: Delivery) -> None:
    conversation = delivery.payload.get("dm_conversation_id")
    if not delivery.recipient and not conversation:
        raise dispatch.PermanentFailure("no X account for this customer")
    async def send_one(text: str) -> None:
        await adapter.send_direct(delivery.recipient or "", text,
                                  str(conversation) if conversation else None)

    # X's DM endpoint takes no idempotency key: a long message is sent part by part, each
    # recorded, so a retry starts after the parts X already has.
    await dispatch.send_parts(delivery, dm_texts(delivery), send_one)


async def _public_reply(
    adapter: Adapter, delivery: Delivery, on_replied: RepliedHook | None
) -> None:
    payload = delivery.payload
    in_reply_to = payload.get("in_reply_to")
    text = str(payload.get("text") or "").strip()
    if not in_reply_to or not text:
        raise dispatch.PermanentFailure("a public reply needs the post it answers and a text")
    try:
        reply_id = await adapter.reply(str(in_reply_to), text)
    except Refused as exc:
        if exc.status == 403 and DUPLICATE in str(exc).lower():
            if delivery.attempt > 1:
                # An earlier attempt of this row got through and only its outcome was lost
                # (delivery is at least once): the reply is on X already.
                log.info("outbox %s: X already has this reply", delivery.id)
                return
            # A first attempt: X refuses any repeat of the account's own text, whatever post
            # it answers (the same canned text to two people, a bulk reply). Nothing was
            # posted; say so rather than count it sent.
            raise dispatch.PermanentFailure(
                "X refused the reply as a duplicate of an earlier post of this account: "
                "nothing was posted; write it differently") from exc
        raise
    if on_replied is not None and payload.get("post_id") is not None:
        await on_replied(int(payload["post_id"]), reply_id)
