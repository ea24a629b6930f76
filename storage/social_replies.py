"""A public reply a person sent from the review queue, once the platform has published it."""

from __future__ import annotations

from sqlalchemy import update

from storage.db import Store
from storage.models import SocialPost


async def record_reply_id(store: Store, post_id: int, external_id: str) -> None:
    """Keeps the platform's id of our reply on the mention (the desk links to it)."""
    async with store.transaction() as session:
        await session.execute(
            update(SocialPost)
            .where(SocialPost.id == post_id)
            .values(reply_external_id=external_id, version=SocialPost.version + 1)
        )
