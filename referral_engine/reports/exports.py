"""Exports for statutory returns and for working offline: CSV and Excel (openpyxl).

Every export reads through the same paths as the screens: the KPI export is the KPI
report (`Reports.kpis`), the case export pages through the case list (`Cases.queue`), and
the MARAC and NRM returns count the cases `Access.visible_cases` allows, from referrals
received in the range, exactly as the dashboard does, so the figures agree. Each export
is audited with its filter and the number of rows it produced.

The MARAC return has the shape partnerships send to SafeLives each quarter: cases
discussed, repeat cases, referrals by agency, children in the households. The NRM return
counts referrals by age group and exploitation type.

Spreadsheet cells that begin with = + - @ are prefixed with an apostrophe: text a user
typed must never run as a formula in whoever opens the file.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from referral_engine.access.rules import Access, Actor
from referral_engine.audit.log import AuditLog
from referral_engine.audit.operation import Operations
from referral_engine.casework.cases import MAX_PAGE, Cases
from referral_engine.clock import Clock
from referral_engine.display import Names, day_text, when_text
from referral_engine.engine.intake import is_child
from referral_engine.errors import (
    DomainError,
    FieldError,
    Forbidden,
    InvalidData,
)
from referral_engine.policies.policy import Policy
from referral_engine.reports.kpis import (
    MAX_DAYS,
    Reports,
    pct,
)
from referral_engine.storage.db import Database
from referral_engine.storage.models import Case, Referral

FORMATS = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
# The case export's columns: its header as people read it, each value as the pages show
# it (labels, UK dates, Yes / No), and the stored code beside each coded column, so a
# spreadsheet can still be filtered or matched on codes.
CASE_COLUMNS = [
    ("id", "Case"), ("reference", "Reference"), ("pathway", "Pathway"),
    ("pathway", "Pathway code"), ("state", "State"), ("state", "State code"),
    ("rag", "RAG rating"), ("due_at", "Due"), ("overdue", "Overdue"),
    ("opened_at", "Opened"), ("given_name", "Given name"), ("family_name", "Family name"),
    ("date_of_birth", "Date of birth"), ("concerns", "Concerns"),
    ("concerns", "Concern codes"), ("repeat", "Repeat referral"),
    ("assigned_to", "Assigned to"),
]  # fmt: skip


@dataclass(frozen=True)
class Table:
    title: str
    header: list[str]
    rows: list[list[Any]]


@dataclass(frozen=True)
class Export:
    filename: str
    media_type: str
    content: bytes
    rows: int


def _safe(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    if isinstance(value, list | tuple):
        return "; ".join(str(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}={v}" for k, v in value.items())
    return value


def to_csv(tables: list[Table]) -> bytes:
    """One table per block, a blank line and the next table's title between them."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    for i, table in enumerate(tables):
        if len(tables) > 1:
            if i:
                w.writerow([])
            w.writerow([table.title])
        w.writerow(table.header)
        w.writerows([[_safe(v) for v in row] for row in table.rows])
    # A byte-order mark so that Excel reads the file as UTF-8.
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def to_xlsx(tables: list[Table]) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    wb.remove(wb.active)
    for table in tables:
        ws = wb.create_sheet(title=table.title[:31])
        ws.append(table.header)
        for cell in ws[1]:
            cell.font = Font(bold=True)
        for row in table.rows:
            ws.append([_safe(v) for v in row])
        ws.freeze_panes = "A2"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def flatten(report: dict[str, Any]) -> list[list[Any]]:
    """A KPI report as rows of (measure, breakdown, value)."""
    rows: list[list[Any]] = []
    for key, value in report.items():
        if key in ("from", "to"):
            continue
        if isinstance(value, dict):
            rows.extend([key, part, n] for part, n in value.items())
        else:
            rows.append([key, "", value])
    return rows


