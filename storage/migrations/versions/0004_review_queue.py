"""review queue index

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

The review queue reads flagged group leaders one (state, priority) range at a time; the old
(state, priority, author_followers, id) index had neither the posting time the queue sorts by
next nor a way to skip group members and direct messages, so it is replaced by a partial one.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REVIEW_ITEMS = "coalesce(group_id, 0) = 0 AND stream <> 'dms'"


def upgrade() -> None:
    op.drop_index('ix_social_posts_queue', table_name='social_posts')
    op.create_index(
        'ix_social_posts_review', 'social_posts',
        ['state', 'priority', 'author_followers', 'posted_at', 'id'], unique=False,
        postgresql_where=sa.text(REVIEW_ITEMS), sqlite_where=sa.text(REVIEW_ITEMS),
    )


def downgrade() -> None:
    op.drop_index('ix_social_posts_review', table_name='social_posts')
    op.create_index(
        'ix_social_posts_queue', 'social_posts',
        ['state', 'priority', 'author_followers', 'id'], unique=False,
    )
