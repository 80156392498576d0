"""The column types' own conversions on SQLite, which bypass SQLAlchemy's for speed, must
store and read exactly what SQLAlchemy's would: stored times are compared and sorted as
strings, so one character of difference would misorder a queue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.sqlite.base import DATETIME

from referral_engine.storage.columns import UTCDateTime

DIALECT = sqlite.dialect()
OURS = UTCDateTime().dialect_impl(DIALECT)
BIND, RESULT = OURS.bind_processor(DIALECT), OURS.result_processor(DIALECT, None)
SA_BIND = DATETIME().bind_processor(DIALECT)
SA_RESULT = DATETIME().result_processor(DIALECT, None)

aware = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=1)), timezone(-timedelta(hours=5))]),
)


@given(aware)
def test_stored_exactly_as_sqlalchemy_stores_the_utc_time(value):
    utc = value.astimezone(UTC)
    assert BIND(value) == SA_BIND(utc.replace(tzinfo=None))


@given(aware)
def test_read_back_as_the_same_aware_utc_instant(value):
    got = RESULT(BIND(value))
    assert got == value and got.tzinfo is UTC
    assert RESULT(BIND(value)) == SA_RESULT(BIND(value)).replace(tzinfo=UTC)


@given(st.lists(aware, min_size=2, max_size=20))
def test_stored_strings_sort_as_the_instants_do(values):
    assert sorted(values) == sorted(values, key=BIND)


def test_values_written_without_microseconds_or_time_still_read():
    assert RESULT("2026-01-01 11:00:00") == datetime(2026, 1, 1, 11, tzinfo=UTC)
    assert RESULT("2026-01-01") == datetime(2026, 1, 1, tzinfo=UTC)
    assert BIND(None) is None and RESULT(None) is None


def test_naive_times_are_refused():
    with pytest.raises(ValueError, match="naive"):
        BIND(datetime(2026, 1, 1))
