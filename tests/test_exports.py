"""Exports: CSV and Excel of the KPI report, the MARAC (SafeLives) and NRM returns and the
case list, with the same figures as the dashboard, for the allowed roles only, audited.

Every test runs on SQLite and on PostgreSQL (conftest's `backend`).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date

import openpyxl
import pytest
import sqlalchemy as sa
from conftest import AUDIT_KEY, SECRET

from referral_engine.errors import Forbidden, InvalidData
from referral_engine.reports.exports import (
    Table,
    flatten,
    to_csv,
    to_xlsx,
)
from referral_engine.settings import get_settings
from referral_engine.storage.models import AuditEvent

FROM, TO = date(2026, 11, 1), date(2026, 11, 30)
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def victim(n: int, **more):
    return {"given_name": ["Amy", "Beth", "Cara"][n], "family_name": "Price",
            "date_of_birth": f"198{n}-04-12", "gender": "female",
            "address": f"{n} Mill Lane", "postcode": "AB2 3CD", **more}  # fmt: skip


@pytest.fixture
def world(runtime, staff, refer, fire):
    """MASH referrals from a school and the police; two MARAC cases (one with two
    children at home); a child and an adult NRM referral."""
    from test_marac import dash

    refer("teacher")
    refer("constable", subject={"given_name": "Kai", "family_name": "Lee",
                                "date_of_birth": "2011-02-03"})  # fmt: skip
    household = [{"name": "Ruby Price", "age": 7}, {"name": "Tom Price", "age": 4},
                 {"name": "Ann Price", "age": 40}]  # fmt: skip
    for n, who, members in ((0, "constable", household), (1, "coordinator", [])):
        made = refer(
            who, pathway="marac", subject=victim(n, household=members),
            concerns=["domestic_abuse"], consent="not_sought", consent_reason="High risk",
            victim_aware=False, victim_aware_reason="Could alert the abuser", dash=dash(14),
        )  # fmt: skip
        fire(made["case_id"], "coordinator", "accept", {})
    for subject, types in (
        ({"given_name": "Ola", "family_name": "Nowak", "date_of_birth": "2010-01-01"},
         ["criminal", "sexual"]),
        ({"given_name": "Ivan", "family_name": "Petrov", "date_of_birth": "1990-01-01"},
         ["labour"]),
    ):  # fmt: skip
        made = refer("responder", pathway="nrm", concerns=["modern_slavery"], subject=subject)
        fire(made["case_id"], "responder", "submit_referral",
             {"exploitation_types": types, "consent": True})  # fmt: skip
    return staff


def csv_rows(content: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))


def xlsx_rows(content: bytes, sheet: str | None = None) -> list[list]:
    wb = openpyxl.load_workbook(io.BytesIO(content), read_only=True)
    ws = wb[sheet] if sheet else wb.worksheets[0]
    return [list(r) for r in ws.iter_rows(values_only=True)]


def exports_audited(runtime, action: str) -> list[dict]:
    with runtime.db.reading() as s:
        bodies = s.execute(
            sa.select(AuditEvent.body).where(AuditEvent.action == action).order_by(AuditEvent.id)
        ).scalars()
        return [json.loads(bytes(b)) for b in bodies]


def test_kpi_exports_carry_the_dashboards_figures(runtime, world):
    auditor = world["auditor"].actor
    kpis = runtime.reports.kpis(auditor, FROM, TO)
    expected = flatten(kpis)
    assert ["referrals_total", "", kpis["referrals_total"]] in expected
    assert kpis["referrals_total"] == 8 and kpis["marac_cases"] == 2

    got = runtime.exports.kpis(auditor, FROM, TO, "csv")
    rows = csv_rows(got.content)
    assert rows[0] == ["measure", "breakdown", "value"]
    assert rows[1:] == [[str(m), str(b), "" if v is None else str(v)] for m, b, v in expected]
    assert got.rows == len(expected) and got.filename == "kpis_2026-11-01_2026-11-30.csv"

    book = runtime.exports.kpis(auditor, FROM, TO, "xlsx")
    assert book.media_type == XLSX
    sheet = xlsx_rows(book.content, "KPIs")
    assert sheet[0] == ["measure", "breakdown", "value"]
    assert sheet[1:] == [[m, b or None, v] for m, b, v in expected]

    audited = exports_audited(runtime, "api:export:kpis")
    assert [a["summary"]["format"] for a in audited] == ["csv", "xlsx"]
    assert audited[0]["summary"]["filters"] == {"from": "2026-11-01", "to": "2026-11-30"}
    assert audited[0]["summary"]["rows"] == len(expected)
    assert audited[0]["actor"]["username"] == "auditor"


def test_marac_return_in_the_safelives_shape(runtime, world):
    coordinator = world["coordinator"].actor
    kpis = runtime.reports.kpis(coordinator, FROM, TO)
    ret = runtime.exports.marac_return(coordinator, FROM, TO)
    assert ret["cases"] == kpis["marac_cases"] == 2
    assert ret["repeat_pct"] == kpis["marac_repeat_pct"]
    assert ret["children_in_households"] == 2  # Ruby and Tom; Ann is an adult
    assert ret["referrals_by_agency"] == {"police": 1, "local_authority": 1}
    assert ret["referrals_from_other_agencies"] * 100 / ret["cases"] == kpis["marac_non_police_pct"]
    book = runtime.exports.marac(coordinator, FROM, TO, "xlsx")
    summary = dict(xlsx_rows(book.content, "MARAC return")[1:])
    assert summary["cases"] == 2 and summary["children_in_households"] == 2
    agencies = xlsx_rows(book.content, "Referrals by agency")
    assert agencies[0] == ["agency_kind", "agency", "referrals"]
    assert {r[0]: r[2] for r in agencies[1:]} == {"police": 1, "local_authority": 1}


def test_nrm_return_by_age_group_and_exploitation_type(runtime, world):
    responder = world["responder"].actor
    auditor = world["auditor"].actor
    kpis = runtime.reports.kpis(auditor, FROM, TO)
    ret = runtime.exports.nrm_return(responder, FROM, TO)
    assert ret["by_age_group"] == kpis["nrm_referrals_by_age_group"] == {"child": 1, "adult": 1}
    assert ret["by_age_group_and_type"] == {
        "child": {"criminal": 1, "sexual": 1}, "adult": {"labour": 1},
    }  # fmt: skip
    totals: dict[str, int] = {}
    for row in ret["by_age_group_and_type"].values():
        for kind, n in row.items():
            totals[kind] = totals.get(kind, 0) + n
    assert totals == kpis["nrm_by_exploitation_type"]
    # The responder may see NRM cases but not the partnership's measures.
    with pytest.raises(Forbidden):
        runtime.exports.nrm(responder, FROM, TO, "csv")
    rows = csv_rows(runtime.exports.nrm(auditor, FROM, TO, "csv").content)
    assert rows == [["age_group", "referrals", "criminal", "labour", "sexual"],
                    ["child", "1", "1", "0", "1"], ["adult", "1", "0", "1", "0"]]  # fmt: skip


def test_exports_are_for_the_allowed_roles_only_and_refusals_are_audited(runtime, world):
    teacher, officer = world["teacher"].actor, world["officer"].actor
    with pytest.raises(Forbidden):
        runtime.exports.kpis(teacher, FROM, TO, "csv")
    with pytest.raises(Forbidden):
        runtime.exports.cases(officer, "csv")
    with pytest.raises(Forbidden):  # a MASH manager may not see MARAC cases
        runtime.exports.marac(world["manager"].actor, FROM, TO, "csv")
    with pytest.raises(InvalidData) as bad:
        runtime.exports.kpis(world["auditor"].actor, FROM, TO, "pdf")
    assert bad.value.errors[0].field == "format"
    refused = exports_audited(runtime, "api:export:kpis")
    assert [a["outcome"] for a in refused] == ["refused", "refused"]
    assert exports_audited(runtime, "api:export:cases")[0]["outcome"] == "refused"


def test_case_export_is_the_case_list_the_caller_sees(runtime, world):
    manager = world["manager"].actor
    listed = runtime.cases.queue(manager, limit=200)
    got = runtime.exports.cases(manager, "xlsx")
    sheet = xlsx_rows(got.content, "Cases")
    # Headers and values as people read them, with the codes in columns of their own.
    assert sheet[0][:6] == ["Case", "Reference", "Pathway", "Pathway code", "State", "State code"]
    assert [r[0] for r in sheet[1:]] == [i["id"] for i in listed["items"]]
    assert {r[3] for r in sheet[1:]} == {"mash"}  # no MARAC or NRM cases for a MASH manager
    assert {r[2] for r in sheet[1:]} == {"MASH front door"}
    row = dict(zip(sheet[0], sheet[1], strict=True))
    assert row["State"] == "Received" and row["Concerns"] == "Neglect"
    assert row["Concern codes"] == "neglect" and row["Overdue"] in ("Yes", "No")
    assert row["Date of birth"] == "1 May 2012" and row["Opened"].startswith("25 November 2026, ")
    assert got.rows == listed["total"]
    (audit,) = exports_audited(runtime, "api:export:cases")
    assert audit["summary"]["rows"] == listed["total"] and audit["summary"]["format"] == "xlsx"
    only_marac = runtime.exports.cases(world["coordinator"].actor, "csv", pathway="marac")
    rows = csv_rows(only_marac.content)
    assert [r[3] for r in rows[1:]] == ["marac"] * 2


def test_text_that_looks_like_a_formula_is_never_a_formula():
    table = Table("t", ["name"], [['=HYPERLINK("http://x")'], ["@SUM(A1)"], ["plain"], [-3]])
    assert csv_rows(to_csv([table]))[1:] == [
        ["'=HYPERLINK(\"http://x\")"], ["'@SUM(A1)"], ["plain"], ["-3"],
    ]  # fmt: skip
    cells = xlsx_rows(to_xlsx([table]))
    assert cells[1:] == [['\'=HYPERLINK("http://x")'], ["'@SUM(A1)"], ["plain"], [-3]]


def test_api_and_dashboard_downloads(runtime, world, users, browser_for):
    auditor = users["auditor"]
    params = {"from": FROM.isoformat(), "to": TO.isoformat()}
    kpis = auditor.get("/api/reports/kpis", params=params).json()
    r = auditor.get("/api/exports/kpis.xlsx", params=params)
    assert r.status_code == 200 and r.headers["content-type"] == XLSX
    assert 'filename="kpis_2026-11-01_2026-11-30.xlsx"' in r.headers["content-disposition"]
    values = {(m, b): v for m, b, v in xlsx_rows(r.content)[1:]}
    assert values[("referrals_total", None)] == kpis["referrals_total"]
    assert values[("marac_cases", None)] == kpis["marac_cases"]
    assert users["teacher"].get("/api/exports/kpis.csv", params=params).status_code == 403
    assert auditor.get("/api/exports/kpis.pdf", params=params).status_code == 422
    cases = auditor.get("/api/exports/cases/list.csv")
    assert cases.status_code == 200 and int(cases.headers["x-row-count"]) > 0

    page = browser_for("coordinator")
    queue = page.get("/queue", params={"pathway": "marac"})
    assert "/exports/cases.xlsx?pathway=marac" in queue.text
    listed = page.get("/exports/cases.xlsx", params={"pathway": "marac"})
    assert [r[3] for r in xlsx_rows(listed.content)[1:]] == ["marac", "marac"]
    assert "/exports/cases" not in browser_for("officer").get("/queue").text
    board = page.get("/dashboard", params=params)
    link = "/exports/kpis.csv?from=2026-11-01&amp;to=2026-11-30"
    assert link in board.text and "/exports/marac.xlsx" in board.text
    got = page.get(link.replace("&amp;", "&"))
    assert got.status_code == 200
    rows = {(m, b): v for m, b, v in csv_rows(got.content)[1:]}
    mine = runtime.reports.kpis(world["coordinator"].actor, FROM, TO)
    assert rows[("marac_cases", "")] == str(mine["marac_cases"])


def test_cli_writes_a_spreadsheet_that_opens(runtime, world, settings, tmp_path, monkeypatch):
    from referral_engine.cli.main import main

    for name, value in (("DATABASE_URL", settings.database_url),
                        ("REFERRAL_ENGINE_SECRET_KEY", SECRET),
                        ("REFERRAL_ENGINE_AUDIT_KEY", AUDIT_KEY)):  # fmt: skip
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        out = tmp_path / "kpis.xlsx"
        code = main(["export", "kpis", "--from", "2026-11-01", "--to", "2026-11-30",
                     "--format", "xlsx", "--output", str(out)])  # fmt: skip
        assert code == 0
        kpis = runtime.reports.kpis(world["auditor"].actor, FROM, TO)
        values = {(m, b): v for m, b, v in xlsx_rows(out.read_bytes())[1:]}
        assert values[("referrals_total", None)] == kpis["referrals_total"]
        assert values[("nrm_referrals_by_age_group", "child")] == 1
        code = main(["export", "kpis", "--from", "2026-11-01", "--to", "2026-11-30",
                     "--as", "teacher", "--output", str(tmp_path / "no.csv")])  # fmt: skip
        assert code == 1  # a practitioner may not
    finally:
        get_settings.cache_clear()
    assert exports_audited(runtime, "cli:export:kpis")[0]["summary"]["rows"] > 0


def test_a_case_export_longer_than_any_page_or_cap_is_complete(runtime, staff, refer, monkeypatch):
    """Exports walk every case by id (keyset pages), so the queue's count cap and its page
    size never cut them short, and the audit row records the true number of rows. The cap
    and the page are shrunk to 3 and 2 so that 7 cases cross both."""
    from referral_engine.casework import cases as case_reads
    from referral_engine.reports import exports as export_module

    monkeypatch.setattr(case_reads, "COUNT_CAP", 3)
    monkeypatch.setattr(export_module, "MAX_PAGE", 2)
    made = [refer("teacher", subject={"given_name": f"Child{n}", "family_name": "Ng",
                                      "date_of_birth": "2012-01-01"})["case_id"]
            for n in range(7)]  # fmt: skip
    manager = staff["manager"].actor
    assert runtime.cases.queue(manager, limit=50)["total_capped"] is True
    got = runtime.exports.cases(manager, "csv")
    rows = csv_rows(got.content)
    assert sorted(int(r[0]) for r in rows[1:]) == sorted(made)
    assert got.rows == 7
    (audit,) = exports_audited(runtime, "api:export:cases")
    assert audit["summary"]["rows"] == 7
