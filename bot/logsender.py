"""The `log` channel sender: writes what would have been sent to the log. It stands in for a
channel whose adapter is not configured, so the outbox never silently piles up."""

from __future__ import annotations

import logging

from storage.outbox import Delivery

log = logging.getLogger("careloop.outbox.log")


async def log_sender(delivery: Delivery) -> None:
    # The kind and ticket number only: message text and customer ids are personal data.
    log.info(
        "deliver %s for %s via %s (no %s adapter configured)",
        delivery.kind, delivery.payload.get("number"), delivery.channel, delivery.channel,
    )
