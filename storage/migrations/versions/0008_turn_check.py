"""chat: careloop_expect(ok, what), which fails the statement it is in with a serialization
failure (SQLSTATE 40001) when ok is false; the dialogue's one-statement turn write checks the
conversation's version and the ticket's status with it (PostgreSQL only)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # An error, not a count the caller checks afterwards: the turn write runs outside a
    # transaction, so only an error can undo the rest of its statement.
    op.execute("""
        CREATE OR REPLACE FUNCTION careloop_expect(ok boolean, what text) RETURNS boolean
        LANGUAGE plpgsql AS $$
        BEGIN
            IF ok IS NOT TRUE THEN
                RAISE EXCEPTION 'careloop: % changed meanwhile', what
                    USING ERRCODE = 'serialization_failure';
            END IF;
            RETURN true;
        END
        $$
    """)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION IF EXISTS careloop_expect(boolean, text)")
