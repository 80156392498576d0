"""Whether the database still refuses changes to the audit tables.

The append-only rule lives in the database (triggers made by the migrations), so a
database administrator can drop or disable it, rewrite rows, and put it back. The chain
and the kept heads catch what was changed; this check says, every time `audit verify`
runs, that the guard itself is missing, which no hash can show.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from referral_engine.storage.models import AUDIT_TABLES

# The trigger names the migrations create, by dialect (0001 and 0008).
SQLITE_GUARDS = tuple(
    f"{table}_no_{verb}" for table in AUDIT_TABLES for verb in ("update", "delete", "replace")
)
POSTGRES_GUARDS = tuple(
    f"{table}_{kind}" for table in AUDIT_TABLES for kind in ("append_only", "no_truncate")
)


def missing_guards(conn: Connection) -> list[str]:
    """The append-only triggers that are absent, disabled or no longer refuse anything."""
    if conn.dialect.name == "postgresql":
        rows = conn.execute(
            sa.text(
                "SELECT t.tgname, t.tgenabled, p.prosrc FROM pg_trigger t "
                "JOIN pg_proc p ON p.oid = t.tgfoid WHERE NOT t.tgisinternal"
            )
        ).all()
        working = {
            name for name, enabled, source in rows
            if enabled != "D" and "RAISE EXCEPTION" in (source or "").upper()
        }  # fmt: skip
        return [name for name in POSTGRES_GUARDS if name not in working]
    rows = conn.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")).all()
    working = {name for name, sql in rows if "RAISE(ABORT" in (sql or "").upper().replace(" ", "")}
    return [name for name in SQLITE_GUARDS if name not in working]
