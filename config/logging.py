"""Log set-up. Third-party loggers that print URLs carrying tokens (httpx prints the Bot API
URL, which contains the bot token) are held at WARNING so secrets stay out of logs."""

from __future__ import annotations

import logging

NOISY = ("httpx", "httpcore", "aiohttp.access", "telegram.ext", "tweepy", "asyncio")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in NOISY:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
