"""How values read: one formatter for every value shown on a page, in history, in exports
and in audit views (codes by their policy labels, Yes / No, UK dates and times, lists,
users by name, meetings by date, nested records as small tables)."""

from referral_engine.display.audit_words import opened_by, summary_rows
from referral_engine.display.dates import clock_time, day_text, looks_like_date, when_text
from referral_engine.display.lookups import Names
from referral_engine.display.people_names import greeting_name, header_name
from referral_engine.display.stored_fields import PathwayFields, pathway_fields
from referral_engine.display.values import (
    NOT_RECORDED,
    Display,
    Field,
    Fields,
    Record,
    Shown,
    flatten,
    tidy,
)

__all__ = [
    "NOT_RECORDED",
    "Display",
    "Field",
    "Fields",
    "Names",
    "PathwayFields",
    "Record",
    "Shown",
    "clock_time",
    "day_text",
    "flatten",
    "greeting_name",
    "header_name",
    "looks_like_date",
    "opened_by",
    "pathway_fields",
    "summary_rows",
    "tidy",
    "when_text",
]