class Exports:
    def __init__(
        self, db: Database, access: Access, policy: Policy, clock: Clock, audit: AuditLog,
        reports: Reports, case_list: Cases, operations: Operations,
    ):  # fmt: skip
        self.db, self.access, self.policy, self.clock = db, access, policy, clock
        self.audit, self.reports, self.case_list = audit, reports, case_list
        self.operations = operations

    # --- the exports ---------------------------------------------------------------------

    def kpis(self, actor: Actor, start: date, end: date, fmt: str) -> Export:
        def build() -> list[Table]:
            report = self.reports.kpis(actor, start, end)
            return [Table("KPIs", ["measure", "breakdown", "value"], flatten(report))]

        return self._export(actor, "kpis", fmt, {"from": str(start), "to": str(end)}, build)

    def marac(self, actor: Actor, start: date, end: date, fmt: str) -> Export:
        def build() -> list[Table]:
            ret = self.marac_return(actor, start, end)
            return [
                Table("MARAC return", ["measure", "value"],
                      [[k, ret[k]] for k in ("cases", "repeat_cases", "repeat_pct",
                                              "children_in_households",
                                              "referrals_from_police",
                                              "referrals_from_other_agencies")]),
                Table("Referrals by agency", ["agency_kind", "agency", "referrals"],
                      [[k, self.policy.reference.agency_kinds.get(k, k), n]
                       for k, n in ret["referrals_by_agency"].items()]),
            ]  # fmt: skip

        return self._export(actor, "marac", fmt, {"from": str(start), "to": str(end)}, build)

    def nrm(self, actor: Actor, start: date, end: date, fmt: str) -> Export:
        def build() -> list[Table]:
            ret = self.nrm_return(actor, start, end)
            types = sorted({t for row in ret["by_age_group_and_type"].values() for t in row})
            rows = [
                [group, ret["by_age_group"][group],
                 *[ret["by_age_group_and_type"][group].get(t, 0) for t in types]]
                for group in ("child", "adult")
            ]  # fmt: skip
            return [Table("NRM return", ["age_group", "referrals", *types], rows)]

        return self._export(actor, "nrm", fmt, {"from": str(start), "to": str(end)}, build)

    def cases(self, actor: Actor, fmt: str, **filters: Any) -> Export:
        """The case list as the caller sees it (every page, each read audited as a list)."""

        names = Names(self.db)

        def build() -> list[Table]:
            if not self.access.can(actor, "report:cases:export"):
                raise Forbidden("you may not export case lists")
            rows: list[list[Any]] = []
            after = 0
            while True:
                page = self._cases_page(actor, filters, after)
                for item in page["items"]:
                    person = item.get("person") or {}
                    item = {**item, **{k: person.get(k) for k in
                                       ("given_name", "family_name", "date_of_birth")}}  # fmt: skip
                    rows.append(self._case_row(item, names))
                if len(page["items"]) < MAX_PAGE:
                    break
                after = page["items"][-1]["id"]
            return [Table("Cases", [h for _, h in CASE_COLUMNS], rows)]

        shown = {k: v for k, v in filters.items() if v not in (None, False)}
        return self._export(actor, "cases", fmt, shown, build)

    def _case_row(self, item: dict[str, Any], names: Names) -> list[Any]:
        """One case as the export shows it: labels first, codes in their own columns."""
        workflows = self.case_list.engine.workflows.current
        wf = workflows.get(item["pathway"])
        shown = {
            "pathway": wf.definition.label if wf else item["pathway"],
            "state": (wf.definition.states[item["state"]].label
                      if wf and item["state"] in wf.definition.states else item["state"]),
            "rag": self.policy.reference.rag_ratings.get(item.get("rag") or "", ""),
            "due_at": when_text(item.get("due_at")),
            "overdue": "Yes" if item.get("overdue") else "No",
            "opened_at": when_text(item.get("opened_at")),
            "date_of_birth": day_text(item.get("date_of_birth")),
            "concerns": ", ".join(self.policy.reference.concerns.get(c, c)
                                  for c in item.get("concerns") or []),
            "repeat": "Yes" if item.get("repeat") else "No",
            "assigned_to": names.user_by_id(item.get("assigned_to_id")) or "",
        }  # fmt: skip
        row = []
        for key, header in CASE_COLUMNS:
            if header.endswith(" code") or header == "Concern codes":
                value = item.get(key)
                row.append(", ".join(value) if isinstance(value, list) else value)
            else:
                row.append(shown.get(key, item.get(key)))
        return row

    def _cases_page(self, actor: Actor, filters: dict[str, Any], after_id: int) -> dict:
        """One page of every case the caller may see, by id after `after_id` (keyset: no
        cap, no count, each page a list read audited as such)."""
        return self.case_list.queue(actor, limit=MAX_PAGE, after_id=after_id, **filters)

    def _export(self, actor: Actor, what: str, fmt: str, filters: dict, build) -> Export:
        action = f"{actor.source}:export:{what}"
        try:
            if fmt not in FORMATS:
                raise InvalidData(FieldError("format", "must be csv or xlsx"))
            if what != "cases" and not self.access.can(actor, "report:kpi:view"):
                raise Forbidden("you may not export the partnership's measures")
            tables = build()
            count = sum(len(t.rows) for t in tables)
            content = to_csv(tables) if fmt == "csv" else to_xlsx(tables)
            with self.db.transaction() as s:
                self.audit.record(
                    s, actor, action, target=f"export:{what}",
                    summary={"format": fmt, "filters": filters, "rows": count,
                             "bytes": len(content)},
                )  # fmt: skip
        except DomainError as exc:
            # Not `operations.run`: an export reads page by page, each page its own
            # audited read, so there is no one transaction to run it in.
            self.operations.refused(actor, action, exc, target=f"export:{what}")
            raise
        stamp = "_".join(str(v) for k, v in filters.items() if k in ("from", "to"))
        name = f"{what}{'_' + stamp if stamp else ''}.{fmt}"
        return Export(name, FORMATS[fmt], content, count)

    # --- returns -------------------------------------------------------------------------

    def _range(self, start: date, end: date) -> tuple[datetime, datetime]:
        if end < start:
            raise InvalidData(FieldError("to", "must not be before from"))
        if (end - start).days > MAX_DAYS:
            raise InvalidData(FieldError("to", f"a report covers at most {MAX_DAYS} days"))
        tz = ZoneInfo(self.policy.timezone)
        return (datetime.combine(start, time(0), tz),
                datetime.combine(end + timedelta(days=1), time(0), tz))  # fmt: skip

    def _pathway_rows(self, actor: Actor, pathway: str, start: date, end: date) -> list[Any]:
        if not self.access.can(actor, f"{pathway}:case:view"):
            raise Forbidden(f"you may not see {pathway} cases")
        lo, hi = self._range(start, end)
        with self.db.reading() as s:
            rows = s.execute(
                sa.select(Case.id, Case.attributes, Referral.agency_kind, Referral.is_child,
                          Referral.subject, Referral.received_at)
                .join(Referral, Referral.id == Case.referral_id)
                .where(Referral.received_at >= lo, Referral.received_at < hi,
                       Case.pathway == pathway, self.access.visible_cases(actor, glass=False))
            ).all()  # fmt: skip
            events = Reports._events(s, [r.id for r in rows])
        return [(r, events.get(r.id, set())) for r in rows]

    def marac_return(self, actor: Actor, start: date, end: date) -> dict[str, Any]:
        """Counted as the dashboard counts its MARAC cases: the same declared conditions
        (policies/reports.yaml `returns.marac`)."""
        part = self.reports.definitions.returns.marac
        cases = self.reports.measures[part.cases].cases
        repeat = self.reports.measures[part.repeat].of_those
        rows = self._pathway_rows(actor, "marac", start, end)
        accepted = [r for r, ev in rows if cases is None or cases.holds(r, ev)]
        is_repeat = {r.id for r, ev in rows if repeat is not None and repeat.holds(r, ev)}
        limit = self.policy.rules.child_age_limit
        children = sum(
            1
            for r in accepted
            for member in (r.subject or {}).get("household") or []
            if is_child(member, r.received_at.date(), limit)
        )
        by_agency = Counter(r.agency_kind or "unknown" for r in accepted)
        repeats = sum(1 for r in accepted if r.id in is_repeat)
        return {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "cases": len(accepted),
            "repeat_cases": repeats,
            "repeat_pct": pct(repeats, len(accepted)),
            "children_in_households": children,
            "referrals_from_police": by_agency.get("police", 0),
            "referrals_from_other_agencies": len(accepted) - by_agency.get("police", 0),
            "referrals_by_agency": dict(by_agency.most_common()),
        }

    def nrm_return(self, actor: Actor, start: date, end: date) -> dict[str, Any]:
        rows = [r for r, _ in self._pathway_rows(actor, "nrm", start, end)]
        by_type = self.reports.measures[self.reports.definitions.returns.nrm.by_type]
        cross: dict[str, Counter] = {"child": Counter(), "adult": Counter()}
        for r in rows:
            group = "child" if r.is_child else "adult"
            cross[group].update((r.attributes or {}).get(by_type.by_attribute or "") or [])
        return {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "referrals": len(rows),
            "by_age_group": {
                "child": sum(1 for r in rows if r.is_child),
                "adult": sum(1 for r in rows if not r.is_child),
            },
            "by_age_group_and_type": {g: dict(c.most_common()) for g, c in cross.items()},
        }
