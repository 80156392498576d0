"""The case store: the one writer of case and person rows (DESIGN.md "One writer").

Pathway events write through `Engine.fire`; every other change of a case (a merge, its
undo) is a recorded change written here, with a version, history and audit row.
"""

from referral_engine.store.changes import CHANGES, CaseStore

__all__ = ["CHANGES", "CaseStore"]
