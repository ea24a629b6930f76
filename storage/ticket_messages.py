"""What the ticket page shows of the chat a ticket came from (read-only).

The dialogue stores what a customer writes during the intake with their conversation only:
`messages.ticket_id` stays NULL because no ticket exists yet when they write, and the ticket
service links only what is said about the ticket afterwards. So a ticket opened from a chat
would show an empty conversation although the customer explained everything; the page reads
those messages here, by the ticket's channel identity and its creation time.

Also here: the channel identity itself, for a customer who never gave a name (a web chat
visitor, a Telegram user, an X or Mastodon account known by its @username).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import (
    Attachment,
    ChannelIdentity,
    Conversation,
    Message,
    SocialPost,
    Ticket,
)

# An intake is a few minutes of chat; an older message of the same conversation is another
# story (or a question answered by the bot), not the explanation behind this ticket.
INTAKE_LOOKBACK = timedelta(days=1)
MAX_INTAKE_MESSAGES = 50


@dataclass(frozen=True, slots=True)
class IdentityView:
    """Who the customer is on the ticket's channel. `username` is the author's @username of
    the post a mention ticket was opened from (X and Mastodon number accounts by id)."""

    channel: str
    external_id: str
    display_name: str | None
    username: str | None


async def channel_identity(
    session: AsyncSession, identity_id: int | None, *, source_post_id: int | None = None
) -> IdentityView | None:
    """The ticket's channel identity (None for staff-entered tickets), with the @username of
    the post it was opened from, in one statement."""
    if identity_id is None:
        return None
    username: Any = literal(None, String)
    if source_post_id is not None:
        username = (
            select(SocialPost.author_username)
            .where(SocialPost.id == source_post_id)
            .scalar_subquery()
        )
    row = (
        await session.execute(
            select(
                ChannelIdentity.channel,
                ChannelIdentity.external_id,
                ChannelIdentity.display_name,
                username.label("username"),
            ).where(ChannelIdentity.id == identity_id)
        )
    ).first()
    if row is None:
        return None
    return IdentityView(row.channel, row.external_id, row.display_name, row.username)


async def intake_messages(
    session: AsyncSession,
    *,
    ticket_id: int,
    identity_id: int | None,
    customer_id: int,
    created_at: datetime,
    limit: int = MAX_INTAKE_MESSAGES,
) -> list[Message]:
    """The messages of the ticket's conversation that belong to no ticket and were written
    while it was being opened: after the same identity's previous ticket (its intake is
    that ticket's), within INTAKE_LOOKBACK, up to the ticket's creation. Oldest first; the
    last `limit` of them."""
    if identity_id is None:
        return []
    previous = (
        select(func.max(Ticket.created_at))
        .where(
            Ticket.customer_id == customer_id,  # indexed; the identity narrows it further
            Ticket.identity_id == identity_id,
            Ticket.id < ticket_id,
        )
        .scalar_subquery()
    )
    floor = created_at - INTAKE_LOOKBACK
    # The identity's one conversation first, so its messages are read by
    # ix_messages_conversation. "No ticket" is written with coalesce so that no planner
    # (SQLite has no statistics to tell) walks ix_messages_ticket instead: NULL there is every
    # chat line of every customer.
    conversation = (
        select(Conversation.id).where(Conversation.identity_id == identity_id).scalar_subquery()
    )
    rows = await session.scalars(
        select(Message)
        .where(
            Message.conversation_id == conversation,
            func.coalesce(Message.ticket_id, 0) == 0,
            Message.created_at <= created_at,
            Message.created_at > func.coalesce(previous, floor),
            Message.created_at > floor,
        )
        .order_by(Message.id.desc())
        .limit(limit)
    )
    return list(reversed(rows.all()))


async def ticket_file(
    session: AsyncSession, ticket_id: int, attachment_id: int
) -> Attachment | None:
    """An attachment with its content, if it belongs to the ticket or to a ticket merged into
    it (the ticket page lists both); None otherwise, whoever's ticket it is."""
    merged = select(Ticket.id).where(Ticket.merged_into_id == ticket_id)
    return (
        await session.scalars(
            select(Attachment).where(
                Attachment.id == attachment_id,
                or_(Attachment.ticket_id == ticket_id, Attachment.ticket_id.in_(merged)),
            )
        )
    ).first()
