"""Subject access (UK GDPR article 15, DPA 2018): everything held about one person, and
who has accessed it, as JSON (complete, for the data protection officer) and as a
readable HTML report (for redaction and disclosure to the person).

What is gathered: the person record and any record merged into it; their referrals;
their cases with each case's history, deadlines, meeting listings, legal holds and
erasure tombstones; notifications raised about those cases and referrals; and every
audit row that names the person or one of their cases (who read or changed what, when,
allowed or refused). The export itself is audited (`cli:person:subject_access`).

Not included: queue and list views, which record the ids they showed in their audit
row's summary rather than as the row's case or person; "who saw the name in a list" needs
a search of those summaries for the case ids, which this export does not yet do.

Third-party information (referrers, other people named in free text) is in the export
as held: deciding what to withhold before disclosure is the DPO's job, not the code's.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlmodel import Session, SQLModel

from referral_engine.access.rules import Actor
from referral_engine.audit.log import AuditLog, rows_for
from referral_engine.clock import Clock
from referral_engine.errors import NotFound
from referral_engine.storage.db import Database
from referral_engine.storage.models import (
    AuditEvent,
    Case,
    CaseHistory,
    Deadline,
    Erasure,
    LegalHold,
    MeetingCase,
    Outbox,
    Person,
    Referral,
)
from referral_engine.storage.private_files import private_dir, refuse_existing, write_private

AUDIT_LIMIT = 1_000_000

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _plain(row: SQLModel) -> dict[str, Any]:
    return row.model_dump(mode="json")


def _pretty(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return "" if value is None else str(value)


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.filters["pretty"] = _pretty
    return env


class SubjectAccess:
    def __init__(self, db: Database, clock: Clock, audit: AuditLog):
        self.db, self.clock, self.audit = db, clock, audit

    def gather(self, s: Session, person_id: int) -> dict[str, Any]:
        person = s.get(Person, person_id)
        if person is None:
            raise NotFound(f"no person {person_id}")
        merged = list(
            s.execute(sa.select(Person).where(Person.merged_into_id == person_id)).scalars()
        )
        ids = [person_id, *(p.id for p in merged)]
        referrals = list(
            s.execute(
                sa.select(Referral).where(Referral.person_id.in_(ids)).order_by(Referral.id)
            ).scalars()
        )
        cases = list(
            s.execute(sa.select(Case).where(Case.person_id.in_(ids)).order_by(Case.id)).scalars()
        )
        case_ids = [c.id for c in cases]
        referral_ids = [r.id for r in referrals]

        def by_case(model: Any, order: Any) -> dict[int, list[dict[str, Any]]]:
            out: dict[int, list[dict[str, Any]]] = {i: [] for i in case_ids}
            query = sa.select(model).where(model.case_id.in_(case_ids)).order_by(order)
            for row in s.execute(query).scalars():
                out[row.case_id].append(_plain(row))
            return out

        history = by_case(CaseHistory, CaseHistory.version)
        deadlines = by_case(Deadline, Deadline.id)
        holds = by_case(LegalHold, LegalHold.id)
        listings = by_case(MeetingCase, MeetingCase.meeting_id)
        erasures = {e.case_id: _plain(e) for e in s.execute(
            sa.select(Erasure).where(Erasure.case_id.in_(case_ids))).scalars()}  # fmt: skip
        notifications = [
            _plain(n)
            for n in s.execute(
                sa.select(Outbox)
                .where(sa.or_(Outbox.case_id.in_(case_ids), Outbox.referral_id.in_(referral_ids)))
                .order_by(Outbox.id)
            ).scalars()
        ]
        about = sa.or_(AuditEvent.person_id.in_(ids), AuditEvent.case_id.in_(case_ids))
        access = list(rows_for(s, about, AUDIT_LIMIT))
        return {
            "person": _plain(person),
            "merged_records": [_plain(p) for p in merged],
            "referrals": [_plain(r) for r in referrals],
            "cases": [
                {
                    "case": _plain(c),
                    "history": history[c.id],
                    "deadlines": deadlines[c.id],
                    "meeting_listings": listings[c.id],
                    "legal_holds": holds[c.id],
                    "erasure": erasures.get(c.id),
                }
                for c in cases
            ],
            "notifications": notifications,
            "access_log": access,
        }

    def export(self, actor: Actor, person_id: int, directory: Path) -> dict[str, Any]:
        """Write person-<id>.json and person-<id>.html into `directory`; returns a
        summary (the paths and what was counted). Audited in the reading transaction.
        Both files must be new (nothing overwritten, no link followed) and are written
        0600 in a directory made 0700 (storage/private_files.py)."""
        json_path = directory / f"person-{person_id}.json"
        html_path = directory / f"person-{person_id}.html"
        private_dir(directory)
        for path in (json_path, html_path):
            refuse_existing(path)
        with self.db.transaction() as s:
            data = self.gather(s, person_id)
            now = self.clock.now()
            counts = {
                "referrals": len(data["referrals"]),
                "cases": len(data["cases"]),
                "notifications": len(data["notifications"]),
                "access_log": len(data["access_log"]),
            }
            audit_id = self.audit.record(
                s, actor, f"{actor.source}:person:subject_access", target=f"person:{person_id}",
                person_id=person_id, at=now, summary=counts,
            )  # fmt: skip
        data["produced_at"] = now.isoformat()
        data["produced_by"] = actor.username
        data["export_audit_id"] = audit_id
        write_private(
            json_path,
            json.dumps(data, indent=2, ensure_ascii=False, default=_default).encode("utf-8"),
        )
        write_private(html_path, self.render(data).encode("utf-8"))
        return {"json": str(json_path), "html": str(html_path), **counts}

    @staticmethod
    def render(data: dict[str, Any]) -> str:
        access = [
            {
                "at": a.get("at"),
                "who": (a.get("actor") or {}).get("username"),
                "action": a.get("action"),
                "outcome": a.get("outcome"),
                "case_id": a.get("case_id"),
            }
            for a in data["access_log"]
        ]
        accessed_by = Counter(a["who"] for a in access).most_common()
        return (
            _environment()
            .get_template("subject_access.html")
            .render(
                person=data["person"],
                people=[data["person"], *data["merged_records"]],
                referrals=data["referrals"],
                cases=data["cases"],
                notifications=data["notifications"],
                access=access,
                accessed_by=accessed_by,
                produced_at=data["produced_at"],
                produced_by=data["produced_by"],
            )
        )


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)
