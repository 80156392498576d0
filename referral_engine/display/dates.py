"""Dates and times as people in the UK write them, on the UK clock (Europe/London).

Times are stored in UTC and as ISO text; a practitioner reads "2 December 2026, 4:13pm"
and a date of birth "14 May 1996", never "2026-12-02T04:13:59+00:00".
"""

from __future__ import annotations

import re
from datetime import date, datetime

from referral_engine.clock import LONDON

ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ISO_DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$"
)


def clock_time(at: datetime) -> str:
    """'4:13pm', '9am', '12pm' (noon): the UK's way, not '16:13'."""
    hour = at.hour % 12 or 12
    suffix = "am" if at.hour < 12 else "pm"
    return f"{hour}{suffix}" if at.minute == 0 else f"{hour}:{at.minute:02d}{suffix}"


def day_text(value: date | datetime | str | None) -> str:
    """'14 May 1996'. A time is taken on the UK clock first (23:30 UTC in summer is the
    next day in London)."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = parse(value)
    if isinstance(value, datetime):
        value = _local(value).date()
    return f"{value.day} {value:%B %Y}"


def when_text(value: datetime | str | None, *, seconds: bool = False) -> str:
    """'2 December 2026, 4:13pm' on the UK clock ('4:13:59pm' with seconds, for audit)."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = parse(value)
    if not isinstance(value, datetime):
        return day_text(value)
    at = _local(value)
    time_text = clock_time(at)
    if seconds:
        hour = at.hour % 12 or 12
        time_text = f"{hour}:{at.minute:02d}:{at.second:02d}{'am' if at.hour < 12 else 'pm'}"
    return f"{day_text(at)}, {time_text}"


def parse(text: str) -> date | datetime:
    """An ISO date or date-time as stored; a date-time without a zone is UTC."""
    if ISO_DATE.match(text):
        return date.fromisoformat(text)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def looks_like_date(text: str) -> bool:
    return bool(ISO_DATE.match(text) or ISO_DATETIME.match(text))


def _local(value: datetime) -> datetime:
    if value.tzinfo is None:
        from datetime import UTC

        value = value.replace(tzinfo=UTC)
    return value.astimezone(LONDON)
