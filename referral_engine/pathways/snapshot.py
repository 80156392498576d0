"""What the pure decision about a transition may look at, and the conditions over it.

The engine reads a case into a `Snapshot`, then guards, routes and effects decide from it
alone, with no database, so the rules are testable on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from referral_engine.access.rules import Actor
from referral_engine.policies.policy import Policy


@dataclass(frozen=True)
class DeadlineView:
    name: str
    label: str
    due_at: datetime
    status: str
    on_due: str = "escalate"
    paused_at: datetime | None = None


@dataclass(frozen=True)
class Snapshot:
    case_id: int
    pathway: str
    state: str
    version: int
    workflow_version: str
    attributes: dict[str, Any]
    rag: str | None
    opened_at: datetime
    received_at: datetime | None
    subject: dict[str, Any]
    is_child: bool
    person_id: int | None
    referral_id: int | None
    referrer_id: int | None
    agency_id: int | None
    allocated_to_id: int | None
    assigned_to_id: int | None
    deadlines: dict[str, DeadlineView] = field(default_factory=dict)
    # The referral's extra details (the DASH answers, contacts) and the referrer's agency.
    details: dict[str, Any] = field(default_factory=dict)
    agency_kind: str | None = None
    # When this person's other cases were last opened, by pathway (e.g. the last MARAC).
    last_opened: dict[str, datetime] = field(default_factory=dict)


@dataclass
class Context:
    snapshot: Snapshot
    event: str
    data: dict[str, Any]
    actor: Actor
    now: datetime
    policy: Policy
    known_pathways: frozenset[str]
    # `user` and `meeting` fields of the data, resolved to ids by the engine.
    users: dict[str, int] = field(default_factory=dict)
    meetings: dict[str, tuple[int, date]] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def lookup(self, key: str) -> Any:
        """A value a condition can test: `case.<attribute>`, `subject.<field>`, or data."""
        if key == "subject.is_child":
            return self.snapshot.is_child
        if key == "state":  # the state the case is in before this event
            return self.snapshot.state
        if key.startswith("subject."):
            return self.snapshot.subject.get(key.removeprefix("subject."))
        if key.startswith("case."):
            return self.snapshot.attributes.get(key.removeprefix("case."))
        return self.data.get(key)


def holds(ctx: Context, when: dict[str, Any] | None) -> bool:
    """Every `key: value` (or `key: [values]`) in `when` matches."""
    for key, want in (when or {}).items():
        have = ctx.lookup(key)
        wants = want if isinstance(want, list) else [want]
        if isinstance(have, list):
            if not any(h in wants for h in have):
                return False
        elif have not in wants:
            return False
    return True
