"""Rules that hold (issue 18): a referral the system makes has no user as its referrer.

The MASH referral of a child in a MARAC household is made by the system on behalf of the
MARAC, not by the person who referred the adult: `referral.referrer_id` may be empty, so
that referral is not listed under anyone's "My referrals" as if they had sent it.

Revision ID: 0012
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("referral") as batch_op:
        batch_op.alter_column("referrer_id", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("referral") as batch_op:
        batch_op.alter_column("referrer_id", existing_type=sa.Integer(), nullable=False)
