"""The outbox sender of channel `mastodon`.

- Ticket notifications and chat replies (every kind bot/notifications.py renders) go to the
  customer as direct-visibility statuses mentioning them, in reply to their last direct message
  when the row says which (`reply_to`, set by monitors/direct.py), with buttons written as the
  words to reply with. A text longer than the instance allows becomes a short thread.
- `public_reply` rows (a person pressed send in the review queue) become a public reply in the
  mention's thread; the new status id is kept on the post (`reply_external_id`).

Every status carries an Idempotency-Key derived from the outbox key, so the worker's retry after
a lost answer returns the status Mastodon already made instead of a second one.

Outcomes for the worker: 429 → RetryAfter until X-RateLimit-Reset; 401 → PermanentFailure (the
token was revoked: a person must fix it); 404 on the customer's account → PermanentFailure with
`unreachable=True`; other 4xx → PermanentFailure; 5xx, network errors, answers that are not
JSON → a plain exception, retried with back-off.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bot.notifications import render
from monitors.direct import direct_text
from monitors.mastodon import (
    AccountGone,
    MastodonApi,
    MastodonFailure,
    MastodonSettings,
    direct_message,
    make_client,
    public_reply,
)
from monitors.types import PUBLIC_REPLY
from storage.db import Store
from storage.dispatch import PermanentFailure, RetryAfter, Sender
from storage.outbox import Delivery
from storage.social_replies import record_reply_id


def mastodon_sender(api: MastodonApi, store: Store | None = None) -> Sender:
    """A Sender over one Mastodon client; with `store`, public replies record their id."""

    async def send(delivery: Delivery) -> None:
        try:
            if delivery.kind == PUBLIC_REPLY:
                await _public_reply(api, store, delivery)
            else:
                await _direct(api, delivery)
        except MastodonFailure as exc:
            raise outcome(exc, api.clock()) from exc

    return send


def outcome(exc: MastodonFailure, now: datetime) -> Exception:
    """What the worker should make of a failed call."""
    if isinstance(exc, AccountGone):
        return PermanentFailure(str(exc), unreachable=True)
    if exc.status == 429:
        until = exc.until or now
        return RetryAfter(max((until - now).total_seconds(), 1.0), str(exc))
    if exc.status == 401:
        return PermanentFailure(f"Mastodon refused the token ({exc})")
    if exc.status is not None and 400 <= exc.status < 500:
        return PermanentFailure(str(exc))
    return exc  # 5xx, network, not JSON: try again later


async def _direct(api: MastodonApi, delivery: Delivery) -> None:
    if not delivery.recipient:
        raise PermanentFailure("no Mastodon account to write to", unreachable=True)
    lang = delivery.payload.get("language")
    reply_to = delivery.payload.get("reply_to")
    for part, reply in enumerate(render(delivery)):
        text = direct_text(reply, lang if isinstance(lang, str) else None)
        if not text.strip():
            continue
        await direct_message(
            api, delivery.recipient, text, str(reply_to) if reply_to else None,
            key=f"{delivery.key}/{part}",
        )


async def _public_reply(api: MastodonApi, store: Store | None, delivery: Delivery) -> None:
    payload = delivery.payload
    in_reply_to, text = payload.get("in_reply_to"), str(payload.get("text") or "").strip()
    if not in_reply_to or not text:
        raise PermanentFailure("public reply without a post to answer or a text")
    try:
        status_id = await public_reply(api, str(in_reply_to), text, key=delivery.key)
    except MastodonFailure as exc:
        if exc.status in (404, 410):
            raise PermanentFailure(f"the post {in_reply_to} was deleted") from exc
        raise
    post_id = payload.get("post_id")
    if store is not None and isinstance(post_id, int):
        await record_reply_id(store, post_id, status_id)


def make_mastodon_sender(settings: MastodonSettings, store: Store | None = None) -> Sender:
    """The sender for `CARELOOP_MASTODON_BASE_URL` / `CARELOOP_MASTODON_TOKEN`: its own client,
    so the worker's rate-limit window is not the poller's."""
    if not settings.mastodon_base_url or settings.mastodon_token is None:
        raise ValueError("Mastodon needs CARELOOP_MASTODON_BASE_URL and CARELOOP_MASTODON_TOKEN")
    client = make_client(settings.mastodon_base_url, settings.mastodon_token.get_secret_value())
    return mastodon_sender(MastodonApi(client, clock=lambda: datetime.now(UTC)), store)
