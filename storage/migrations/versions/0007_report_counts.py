"""reports: mentions counted by index-only ranges of (platform, state, posted_at); the
(posted_at, platform, state) index of 0006 it replaces is no longer read

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('social_posts', schema=None) as batch_op:
        batch_op.create_index('ix_social_posts_report_counts', ['platform', 'state', 'posted_at'],
                              unique=False)
        batch_op.drop_index('ix_social_posts_report')


def downgrade() -> None:
    with op.batch_alter_table('social_posts', schema=None) as batch_op:
        batch_op.create_index('ix_social_posts_report', ['posted_at', 'platform', 'state'],
                              unique=False)
        batch_op.drop_index('ix_social_posts_report_counts')
