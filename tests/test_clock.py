"""Working days: weekends, England and Wales bank holidays (substitute days too), the UK
calendar across BST/GMT changes, and referrals received when nobody is at work.

The expected dates are worked out by hand from the calendar and checked against an
independent list of England and Wales bank holidays (gov.uk), not against the `holidays`
package the product uses.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from referral_engine.clock import (
    add_working_days,
    add_working_time,
    due_at,
    is_bank_holiday,
    is_working_day,
    next_working_day,
    resumed_due,
    working_days_between,
    working_time_between,
)
from referral_engine.policies.policy import Sla

LONDON = ZoneInfo("Europe/London")

# England and Wales bank holidays as published on gov.uk (substitute days as observed).
GOV_UK_BANK_HOLIDAYS = {
    date(2026, 1, 1),  # New Year's Day
    date(2026, 4, 3),  # Good Friday
    date(2026, 4, 6),  # Easter Monday
    date(2026, 5, 4),  # Early May bank holiday
    date(2026, 5, 25),  # Spring bank holiday
    date(2026, 8, 31),  # Summer bank holiday
    date(2026, 12, 25),  # Christmas Day (Friday)
    date(2026, 12, 28),  # Boxing Day (substitute day: 26 December is a Saturday)
    date(2027, 1, 1),  # New Year's Day
    date(2027, 3, 26),  # Good Friday
    date(2027, 3, 29),  # Easter Monday
    date(2027, 5, 3),  # Early May bank holiday
    date(2027, 5, 31),  # Spring bank holiday
    date(2027, 8, 30),  # Summer bank holiday
    date(2027, 12, 27),  # Christmas Day (substitute day: 25 December is a Saturday)
    date(2027, 12, 28),  # Boxing Day (substitute day: 26 December is a Sunday)
}
ORACLE_FIRST, ORACLE_LAST = date(2026, 1, 1), date(2027, 12, 31)


def oracle_working(day: date) -> bool:
    assert ORACLE_FIRST <= day <= ORACLE_LAST, f"{day} is outside the oracle's years"
    return day.weekday() < 5 and day not in GOV_UK_BANK_HOLIDAYS


def london(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    """A UK wall-clock time (GMT or BST as the date requires), as an aware datetime."""
    return datetime(y, m, d, hh, mm, tzinfo=LONDON)


def utc(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=UTC)


# --- the calendar ----------------------------------------------------------------------


def test_every_day_of_2026_and_2027_agrees_with_gov_uk():
    day, wrong = ORACLE_FIRST, []
    while day <= ORACLE_LAST:
        if is_working_day(day) != oracle_working(day):
            wrong.append(day)
        day += timedelta(days=1)
    assert wrong == []


@pytest.mark.parametrize(
    "day",
    [date(2026, 12, 28), date(2027, 12, 27), date(2027, 12, 28)],
    ids=["boxing-day-2026-substitute", "christmas-2027-substitute", "boxing-day-2027-sub"],
)
def test_substitute_bank_holidays_are_not_working_days(day):
    assert day.weekday() < 5  # a weekday ...
    assert is_bank_holiday(day)  # ... that is a bank holiday in lieu
    assert not is_working_day(day)


def test_next_working_day_skips_christmas_and_the_substitute_day():
    assert next_working_day(date(2026, 12, 24)) == date(2026, 12, 29)
    assert next_working_day(date(2027, 12, 24)) == date(2027, 12, 29)


def test_working_days_between_counts_after_start_up_to_end():
    # Mon 30 Nov .. Fri 4 Dec 2026: Tue, Wed, Thu, Fri.
    assert working_days_between(date(2026, 11, 30), date(2026, 12, 4)) == 4
    # Thu 24 Dec 2026 .. Thu 31 Dec: 25 and 28 are bank holidays, 26-27 a weekend.
    assert working_days_between(date(2026, 12, 24), date(2026, 12, 31)) == 3
    assert working_days_between(date(2026, 12, 4), date(2026, 12, 4)) == 0
    assert working_days_between(date(2026, 12, 4), date(2026, 12, 1)) == 0


# --- adding working days ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "days", "expected"),
    [
        # Weekdays keep their clock time.
        (utc(2026, 11, 25, 10), 1, utc(2026, 11, 26, 10)),  # Wed -> Thu
        (utc(2026, 11, 27, 14, 30), 1, utc(2026, 11, 30, 14, 30)),  # Fri -> Mon
        (utc(2026, 11, 27, 14, 30), 5, utc(2026, 12, 4, 14, 30)),  # Fri -> next Fri
        (utc(2026, 11, 25, 10), 0, utc(2026, 11, 25, 10)),  # no days: no change
        # Christmas 2026: Fri 25 is Christmas Day, Boxing Day is Saturday 26 and its
        # substitute is Monday 28, so after Thursday 24 the next working day is Tuesday 29.
        (utc(2026, 12, 24, 10), 1, utc(2026, 12, 29, 10)),
        (utc(2026, 12, 24, 10), 2, utc(2026, 12, 30, 10)),
        (utc(2026, 12, 23, 9), 2, utc(2026, 12, 29, 9)),
        # New Year's Day 2027 is a Friday.
        (utc(2026, 12, 31, 16), 1, utc(2027, 1, 4, 16)),
        # Christmas 2027: both days fall on the weekend; substitutes Mon 27 and Tue 28.
        (utc(2027, 12, 24, 10), 1, utc(2027, 12, 29, 10)),
        # Easter 2026 (BST): Good Friday 3 April, Easter Monday 6 April.
        (london(2026, 4, 2, 11), 1, london(2026, 4, 7, 11)),
        (london(2026, 4, 1, 11), 2, london(2026, 4, 7, 11)),
        # Easter 2027: Good Friday 26 March, Easter Monday 29 March (GMT -> BST on 28th).
        (london(2027, 3, 25, 9), 1, london(2027, 3, 30, 9)),
        # Summer bank holiday Monday 31 August 2026.
        (london(2026, 8, 28, 15), 1, london(2026, 9, 1, 15)),
    ],
)
def test_add_working_days(start, days, expected):
    assert add_working_days(start, days) == expected


@pytest.mark.parametrize(
    ("start", "count_from", "one_day_later"),
    [
        # Saturday and Sunday referrals count from 00:00 Monday: one working day later is
        # the end of Monday (00:00 Tuesday).
        (utc(2026, 11, 28, 11), utc(2026, 11, 30), utc(2026, 12, 1)),
        (utc(2026, 11, 29, 23, 59), utc(2026, 11, 30), utc(2026, 12, 1)),
        # Christmas Day, Boxing Day (Saturday) and the substitute Monday 28 December all
        # count from 00:00 Tuesday 29 December.
        (utc(2026, 12, 25, 9), utc(2026, 12, 29), utc(2026, 12, 30)),
        (utc(2026, 12, 26, 15), utc(2026, 12, 29), utc(2026, 12, 30)),
        (utc(2026, 12, 28, 8), utc(2026, 12, 29), utc(2026, 12, 30)),
        # Good Friday and Easter Monday 2026 count from 00:00 Tuesday 7 April (BST).
        (london(2026, 4, 3, 12), london(2026, 4, 7), london(2026, 4, 8)),
        (london(2026, 4, 6, 12), london(2026, 4, 7), london(2026, 4, 8)),
    ],
)
def test_received_when_nobody_works_counts_from_the_next_working_day(
    start, count_from, one_day_later
):
    assert add_working_days(start, 0) == count_from
    assert add_working_days(start, 1) == one_day_later


# --- BST / GMT -------------------------------------------------------------------------


def test_clocks_going_back_keep_the_uk_clock_time():
    # Friday 23 October 2026 16:00 BST (15:00 UTC); clocks go back on Sunday 25th.
    start = utc(2026, 10, 23, 15)
    due = add_working_days(start, 1)
    assert due.astimezone(LONDON) == london(2026, 10, 26, 16)
    assert due == utc(2026, 10, 26, 16)  # 25 hours of UTC later


def test_clocks_going_forward_keep_the_uk_clock_time():
    # Friday 27 March 2026 09:00 GMT; clocks go forward on Sunday 29th.
    due = add_working_days(utc(2026, 3, 27, 9), 1)
    assert due.astimezone(LONDON) == london(2026, 3, 30, 9)
    assert due == utc(2026, 3, 30, 8)


def test_the_uk_date_decides_not_the_utc_date():
    # 23:30 UTC on Friday 5 June 2026 is 00:30 BST on Saturday 6 June: a weekend referral,
    # counted from 00:00 Monday 8 June, so due at 00:00 BST Tuesday (23:00 UTC Monday).
    assert add_working_days(utc(2026, 6, 5, 23, 30), 1) == utc(2026, 6, 8, 23)
    # 23:30 UTC on Sunday 7 June is 00:30 BST on Monday: a working day, clock time kept.
    assert add_working_days(utc(2026, 6, 7, 23, 30), 1) == london(2026, 6, 9, 0, 30)
    # 23:30 UTC Thursday 2 April 2026 is already Good Friday in the UK.
    assert add_working_days(utc(2026, 4, 2, 23, 30), 1) == london(2026, 4, 8)


def test_sla_units():
    start = utc(2026, 11, 27, 22)  # Friday 22:00 GMT
    assert due_at(Sla(label="h", hours=4), start) == utc(2026, 11, 28, 2)  # hours ignore weekends
    assert due_at(Sla(label="c", calendar_days=30), start) == utc(2026, 12, 27, 22)
    assert due_at(Sla(label="w", working_days=1), start) == utc(2026, 11, 30, 22)
    # Fifteen working days from Monday 14 December 2026 (three bank holidays on the way).
    assert due_at(Sla(label="w", working_days=15), utc(2026, 12, 14, 12)) == utc(2027, 1, 7, 12)


# --- properties ------------------------------------------------------------------------

moments = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 9, 30), timezones=st.just(UTC)
)


def oracle_add(start: datetime, days: int) -> datetime:
    local = start.astimezone(LONDON)
    day, at = local.date(), local.time()
    if not oracle_working(day):
        day += timedelta(days=1)
        while not oracle_working(day):
            day += timedelta(days=1)
        at = time(0, 0)
    for _ in range(days):
        day += timedelta(days=1)
        while not oracle_working(day):
            day += timedelta(days=1)
    return datetime.combine(day, at, tzinfo=LONDON).astimezone(UTC)


@settings(max_examples=300, deadline=None)
@given(start=moments, days=st.integers(min_value=0, max_value=45))
def test_adding_working_days_lands_on_a_working_day_and_increases(start, days):
    results = [add_working_days(start, n) for n in range(days + 2)]
    for n, due in enumerate(results):
        assert due.tzinfo is not None
        assert oracle_working(due.astimezone(LONDON).date()), (n, due)
        assert due >= start
    for earlier, later in itertools.pairwise(results):
        assert earlier < later
    assert results[days + 1] > start
    assert results[days] == oracle_add(start, days)


@settings(max_examples=200, deadline=None)
@given(start=moments, days=st.integers(min_value=1, max_value=45))
def test_adding_working_days_counts_exactly_that_many(start, days):
    local = start.astimezone(LONDON)
    due = add_working_days(start, days).astimezone(LONDON)
    first = local.date()
    if oracle_working(first):
        assert due.time() == local.time()
    else:
        assert due.time() == time(0, 0)
        while not oracle_working(first):
            first += timedelta(days=1)
    counted, day = 0, first
    while day < due.date():
        day += timedelta(days=1)
        counted += oracle_working(day)
    assert counted == days


# --- pausing and resuming a clock ------------------------------------------------------

WORKING_DAY_SLA = Sla(label="MASH decision", working_days=1)


def test_a_pause_over_christmas_costs_no_working_time_and_never_lands_on_a_weekend():
    # Received Thursday 24 December 2026 09:00: one working day is Tuesday 29 December
    # 09:00 (Christmas Day, the weekend and the substitute Boxing Day do not count).
    received = london(2026, 12, 24, 9)
    due = add_working_days(received, 1)
    assert due == london(2026, 12, 29, 9)
    # Paused at once; resumed on the first working day after Christmas, 09:00. The clock
    # had a whole working day left, so it is due on Wednesday 30 December at 09:00, not
    # Sunday 3 January (five calendar days later).
    resumed = resumed_due(WORKING_DAY_SLA, due, received, london(2026, 12, 29, 9))
    assert resumed == london(2026, 12, 30, 9)
    assert resumed.astimezone(LONDON).weekday() < 5


def test_paused_time_only_over_a_weekend_changes_nothing():
    due = london(2026, 11, 30, 10)  # Monday
    assert (
        resumed_due(WORKING_DAY_SLA, due, london(2026, 11, 28, 12), london(2026, 11, 29, 18)) == due
    )


def test_a_clock_in_hours_keeps_elapsed_hours():
    red = Sla(label="Red-rated referral decision", hours=4)
    due, paused, now = utc(2026, 12, 24, 13), utc(2026, 12, 24, 10), utc(2026, 12, 29, 9)
    assert resumed_due(red, due, paused, now) == utc(2026, 12, 29, 12)
    assert resumed_due(None, due, paused, now) == utc(2026, 12, 29, 12)


def test_a_working_day_deadline_missed_before_the_pause_stays_missed():
    due = london(2026, 11, 26, 10)
    assert resumed_due(WORKING_DAY_SLA, due, london(2026, 11, 27, 9), london(2026, 12, 1, 9)) == due


def test_working_time_ends_friday_night_is_due_monday_midnight():
    # Four hours left at Friday 20:00: due at 00:00 Monday (the end of Friday's working
    # time), never at Saturday 00:00.
    due = add_working_time(london(2026, 11, 27, 20), timedelta(hours=4))
    assert due == london(2026, 11, 30, 0)
    assert working_time_between(london(2026, 11, 27, 20), due) == timedelta(hours=4)


@settings(max_examples=300, deadline=None)
@given(
    received=moments,
    days=st.integers(min_value=1, max_value=45),
    pause_after=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=60)),
    paused_for=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=40)),
)
def test_resuming_keeps_the_working_time_left_and_lands_on_a_working_day(
    received, days, pause_after, paused_for
):
    sla = Sla(label="x", working_days=days)
    due = add_working_days(received, days)
    paused = received + pause_after
    now = paused + paused_for
    assume(oracle_in_range(now + timedelta(days=120)))
    new = resumed_due(sla, due, paused, now)
    local = new.astimezone(LONDON)
    if due <= paused:  # missed before the pause: it stays missed
        assert new == due
        return
    # On a working day (00:00 of one is the end of the working day before it).
    assert oracle_working(local.date()), local
    # The paused span cost nothing: the working time left is the same after the resume.
    assert working_time_between(now, new) == working_time_between(paused, due)
    assert working_time_between(received, paused) + working_time_between(now, new) == (
        working_time_between(received, due)
    )
    assert new >= due


@settings(max_examples=200, deadline=None)
@given(
    received=moments,
    days=st.integers(min_value=1, max_value=45),
    pause_after=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30)),
    paused_days=st.integers(min_value=0, max_value=30),
)
def test_a_pause_of_whole_days_moves_the_deadline_by_the_working_days_paused(
    received, days, pause_after, paused_days
):
    # Paused and resumed at the same UK clock time, both on working days: the deadline
    # moves by exactly the working days that passed, by the gov.uk calendar.
    due = add_working_days(received, days)
    paused = received + pause_after
    local = paused.astimezone(LONDON)
    resumed_day = local.date() + timedelta(days=paused_days)
    assume(due > paused and oracle_working(local.date()) and oracle_working(resumed_day))
    now = datetime.combine(resumed_day, local.time(), tzinfo=LONDON).astimezone(UTC)
    assume(now.astimezone(LONDON).time() == local.time())  # not inside a skipped BST hour
    spent = sum(oracle_working(local.date() + timedelta(days=n)) for n in range(1, paused_days + 1))
    assume(oracle_in_range(due + timedelta(days=2 * paused_days + 7)))
    assert resumed_due(Sla(label="x", working_days=days), due, paused, now) == oracle_add(
        due, spent
    )


def oracle_in_range(at: datetime) -> bool:
    return at.astimezone(LONDON).date() <= ORACLE_LAST
