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


# --- pausing a clock -------------------------------------------------------------------
#
# A working-day clock only runs on working days, so the time it has left is working time:
# every working day counts its 24 local hours, weekends and bank holidays count nothing.
# Counting on the local wall clock (not UTC) keeps "10:00 on the day" at 10:00 across a
# BST change, as `add_working_days` does.

_DAY = timedelta(days=1)


def working_time_between(start: datetime, end: datetime, tz: ZoneInfo = LONDON) -> timedelta:
    """The working time from `start` to `end` (zero if `end` is not after `start`)."""
    a, b = _wall(start, tz), _wall(end, tz)
    total, day = timedelta(0), a.date()
    while day <= b.date():
        if is_working_day(day):
            lo = max(a, datetime.combine(day, time(0, 0)))
            hi = min(b, datetime.combine(day, time(0, 0)) + _DAY)
            if hi > lo:
                total += hi - lo
        day += _DAY
    return total


def add_working_time(start: datetime, amount: timedelta, tz: ZoneInfo = LONDON) -> datetime:
    """The moment `amount` of working time after `start`.

    It always falls on a working day: time used up exactly at the end of a Friday is due at
    00:00 of the next working day (the same instant of working time, as `add_working_days`
    counts a Saturday referral from Monday 00:00).
    """
    at = _wall(start, tz)
    if not is_working_day(at.date()):
        at = datetime.combine(next_working_day(at.date()), time(0, 0))
    left = max(amount, timedelta(0))
    while True:
        end_of_day = datetime.combine(at.date(), time(0, 0)) + _DAY
        if left < end_of_day - at:
            return (at + left).replace(tzinfo=tz).astimezone(UTC)
        left -= end_of_day - at
        at = datetime.combine(next_working_day(at.date()), time(0, 0))


def resumed_due(
    sla: Sla | None, due: datetime, paused_at: datetime, now: datetime,
    tz_name: str = "Europe/London",
) -> datetime:  # fmt: skip
    """The due time of a deadline paused at `paused_at` and resumed `now`.

    The paused time does not count, measured in the clock's own units: a working-day clock
    keeps the working time it had left when it stopped (so a pause over Christmas costs
    the Christmas working days only, and the new due time is on a working day); an hours,
    calendar-day or month clock keeps the elapsed time it had left. Without its SLA (a
    policy since edited) the elapsed time is kept. A working-day deadline already past
    when the clock stopped stays where it was.
    """
    if sla is None or sla.working_days is None:
        return due + (now - paused_at)
    if due <= paused_at:  # already missed when it stopped: pausing does not forgive that
        return due
    tz = ZoneInfo(tz_name)
    return add_working_time(now, working_time_between(paused_at, due, tz), tz)


def _wall(at: datetime, tz: ZoneInfo) -> datetime:
    """`at` as a naive local wall-clock time (so every local day is 24 hours long)."""
    return at.astimezone(tz).replace(tzinfo=None)


def local_midnight(day: date, tz: ZoneInfo = LONDON) -> datetime:
    """The start of `day` on the UK calendar, in UTC."""
    return datetime.combine(day, time(0, 0), tzinfo=tz).astimezone(UTC)


def age_on(date_of_birth: date, on: date) -> int:
    years = on.year - date_of_birth.year
    if (on.month, on.day) < (date_of_birth.month, date_of_birth.day):
        years -= 1
    return years
