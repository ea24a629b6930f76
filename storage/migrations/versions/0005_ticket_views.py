"""ticket views: the assignee index carries the urgency order; merged tickets are found fast

Revision ID: 0005
Revises: 0004
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # (assignee_id, status) is a prefix of the new index, so nothing that used it gets slower.
    op.create_index('ix_tickets_assignee_urgency', 'tickets',
                    ['assignee_id', 'status', 'priority', 'resolution_due', 'id'], unique=False)
    op.drop_index('ix_tickets_assignee_status', table_name='tickets')
    op.create_index('ix_tickets_merged_into', 'tickets', ['merged_into_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_tickets_merged_into', table_name='tickets')
    op.create_index('ix_tickets_assignee_status', 'tickets', ['assignee_id', 'status'], unique=False)
    op.drop_index('ix_tickets_assignee_urgency', table_name='tickets')
