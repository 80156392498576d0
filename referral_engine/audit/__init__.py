"""The audit log: append-only rows, the hash chain over them, checkpoints, verification."""

from referral_engine.audit.log import (
    AuditLog,
    AuditQuery,
    Verification,
    canonical,
    row_by_id,
    rows_for,
    search,
    verify,
)

__all__ = [
    "AuditLog",
    "AuditQuery",
    "Verification",
    "canonical",
    "row_by_id",
    "rows_for",
    "search",
    "verify",
]
