"""Time, working days and deadlines.

Statutory timescales are counted in working days: weekends and England and Wales bank
holidays (substitute days included, from the `holidays` package) do not count. Times are
stored in UTC; days are counted on the UK calendar (Europe/London), because "the next
working day" of a referral received at 23:30 BST is decided by the local date.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays
from dateutil.relativedelta import relativedelta

from referral_engine.policies.policy import Sla

LONDON = ZoneInfo("Europe/London")


class Clock:
    """The system clock. Tests and `tick --now` use a `FixedClock` instead."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock(Clock):
    def __init__(self, at: datetime):
        self.at = at

    def now(self) -> datetime:
        return self.at

    def advance(self, delta: timedelta) -> None:
        self.at += delta


@lru_cache(maxsize=64)
def _bank_holidays(year: int) -> frozenset[date]:
    # England and Wales share their bank holidays, substitute days included.
    return frozenset(holidays.country_holidays("GB", subdiv="ENG", years=year).keys())


def is_bank_holiday(day: date) -> bool:
    return day in _bank_holidays(day.year)


def is_working_day(day: date) -> bool:
    return day.weekday() < 5 and not is_bank_holiday(day)


def next_working_day(day: date) -> date:
    day += timedelta(days=1)
    while not is_working_day(day):
        day += timedelta(days=1)
    return day


def add_working_days(start: datetime, days: int, tz: ZoneInfo = LONDON) -> datetime:
    """`days` working days after `start`, keeping its local clock time.

    Started on a weekend or bank holiday, the count begins at 00:00 of the next working
    day, so one working day after a Saturday referral is the end of Monday.
    """
    local = start.astimezone(tz)
    day, at = local.date(), local.time()
    if not is_working_day(day):
        day = next_working_day(day)
        at = time(0, 0)
    for _ in range(days):
        day = next_working_day(day)
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


def working_days_between(start: date, end: date) -> int:
    """Working days after `start` up to and including `end` (0 if end <= start)."""
    count, day = 0, start
    while day < end:
        day += timedelta(days=1)
        if is_working_day(day):
            count += 1
    return count


def due_at(sla: Sla, start: datetime, tz_name: str = "Europe/London") -> datetime:
    if sla.working_days is not None:
        return add_working_days(start, sla.working_days, ZoneInfo(tz_name))
    if sla.calendar_days is not None:
        return start + timedelta(days=sla.calendar_days)
    if sla.months is not None:
        return start + relativedelta(months=sla.months)
    return start + timedelta(hours=sla.hours or 0)


def local_midnight(day: date, tz: ZoneInfo = LONDON) -> datetime:
    """The start of `day` on the UK calendar, in UTC."""
    return datetime.combine(day, time(0, 0), tzinfo=tz).astimezone(UTC)


def age_on(date_of_birth: date, on: date) -> int:
    years = on.year - date_of_birth.year
    if (on.month, on.day) < (date_of_birth.month, date_of_birth.day):
        years -= 1
    return years
