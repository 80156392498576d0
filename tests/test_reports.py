"""The partnership's measures: counted through the same visibility as every list."""

from datetime import timedelta

STEPS = [
    ("officer", "screen", {"rag": "green", "rationale": "r"}),
    ("officer", "refer_for_decision", {"rationale": "r"}),
    ("manager", "decide", {"outcome": "early_help", "onward": [], "rationale": "r",
                           "feedback_to_referrer": "f"}),
]  # fmt: skip


def test_mash_kpis_count_referrals_and_decisions_in_time(runtime, refer, fire, staff, clock):
    concerns = ["neglect", "emotional_abuse"]
    in_time, late = refer(concerns=concerns)["case_id"], refer(concerns=concerns)["case_id"]
    for who, event, data in STEPS:
        fire(in_time, who, event, data)
    clock.advance(timedelta(days=3))
    for who, event, data in STEPS:
        fire(late, who, event, {**data, "late_reason": "waiting for a police check"})
    k = runtime.reports.kpis(staff["manager"].actor, clock.now().date().replace(day=1),
                             clock.now().date())  # fmt: skip
    assert k["referrals_total"] == 2
    assert k["referrals_by_source_agency"] == {"education": 2}
    assert k["referrals_by_concern"] == {"neglect": 2, "emotional_abuse": 2}
    assert k["mash_decisions"] == 2
    assert k["mash_decided_within_1wd_pct"] == 50.0
    assert "channel_referrals" not in k  # a MASH manager may not see Channel


def test_kpis_over_http_need_permission_and_a_sane_range(users, refer):
    refer()
    ok = users["auditor"].get(
        "/api/reports/kpis", params={"from": "2026-11-01", "to": "2026-11-30"}
    )
    assert ok.status_code == 200 and ok.json()["referrals_total"] == 1
    before = users["auditor"].get(
        "/api/reports/kpis", params={"from": "2026-10-01", "to": "2026-10-31"}
    )
    assert before.json()["referrals_total"] == 0
    assert (
        users["teacher"]
        .get("/api/reports/kpis", params={"from": "2026-01-01", "to": "2026-12-31"})
        .status_code
        == 403
    )
    r = users["auditor"].get("/api/reports/kpis", params={"from": "2026-12-01", "to": "2026-01-01"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "to"
