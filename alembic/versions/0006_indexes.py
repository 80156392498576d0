"""Indexes that keep the queue and the person match fast at a million cases (issue 7).

The queue orders by priority, then cases with a due time before those without, then the
due time: `(due_at IS NULL)` is in the indexes so the database reads the first page in
order instead of sorting every open case. The MASH queue filters by pathway as well, so
it has an index of its own. The person match by name (no date of birth) looks up family
and given name together.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NO_DUE = sa.text("(due_at IS NULL)")


def upgrade() -> None:
    op.drop_index("ix_cases_open_queue", table_name="cases")
    op.drop_index("ix_cases_queue", table_name="cases")
    op.create_index("ix_cases_open_queue", "cases", ["closed", "priority", NO_DUE, "due_at", "id"])
    op.create_index(
        "ix_cases_queue", "cases", ["pathway", "state", "priority", NO_DUE, "due_at", "id"]
    )
    op.create_index(
        "ix_cases_pathway_queue",
        "cases",
        ["pathway", "closed", "priority", NO_DUE, "due_at", "id"],
    )
    op.drop_index("ix_person_family_key", table_name="person")
    op.create_index("ix_person_name", "person", ["family_key", "given_key"])


def downgrade() -> None:
    op.drop_index("ix_person_name", table_name="person")
    op.create_index("ix_person_family_key", "person", ["family_key"])
    op.drop_index("ix_cases_pathway_queue", table_name="cases")
    op.drop_index("ix_cases_queue", table_name="cases")
    op.drop_index("ix_cases_open_queue", table_name="cases")
    op.create_index("ix_cases_queue", "cases", ["pathway", "state", "priority", "due_at", "id"])
    op.create_index("ix_cases_open_queue", "cases", ["closed", "priority", "due_at", "id"])
