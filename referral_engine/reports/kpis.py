"""The partnership's measures (DOMAIN.md "Measures"), over referrals received in a range.

The measures themselves are declared in policies/reports.yaml (`measures.py` checks every
name in them against the pathways at start-up), so a renamed event stops start-up instead
of silently zeroing a KPI. Every figure is counted through `Access.visible_cases`, like
every list: a role that may not see Channel gets no Channel figures at all (the keys are
absent, not zero), and a role that sees only MASH gets MASH figures. Percentages are 0-100
to one decimal place, or null when there is nothing to divide by.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import Session

from referral_engine.access.rules import Access, Actor
from referral_engine.audit.log import AuditLog
from referral_engine.audit.operation import Operations
from referral_engine.errors import (
    FieldError,
    Forbidden,
    InvalidData,
)
from referral_engine.policies.policy import Policy
from referral_engine.reports.measures import Measure, ReportDefinitions
from referral_engine.reports.trends import monthly, months
from referral_engine.storage.db import Database
from referral_engine.storage.models import (
    Case,
    CaseHistory,
    Deadline,
    Referral,
)

MAX_DAYS = 366 * 5


def pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


class Reports:
    def __init__(
        self, db: Database, access: Access, policy: Policy, audit: AuditLog,
        operations: Operations, definitions: ReportDefinitions,
    ):  # fmt: skip
        self.db, self.access, self.policy, self.audit = db, access, policy, audit
        self.operations = operations
        # The partnership's measures, as declared in policies/reports.yaml.
        self.definitions = definitions
        self.measures = definitions.measures

    def kpis(self, actor: Actor, start: date, end: date) -> dict[str, Any]:
        action = f"{actor.source}:report:kpis"

        def run(s: Session) -> dict[str, Any]:
            if not self.access.can(actor, "report:kpi:view"):
                raise Forbidden("you may not read the partnership's measures")
            if end < start:
                raise InvalidData(FieldError("to", "must not be before from"))
            if (end - start).days > MAX_DAYS:
                raise InvalidData(FieldError("to", f"a report covers at most {MAX_DAYS} days"))
            tz = ZoneInfo(self.policy.timezone)
            lo = datetime.combine(start, time(0), tz)
            hi = datetime.combine(end + timedelta(days=1), time(0), tz)
            out = self._measures(s, actor, lo, hi)
            out.update({"from": start.isoformat(), "to": end.isoformat()})
            self.audit.record(
                s, actor, action, target="report:kpis",
                summary={"from": start.isoformat(), "to": end.isoformat(),
                         "referrals_total": out["referrals_total"]},
            )  # fmt: skip
            return out

        return self.operations.run(actor, action, run, target="report:kpis")

    def trends(self, actor: Actor, start: date, end: date) -> dict[str, Any]:
        """Month by month over the same range and the same visibility as `kpis`
        (reports/trends.py): referrals, and for MASH the RAG mix, the outcome mix and
        decisions made in time."""
        action = f"{actor.source}:report:trends"

        def run(s: Session) -> dict[str, Any]:
            if not self.access.can(actor, "report:kpi:view"):
                raise Forbidden("you may not read the partnership's measures")
            if end < start:
                raise InvalidData(FieldError("to", "must not be before from"))
            if (end - start).days > MAX_DAYS:
                raise InvalidData(FieldError("to", f"a report covers at most {MAX_DAYS} days"))
            buckets = months(start, end, ZoneInfo(self.policy.timezone))
            outcomes = list(self.policy.reference.mash_outcomes)
            out = monthly(s, self.access, actor, buckets, outcomes)
            out.update({"from": start.isoformat(), "to": end.isoformat()})
            self.audit.record(
                s, actor, action, target="report:trends",
                summary={"from": start.isoformat(), "to": end.isoformat(),
                         "referrals_total": sum(out["referrals"])},
            )  # fmt: skip
            return out

        return self.operations.run(actor, action, run, target="report:trends")

    def _measures(self, s: Session, actor: Actor, lo: datetime, hi: datetime) -> dict[str, Any]:
        visible = self.access.visible_cases(actor, glass=False)
        in_range = sa.and_(Referral.received_at >= lo, Referral.received_at < hi)
        # Every case that came from a referral received in range, visible to the caller.
        cases = (
            sa.select(Case.id, Case.pathway, Case.state, Case.attributes, Referral.agency_kind,
                      Referral.is_child, Referral.concerns, Referral.id.label("referral_id"))
            .join(Referral, Referral.id == Case.referral_id)
            .where(in_range, visible)
        )  # fmt: skip
        rows = s.execute(cases).all()
        pathways = set(self.access.visible_pathways(actor))
        referral_rows = {r.referral_id: r for r in rows}.values()
        out: dict[str, Any] = {
            "referrals_total": len(referral_rows),
            "referrals_by_source_agency": dict(
                Counter(r.agency_kind or "unknown" for r in referral_rows).most_common()
            ),
            "referrals_by_concern": dict(
                Counter(c for r in referral_rows for c in (r.concerns or [])).most_common()
            ),
        }
        by_path: dict[str, list[Any]] = {}
        for r in rows:
            by_path.setdefault(r.pathway, []).append(r)
        events = self._events(s, [r.id for r in rows])
        for key, m in self.measures.items():
            if m.pathway in pathways:
                out[key] = self._figure(s, m, by_path.get(m.pathway, []), events, in_range, visible)
        return out

    @staticmethod
    def _figure(
        s: Session, m: Measure, rows: list[Any], events: dict[int, set[str]], in_range, visible
    ) -> Any:
        """One declared measure (policies/reports.yaml) over its pathway's cases."""
        if m.deadline is not None:
            met = s.execute(
                sa.select(Deadline.met_at, Deadline.due_at)
                .join(Case, Case.id == Deadline.case_id)
                .join(Referral, Referral.id == Case.referral_id)
                .where(in_range, visible, Case.pathway == m.pathway,
                       Deadline.name == m.deadline, Deadline.status == "met")
            ).all()  # fmt: skip
            if m.deadline_met:
                return len(met)
            return pct(sum(1 for at, due in met if at <= due), len(met))
        chosen = [r for r in rows if m.cases is None or m.cases.holds(r, events.get(r.id, set()))]
        if m.by_attribute is not None:
            return dict(
                Counter(
                    v for r in chosen for v in (r.attributes or {}).get(m.by_attribute) or []
                ).most_common()
            )
        if m.figure == "by_age_group":
            return {
                "child": sum(1 for r in chosen if r.is_child),
                "adult": sum(1 for r in chosen if not r.is_child),
            }
        if m.figure == "percent":
            assert m.of_those is not None
            hits = sum(1 for r in chosen if m.of_those.holds(r, events.get(r.id, set())))
            return pct(hits, len(chosen))
        return len(chosen)

    @staticmethod
    def _events(s: Session, case_ids: list[int]) -> dict[int, set[str]]:
        found: dict[int, set[str]] = {}
        for chunk in range(0, len(case_ids), 1000):
            part = case_ids[chunk : chunk + 1000]
            for case_id, event in s.execute(
                sa.select(CaseHistory.case_id, CaseHistory.event).where(
                    CaseHistory.case_id.in_(part)
                )
            ):
                found.setdefault(case_id, set()).add(event)
        return found
