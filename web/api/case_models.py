"""What the case routes answer, as `/openapi.json` documents it, so generated clients
get typed cases.

These models document the answers; the routes still return the engine's dicts as they
are (validating every case page again would cost the busiest routes a second pass,
bench/README.md). Tests keep the two in step: real answers are checked against these
schemas (tests/test_openapi.py, and schemathesis in tests/test_bad_input.py). Every
model allows extra keys, so a field added to the case page is an addition to the
contract, not a break; a field renamed or retyped fails those tests.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Rag = Literal["red", "amber", "green"]


class Open(BaseModel):
    """Documented fields, and any others the answer carries."""

    model_config = ConfigDict(extra="allow")


class PersonSummary(Open):
    id: int
    given_name: str | None
    family_name: str | None
    date_of_birth: str | None = Field(description="YYYY-MM-DD")
    estimated_age: int | None
    gender: str | None
    merged_into_id: int | None


class ReferralSummary(Open):
    id: int
    reference: str = Field(description="the reference people quote, e.g. RE-2026-XLUBMJ")
    received_at: str = Field(description="ISO 8601 date-time")
    referrer_id: int | None
    agency_kind: str | None
    subject: dict[str, Any] | None
    concerns: list[str] | None
    summary: str | None
    immediate_danger: bool | None
    consent: str | None
    consent_reason: str | None
    details: dict[str, Any] | None
    is_child: bool | None
    repeat_of_referral_id: int | None
    possible_matches: list[int] | None


class CaseDeadline(Open):
    name: str
    label: str | None
    due_at: str | None
    status: str = Field(description="open, met, breached, paused or cancelled")
    overdue: bool
    met_at: str | None
    breached_at: str | None
    late_reason: str | None


class LinkedCase(Open):
    """A parent or onward case. One the caller may not see has `visible: false` and no
    id, pathway or state: only that it exists. If policy lets the caller open it with a
    reason, `open_with_reason` is true and `link` is its number for
    `POST /api/cases/{id}/links/{link}/access`."""

    relation: Literal["parent", "onward"]
    visible: bool
    pathway: str | None = None
    id: int | None = None
    state: str | None = None
    link: int | None = None
    open_with_reason: bool | None = None


class AvailableEvent(Open):
    event: str
    label: str
    data: dict[str, dict[str, Any]] = Field(
        description="each field the event takes: its type, label, whether required, choices"
    )


class CaseView(Open):
    """One case as the caller may see it (`GET /api/cases/{id}`)."""

    id: int
    pathway: str
    pathway_label: str
    state: str
    state_label: str
    version: int = Field(description="send it back as `expected_version` to fire an event")
    workflow_version: str
    rag: Rag | None
    due_at: str | None = Field(description="ISO 8601 date-time of the next deadline")
    overdue: bool
    closed: bool
    opened_at: str
    updated_at: str | None
    closed_at: str | None
    in_state_since: str | None
    days_in_state: int | None
    person_id: int | None
    person: PersonSummary | None
    referral: ReferralSummary | None
    attributes: dict[str, Any]
    assigned_to_id: int | None
    allocated_to_id: int | None
    deadlines: list[CaseDeadline]
    linked_cases: list[LinkedCase]
    history_visible: bool
    break_glass: bool = Field(description="read through a break-glass grant")
    available_events: list[AvailableEvent] = Field(
        description="the events this caller may fire from the case's state"
    )


class QueueItem(Open):
    id: int
    pathway: str
    state: str
    version: int
    rag: Rag | None
    due_at: str | None
    overdue: bool
    due_soon: bool
    seconds_left: int | None
    person_id: int | None
    person: PersonSummary | None
    reference: str | None
    concerns: list[str]
    immediate_danger: bool
    repeat: bool
    opened_at: str
    assigned_to_id: int | None


class CaseList(Open):
    """The cases the caller may see, in queue order (`GET /api/cases`)."""

    items: list[QueueItem]
    total: int
    total_capped: bool = Field(description="true: there are more than `total`")
    limit: int
    offset: int


class EventFired(Open):
    """The answer to `POST /api/cases/{id}/events`."""

    case_id: int
    event: str
    from_state: str
    state: str
    version: int
    opened_cases: list[int] = Field(description="onward cases opened that the caller may see")
    case: CaseView | None = Field(
        description="the case now; null if the caller may no longer see it"
    )


class HistoryEntry(Open):
    version: int
    event: str
    from_state: str | None
    to_state: str
    actor_id: int | None
    actor_name: str | None
    at: str
    data: dict[str, Any] | None


class CaseHistory(Open):
    case_id: int
    history: list[HistoryEntry]
