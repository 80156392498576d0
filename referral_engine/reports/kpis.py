"""The partnership's measures (DOMAIN.md "Measures"), over referrals received in a range.

Every figure is counted through `Access.visible_cases`, like every list: a role that may
not see Channel gets no Channel figures at all (the keys are absent, not zero), and a
role that sees only MASH gets MASH figures. Percentages are 0-100 to one decimal place,
or null when there is nothing to divide by.
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
from referral_engine.errors import (
    DomainError,
    FieldError,
    Forbidden,
    InvalidData,
)
from referral_engine.policies.policy import Policy
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
    def __init__(self, db: Database, access: Access, policy: Policy, audit: AuditLog, refused):
        self.db, self.access, self.policy, self.audit = db, access, policy, audit
        self._refused = refused

    def kpis(self, actor: Actor, start: date, end: date) -> dict[str, Any]:
        action = f"{actor.source}:report:kpis"
        try:
            if not self.access.can(actor, "report:kpi:view"):
                raise Forbidden("you may not read the partnership's measures")
            if end < start:
                raise InvalidData(FieldError("to", "must not be before from"))
            if (end - start).days > MAX_DAYS:
                raise InvalidData(FieldError("to", f"a report covers at most {MAX_DAYS} days"))
            tz = ZoneInfo(self.policy.timezone)
            lo = datetime.combine(start, time(0), tz)
            hi = datetime.combine(end + timedelta(days=1), time(0), tz)
            with self.db.transaction() as s:
                out = self._measures(s, actor, lo, hi)
                out.update({"from": start.isoformat(), "to": end.isoformat()})
                self.audit.record(
                    s, actor, action, target="report:kpis",
                    summary={"from": start.isoformat(), "to": end.isoformat(),
                             "referrals_total": out["referrals_total"]},
                )  # fmt: skip
            return out
        except DomainError as exc:
            self._refused(actor, action, exc, target="report:kpis")
            raise

    def trends(self, actor: Actor, start: date, end: date) -> dict[str, Any]:
        """Month by month over the same range and the same visibility as `kpis`
        (reports/trends.py): referrals, and for MASH the RAG mix, the outcome mix and
        decisions made in time."""
        action = f"{actor.source}:report:trends"
        try:
            if not self.access.can(actor, "report:kpi:view"):
                raise Forbidden("you may not read the partnership's measures")
            if end < start:
                raise InvalidData(FieldError("to", "must not be before from"))
            if (end - start).days > MAX_DAYS:
                raise InvalidData(FieldError("to", f"a report covers at most {MAX_DAYS} days"))
            buckets = months(start, end, ZoneInfo(self.policy.timezone))
            outcomes = list(self.policy.reference.mash_outcomes)
            with self.db.transaction() as s:
                out = monthly(s, self.access, actor, buckets, outcomes)
                out.update({"from": start.isoformat(), "to": end.isoformat()})
                self.audit.record(
                    s, actor, action, target="report:trends",
                    summary={"from": start.isoformat(), "to": end.isoformat(),
                             "referrals_total": sum(out["referrals"])},
                )  # fmt: skip
            return out
        except DomainError as exc:
            self._refused(actor, action, exc, target="report:trends")
            raise

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
        if "mash" in pathways:
            decided = s.execute(
                sa.select(Deadline.met_at, Deadline.due_at)
                .join(Case, Case.id == Deadline.case_id)
                .join(Referral, Referral.id == Case.referral_id)
                .where(in_range, visible, Case.pathway == "mash",
                       Deadline.name == "decision", Deadline.status == "met")
            ).all()  # fmt: skip
            out["mash_decisions"] = len(decided)
            out["mash_decided_within_1wd_pct"] = pct(
                sum(1 for met, due in decided if met <= due), len(decided)
            )
        events = self._events(s, [r.id for r in rows])
        if "marac" in pathways:
            accepted = [r for r in by_path.get("marac", []) if "accept" in events.get(r.id, ())]
            out["marac_cases"] = len(accepted)
            out["marac_repeat_pct"] = pct(
                sum(1 for r in accepted if _repeat(r.attributes)), len(accepted)
            )
            out["marac_non_police_pct"] = pct(
                sum(1 for r in accepted if r.agency_kind != "police"), len(accepted)
            )
        if "nrm" in pathways:
            nrm = by_path.get("nrm", [])
            out["nrm_referrals_by_age_group"] = {
                "child": sum(1 for r in nrm if r.is_child),
                "adult": sum(1 for r in nrm if not r.is_child),
            }
            out["nrm_by_exploitation_type"] = dict(
                Counter(
                    t for r in nrm for t in (r.attributes or {}).get("exploitation_types", [])
                ).most_common()
            )
        if "channel" in pathways:
            channel = by_path.get("channel", [])
            decided_panel = [r for r in channel if {"adopt", "not_adopt"} & events.get(r.id, set())]
            out["channel_referrals"] = len(channel)
            out["channel_adoption_pct"] = pct(
                sum(1 for r in decided_panel if "adopt" in events.get(r.id, ())), len(decided_panel)
            )
        if "gang_exit" in pathways:
            out["gang_exit_completions"] = sum(
                1 for r in by_path.get("gang_exit", []) if "exit" in events.get(r.id, ())
            )
        return out

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


def _repeat(attributes: dict | None) -> bool:
    attributes = attributes or {}
    return bool(attributes.get("repeat")) or "repeat" in (attributes.get("criteria") or [])
