"""The audit chain that an outsider can check (issue 17).

- `audit_chain.mac`: the sequencer's MAC under the audit key on the last link of each
  batch (`referral_engine.audit.chainproof.link_mac`), so links appended or re-linked by
  someone with only database access fail verification.
- On SQLite, `REPLACE INTO` and `INSERT OR REPLACE` delete the conflicting row without
  firing the DELETE triggers (unless the connection turned on recursive triggers, which
  an attacker would not). A BEFORE INSERT trigger on each audit table refuses an insert
  whose key already exists, before the conflict resolution can delete anything. On
  PostgreSQL `INSERT ... ON CONFLICT DO UPDATE` already fires the UPDATE trigger.

Revision ID: 0008
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None

# Table -> the keys an insert must not collide with.
UNIQUE_KEYS = {
    "audit_event": ("id",),
    "audit_chain": ("seq", "audit_id"),
    "audit_checkpoint": ("seq",),
}


def upgrade() -> None:
    op.add_column("audit_chain", sa.Column("mac", sa.LargeBinary(), nullable=True))
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, keys in UNIQUE_KEYS.items():
        exists = "EXISTS (SELECT 1 FROM {t} WHERE {k} = NEW.{k})"  # our own table names
        taken = " OR ".join(exists.format(t=table, k=k) for k in keys)
        op.execute(
            f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} WHEN {taken} "
            f"BEGIN SELECT RAISE(ABORT, 'audit table {table} is append-only: "
            f"REPLACE refused'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in UNIQUE_KEYS:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_replace")
    op.drop_column("audit_chain", "mac")
