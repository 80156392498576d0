"""Specialist pathways: meetings, person merges, paused deadlines, anonymous referrals.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "meeting",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pathway", sa.String(60), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_meeting_pathway_date", "meeting", ["pathway", "date"])
    op.create_table(
        "meeting_case",
        sa.Column("meeting_id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("listed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["meeting_id"], ["meeting.id"]),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"]),
        sa.PrimaryKeyConstraint("meeting_id", "case_id"),
    )
    op.create_index("ix_meeting_case_case_id", "meeting_case", ["case_id"])
    op.create_table(
        "person_merge",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("from_person_id", sa.Integer(), nullable=False),
        sa.Column("into_person_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("moved_cases", JSON, nullable=False),
        sa.Column("moved_referrals", JSON, nullable=False),
        sa.Column("merged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("merged_by_id", sa.Integer(), nullable=True),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("undone_by_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_person_merge_from_person_id", "person_merge", ["from_person_id"])
    op.create_index("ix_person_merge_into_person_id", "person_merge", ["into_person_id"])
    with op.batch_alter_table("person") as batch:
        batch.add_column(sa.Column("merged_into_id", sa.Integer(), nullable=True))
        batch.create_index("ix_person_merged_into_id", ["merged_into_id"])
    with op.batch_alter_table("deadline") as batch:
        batch.add_column(sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("referral") as batch:
        batch.alter_column("person_id", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("referral") as batch:
        batch.alter_column("person_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("deadline") as batch:
        batch.drop_column("paused_at")
    with op.batch_alter_table("person") as batch:
        batch.drop_index("ix_person_merged_into_id")
        batch.drop_column("merged_into_id")
    op.drop_table("person_merge")
    op.drop_table("meeting_case")
    op.drop_table("meeting")
