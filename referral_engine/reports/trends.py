"""Month by month, what a manager asks of the front door (issue 18): referrals over time,
the RAG mix, the outcome mix and decisions in time, over referrals received in a range.

Counted in the database, through `Access.visible_cases` like every KPI (reports/kpis.py):
a case the caller may not see is in no count. Months are calendar months in the
partnership's time zone (Europe/London), cut to the range's first and last day; each
month is a pair of instants, so the SQL compares stored UTC times against them with a
CASE and is the same on SQLite and PostgreSQL. The MASH series (RAG, outcomes,
timeliness) are there only for a caller who may see MASH cases.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from dateutil.relativedelta import relativedelta
from sqlmodel import Session

from referral_engine.access.rules import Access, Actor
from referral_engine.storage.models import Case, Deadline, Referral

RAG_SERIES = ("red", "amber", "green", "unrated")


@dataclass(frozen=True)
class Month:
    """One bucket: a calendar month, or the part of it inside the range."""

    key: str  # "2026-11"
    first: date
    last: date
    start: datetime  # the first instant in it (aware)
    end: datetime  # the first instant after it

    @property
    def label(self) -> str:
        return f"{self.first:%b %Y}"


def months(start: date, end: date, tz: ZoneInfo) -> list[Month]:
    """The calendar months from `start` to `end` (both days included), the first and last
    cut to the range. Contiguous: each month ends where the next starts."""
    out: list[Month] = []
    first = start
    while first <= end:
        following = first.replace(day=1) + relativedelta(months=1)
        last = min(following - timedelta(days=1), end)
        out.append(Month(
            key=f"{first:%Y-%m}", first=first, last=last,
            start=datetime.combine(first, time(0), tz),
            end=datetime.combine(last + timedelta(days=1), time(0), tz),
        ))  # fmt: skip
        first = following
    return out


def _bucket(column: Any, buckets: list[Month]) -> sa.ColumnElement[Any]:
    """The index of the month a stored time falls in (NULL outside every month)."""
    return sa.case(
        *[(sa.and_(column >= m.start, column < m.end), i) for i, m in enumerate(buckets)],
        else_=None,
    )


def _series(rows: Any, size: int) -> dict[str, list[int]]:
    """(month index, key, count) rows as one list of counts per key."""
    out: dict[str, list[int]] = {}
    for index, key, count in rows:
        if index is None:
            continue
        out.setdefault(key, [0] * size)[int(index)] += int(count)
    return out


def _outcome_codes(stored: Any) -> list[str]:
    """The outcome attribute as SQL hands it back: one code, or a list of them as JSON
    text (a decision that records several outcomes counts in each)."""
    if stored is None or stored == "":
        return []
    if isinstance(stored, list):
        return [str(c) for c in stored]
    text = str(stored)
    if text.startswith("["):
        try:
            return [str(c) for c in json.loads(text)]
        except ValueError:
            return [text]
    return [text]


def monthly(
    s: Session, access: Access, actor: Actor, buckets: list[Month], mash_outcomes: list[str]
) -> dict[str, Any]:
    visible = access.visible_cases(actor, glass=False)
    size = len(buckets)
    lo, hi = buckets[0].start, buckets[-1].end
    in_range = sa.and_(Referral.received_at >= lo, Referral.received_at < hi)
    month = _bucket(Referral.received_at, buckets).label("month")
    base = (
        sa.select(month)
        .select_from(Case)
        .join(Referral, Referral.id == Case.referral_id)
        .where(in_range, visible)
    )

    # Referrals (not cases: an onward case is the same referral) in each month.
    inner = base.add_columns(Referral.id.label("referral_id")).distinct().subquery()
    counts = [0] * size
    for index, count in s.execute(
        sa.select(inner.c.month, sa.func.count()).group_by(inner.c.month)
    ):
        if index is not None:
            counts[int(index)] = int(count)
    out: dict[str, Any] = {
        "months": [
            {"month": m.key, "label": m.label, "from": m.first.isoformat(),
             "to": m.last.isoformat()}
            for m in buckets
        ],
        "referrals": counts,
    }  # fmt: skip
    if "mash" not in access.visible_pathways(actor):
        return out

    mash = base.where(Case.pathway == "mash")
    # Group by a subquery's columns, not by the CASE itself: PostgreSQL cannot tell that
    # the same CASE, bound twice, is one expression.
    rag = mash.add_columns(sa.func.coalesce(Case.rag, "unrated").label("rag")).subquery()
    by_rag = _series(
        s.execute(
            sa.select(rag.c.month, rag.c.rag, sa.func.count()).group_by(rag.c.month, rag.c.rag)
        ),
        size,
    )
    out["rag"] = {key: by_rag.get(key, [0] * size) for key in RAG_SERIES}

    stored = Case.attributes["outcome"].as_string()
    outcome = mash.add_columns(stored.label("outcome")).where(stored.is_not(None)).subquery()
    by_outcome: dict[str, list[int]] = {}
    for index, value, count in s.execute(
        sa.select(outcome.c.month, outcome.c.outcome, sa.func.count()).group_by(
            outcome.c.month, outcome.c.outcome
        )
    ):
        if index is None:
            continue
        for code in _outcome_codes(value):
            by_outcome.setdefault(code, [0] * size)[int(index)] += int(count)
    order = {code: i for i, code in enumerate(mash_outcomes)}
    out["outcomes"] = dict(sorted(by_outcome.items(), key=lambda kv: order.get(kv[0], 99)))

    # MASH decisions (the decision deadline met) and how many by their deadline.
    on_time = sa.case((Deadline.met_at <= Deadline.due_at, 1), else_=0).label("on_time")
    decided = (
        mash.add_columns(on_time)
        .join(Deadline, Deadline.case_id == Case.id)
        .where(Deadline.name == "decision", Deadline.status == "met")
        .subquery()
    )
    total, in_time = [0] * size, [0] * size
    for index, count, timely in s.execute(
        sa.select(decided.c.month, sa.func.count(), sa.func.sum(decided.c.on_time)).group_by(
            decided.c.month
        )
    ):
        if index is not None:
            total[int(index)], in_time[int(index)] = int(count), int(timely or 0)
    out["timeliness"] = {
        "decided": total,
        "on_time": in_time,
        "on_time_pct": [
            round(100.0 * t / d, 1) if d else None for t, d in zip(in_time, total, strict=True)
        ],
    }
    return out
