"""Access controls: break-glass grants and session revocation per user (issue 6).

`access_grant` records each time someone opened a restricted record with a reason (time
boxed, and queued for a supervisor's review); `app_user.session_generation` is carried in
every token, so raising it (a password reset, disabling the account) ends every session
that user has at once.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("app_user") as batch:
        batch.add_column(
            sa.Column("session_generation", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_table(
        "access_grant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("pathway", sa.String(60), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reviewed_by_id", sa.Integer(), nullable=True),
        sa.Column("review_note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"]),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_access_grant_user_expires", "access_grant", ["user_id", "expires_at"])
    op.create_index("ix_access_grant_review", "access_grant", ["reviewed_at", "granted_at"])


def downgrade() -> None:
    op.drop_index("ix_access_grant_review", table_name="access_grant")
    op.drop_index("ix_access_grant_user_expires", table_name="access_grant")
    op.drop_table("access_grant")
    with op.batch_alter_table("app_user") as batch:
        batch.drop_column("session_generation")
