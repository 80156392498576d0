"""An audit row's summary in words, as an auditor reads it.

The summary is the engine's own record (`event: request_checks`, `from: screening`,
`fields: [lawful_basis, ...]`), kept as codes so it never holds free text. Shown, each
code reads as its pathway names it: "Request agency checks", "Screening", "Lawful basis
for sharing".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from referral_engine.display.values import Display, flatten

LIST_ITEMS = 25  # list values shown before "and N more"

# What the audit summary's own keys are called (the engine writes them; no policy does).
SUMMARY_LABELS = {
    "event": "Event",
    "from": "From",
    "to": "To",
    "state": "State",
    "pathway": "Pathway",
    "fields": "Fields given",
    "opened": "Cases opened",
    "listed": "Cases listed",
    "total": "Total",
    "entries": "Entries",
    "version": "Version",
    "filters": "Filters",
    "limit": "Page size",
    "offset": "Starting at row",
    "overdue": "Overdue only",
    "jti": "Session",
    "reference": "Reference",
    "matched_person": "Matched to a known person",
    "possible_matches": "Possible duplicates",
    "repeat_of": "Repeat of referral",
    "parent_case_id": "Opened from case",
    "reason": "Reason",
    "status": "Answer",
    "capacity": "Places",
    "date": "Date",
    "rows": "Rows",
    "format": "Format",
    "kind": "Kind",
}


def opened_by(workflows: Mapping[str, Any], reason: str) -> str:
    """Why a case was opened, in words: 'mash:decide' reads "MASH front door: Record the
    MASH decision" (a case opened onward by another pathway's event)."""
    pathway, _, event = reason.partition(":")
    wf = workflows.get(pathway)
    if wf is None or event not in wf.definition.events:
        return {"referral": "A referral"}.get(reason, reason)
    return f"{wf.definition.label}: {wf.definition.events[event].label}"


def summary_rows(
    display: Display,
    summary: Mapping[str, Any] | None,
    workflows: Mapping[str, Any],
    pathway: str | None = None,
) -> list[tuple[str, str]]:
    """(label, value) pairs of an audit row's summary; `workflows` are the current
    definitions by pathway (for event, state and field labels)."""
    summary = summary or {}
    pathway = summary.get("pathway") or pathway
    wf = workflows.get(pathway) if isinstance(pathway, str) else None
    d = wf.definition if wf is not None else None
    event = summary.get("event")
    out = []
    for key, value in summary.items():
        label = SUMMARY_LABELS.get(key) or display.label(key)
        if value is None or value == "" or value == []:
            text = "\u2013"
        elif key == "pathway" and isinstance(value, str) and value in workflows:
            text = workflows[value].definition.label
        elif key == "event" and d is not None and value in d.events:
            text = d.events[value].label
        elif key in ("from", "to", "state") and d is not None and value in d.states:
            text = d.states[value].label
        elif key == "fields" and isinstance(value, list):
            data = d.events[event].data if d is not None and event in d.events else {}
            text = ", ".join(
                (data[f].label if f in data and data[f].label else display.label(f)) for f in value
            )
        elif isinstance(value, Mapping):
            text = "; ".join(
                f"{k}: {v}" for k, v in summary_rows(display, value, workflows, pathway)
            )
        elif key == "reason" and isinstance(value, str):
            text = opened_by(workflows, value)
        elif key == "jti":
            text = "recorded"
        elif isinstance(value, list) and len(value) > LIST_ITEMS:
            shown = ", ".join(flatten(display.value(v)) for v in value[:LIST_ITEMS])
            text = f"{shown} and {len(value) - LIST_ITEMS} more"
        else:
            text = flatten(display.value(value, key))
        out.append((label, text))
    return out
