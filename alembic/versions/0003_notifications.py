"""Notifications delivery and exports (issue 8).

Delivery claims an outbox row for a while (a lease, in `next_attempt_at`) under a claim
token, so a worker that crashed mid-send leaves the row to be claimed again and a late
worker cannot mark a row that someone else has since claimed. A deadline records when
its "due soon" warning went out, so the warning is claimed once, like the breach. An
agency names the user who receives what the agency owns (a MARAC action, a listing).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(64), nullable=True))
    op.create_index("ix_outbox_inbox", "outbox", ["recipient_user_id", "read_at", "id"])
    with op.batch_alter_table("deadline") as batch:
        batch.add_column(sa.Column("warned_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("agency") as batch:
        batch.add_column(sa.Column("contact_user_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agency") as batch:
        batch.drop_column("contact_user_id")
    with op.batch_alter_table("deadline") as batch:
        batch.drop_column("warned_at")
    op.drop_index("ix_outbox_inbox", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("claimed_by")
