"""One way to show any stored value to a person: pages, history, exports and audit views.

A case's data is stored as the program needs it (codes, ISO times, true/false, lists,
nested records, usernames, meeting ids); a practitioner reads "Crime and Disorder Act
1998 s115", "2 December 2026, 4:13pm", "Yes", a list, a small table, "Morgan Blake
(IDVA)", "MARAC meeting on 3 December 2026". `Display` turns the one into the other, so
no page, export or audit view words a value its own way.

What a field is comes from where it was declared: a workflow event's `data:` (its label,
its type, the vocabulary of its choices) or, for names every pathway shares (`at`,
`lawful_basis`), `field_labels` in policies/reference.yaml. A value whose field is
unknown is still read: a code with a policy label by its label, an ISO time as a time.

The result is plain data, so the core never renders HTML: a string, a tuple (a list, to
show as a list) or a `Record` (a nested record, to show as a small table). `text()`
flattens any of them to one line, for a CSV cell or a summary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from referral_engine.display.dates import day_text, looks_like_date, parse, when_text

NOT_RECORDED = "Not recorded"


@dataclass(frozen=True)
class Record:
    """A nested record shown as a small table: (label, value) rows in their order."""

    rows: tuple[tuple[str, Shown], ...]


Shown = Union[str, tuple["Shown", ...], Record]  # noqa: UP007 - a recursive alias


@dataclass(frozen=True)
class Field:
    """What a stored field is: its label, its type and the labels of its codes."""

    label: str
    type: str = ""  # "" when not declared: read as any stored value is
    codes: Mapping[str, str] | None = None
    # A list's items, or a nested record's fields.
    items: Mapping[str, Field] = field(default_factory=dict)


Fields = Mapping[str, Field]


def tidy(name: str) -> str:
    """A name with no declared label, made readable ('rag_rationale': 'Rag rationale').
    A last resort: declare the label instead (the crawl test finds names that need one)."""
    return name.replace("_", " ").strip().capitalize()


class Display:
    """Shows values as people write them (see the module's docstring).

    `codes` are every policy label by code; `field_labels` the shared names' labels;
    `users` and `meetings` look up a username's name and a meeting's date (each returns
    None when it does not know, and the value is then shown as stored); `dash` words a
    DASH assessment ("13 of 24, high risk at 14").
    """

    def __init__(
        self,
        codes: Mapping[str, str],
        field_labels: Mapping[str, str] | None = None,
        *,
        users: Callable[[str], str | None] | None = None,
        meetings: Callable[[int], str | None] | None = None,
        dash_questions: Mapping[str, int] | None = None,
    ):
        self.codes = codes
        self.field_labels = field_labels or {}
        self.users = users or (lambda _u: None)
        self.meetings = meetings or (lambda _m: None)
        self.dash_questions = dash_questions or {}

    def with_lookups(
        self,
        *,
        users: Callable[[str], str | None] | None = None,
        meetings: Callable[[int], str | None] | None = None,
    ) -> Display:
        """The same display, with lookups for this request (names and meetings)."""
        return Display(
            self.codes, self.field_labels, users=users or self.users,
            meetings=meetings or self.meetings, dash_questions=self.dash_questions,
        )  # fmt: skip

    # --- names ---------------------------------------------------------------------------

    def label(self, name: str, fields: Fields | None = None) -> str:
        """A field's name as people call it: its declared label, else the shared one."""
        known = (fields or {}).get(name)
        if known is not None and known.label:
            return known.label
        return self.field_labels.get(name) or tidy(name)

    # --- values --------------------------------------------------------------------------

    def value(self, value: Any, name: str | None = None, fields: Fields | None = None) -> Shown:
        """`value`, stored under the field `name` (declared in `fields`, if known)."""
        spec = (fields or {}).get(name) if name else None
        if value is None or value == "" or value == [] or value == {}:
            return NOT_RECORDED
        if isinstance(value, bool):
            return "Yes" if value else "No"
        if name == "dash" and isinstance(value, Mapping) and "score" in value:
            return self.dash(value)
        kind = spec.type if spec else None
        if kind == "user" or (not kind and name in ("user", "assigned_to")):
            return self.users(str(value)) or str(value)
        if kind == "meeting" or (not kind and name == "meeting_id"):
            try:
                found = self.meetings(int(value))
            except (TypeError, ValueError):
                found = None
            return found or f"Meeting {value}"
        if isinstance(value, Mapping):
            inner = spec.items if spec else {}
            return self.record(value, inner)
        if isinstance(value, list | tuple):
            inner_spec = spec if spec and spec.type in ("choices", "choice") else None
            items = spec.items if spec else {}
            return tuple(
                self.record(v, items) if isinstance(v, Mapping)
                else self.value(v, None, None) if isinstance(v, list | tuple)
                else self._scalar(v, inner_spec, name)
                for v in value
            )  # fmt: skip
        return self._scalar(value, spec, name)

    def _scalar(self, value: Any, spec: Field | None, name: str | None) -> str:
        if value is None or value == "":
            return NOT_RECORDED
        if isinstance(value, bool):
            return "Yes" if value else "No"
        if isinstance(value, int | float):
            return str(value)
        text = str(value)
        kind = spec.type if spec else None
        if kind == "date" or (kind != "text" and looks_like_date(text) and len(text) == 10):
            try:
                return day_text(text)
            except ValueError:
                return text
        if kind == "datetime" or (kind != "text" and looks_like_date(text)):
            try:
                return when_text(parse(text))
            except ValueError:
                return text
        if spec is not None and spec.codes is not None:
            return spec.codes.get(text) or self.codes.get(text) or text
        if kind == "text":
            return text  # as typed, never re-worded
        return self.codes.get(text, text)

    def record(self, data: Mapping[str, Any], fields: Fields | None = None) -> Record:
        """A nested record as a small table, each field by its label; empty fields and
        the bookkeeping of who changed it (shown elsewhere) are left out."""
        rows = tuple(
            (self.label(k, fields), self.value(v, k, fields))
            for k, v in data.items()
            if v not in (None, "", [], {})
        )
        return Record(rows)

    def dash(self, assessment: Mapping[str, Any]) -> str:
        """'13 of 24, high risk at 14': the score, out of the version's question count."""
        version = str(assessment.get("version") or "")
        out_of = self.dash_questions.get(version)
        score = assessment.get("score")
        threshold = assessment.get("threshold")
        text = f"{score} of {out_of}" if out_of else f"{score}"
        if threshold is not None:
            text += f", high risk at {threshold}"
        return text

    # --- one line ------------------------------------------------------------------------

    def text(self, value: Any, name: str | None = None, fields: Fields | None = None) -> str:
        """The value on one line: a list joined with commas, a record as 'Label: value'
        pairs separated by semicolons (a CSV cell, an audit summary)."""
        return flatten(self.value(value, name, fields))

    def when(self, value: Any, *, seconds: bool = False) -> str:
        return when_text(value, seconds=seconds)

    def day(self, value: Any) -> str:
        return day_text(value)


def flatten(shown: Shown) -> str:
    if isinstance(shown, Record):
        return "; ".join(f"{k}: {flatten(v)}" for k, v in shown.rows)
    if isinstance(shown, tuple):
        return ", ".join(flatten(v) for v in shown)
    return shown
