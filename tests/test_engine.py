"""The one path for change, `Engine.fire`: all or nothing, deadlines, the outbox, shared
machines, versioned definitions, optimistic concurrency and `tick`.

Each test runs on SQLite and on PostgreSQL (the `runtime` fixture).
"""

from __future__ import annotations

import shutil
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import START, add_user, make_settings, referral_body

from referral_engine.errors import InvalidData, NotValidNow, StaleVersion
from referral_engine.runtime import Runtime
from referral_engine.settings import PROJECT_ROOT
from referral_engine.storage.models import (
    AuditEvent,
    Case,
    CaseHistory,
    Deadline,
    Outbox,
    Referral,
    WorkflowVersion,
)

# The lawful basis and recipient each information request and answer records.
ASKED = {"lawful_basis": "safeguarding", "recipient": "Partner agency leads"}
ANSWERED = {"lawful_basis": "safeguarding", "recipient": "MASH duty desk"}

# Wednesday 25 November 2026 10:00 GMT (START) + one working day.
NEXT_WORKING_DAY = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
DECIDE = {
    "outcome": "early_help",
    "onward": [],
    "rationale": "Family agree to early help.",
    "feedback_to_referrer": "Early help offered.",
}


# --- helpers ---------------------------------------------------------------------------


def rows(rt: Runtime, model: Any, *where: Any) -> list[dict[str, Any]]:
    table = model.__table__
    query = sa.select(table).where(*where).order_by(*table.primary_key.columns)
    with rt.db.reading() as s:
        return [dict(r._mapping) for r in s.connection().execute(query)]


def world(rt: Runtime) -> dict[str, list[dict[str, Any]]]:
    """Everything a change of a case may write, except the audit log."""
    return {m.__tablename__: rows(rt, m) for m in (Case, Deadline, CaseHistory, Outbox, Referral)}


def case_row(rt: Runtime, case_id: int) -> dict[str, Any]:
    (row,) = rows(rt, Case, Case.id == case_id)
    return row


def deadlines(rt: Runtime, case_id: int, name: str | None = None) -> list[dict[str, Any]]:
    where = [Deadline.case_id == case_id]
    if name:
        where.append(Deadline.name == name)
    return rows(rt, Deadline, *where)


def audit_rows(rt: Runtime, **match: Any) -> list[dict[str, Any]]:
    where = [getattr(AuditEvent, k) == v for k, v in match.items()]
    return rows(rt, AuditEvent, *where)


def to_decision(fire, case_id: int, rag: str = "amber") -> None:
    fire(case_id, "officer", "screen", {"rag": rag, "rationale": "Worried"})
    fire(case_id, "officer", "refer_for_decision", {"rationale": "Enough is known"})


def workflows_copy(tmp_path: Path, name: str, edits: list[tuple[str, str]] = ()) -> Path:
    """A copy of workflows/ with `mash.yaml` edited: each (anchor, text) inserts text
    right after the anchor line (which must occur exactly once)."""
    directory = tmp_path / name
    shutil.copytree(PROJECT_ROOT / "workflows", directory)
    path = directory / "mash.yaml"
    text = path.read_text(encoding="utf-8")
    for anchor, insert in edits:
        assert text.count(anchor) == 1, anchor
        text = text.replace(anchor, anchor + insert)
    path.write_text(text, encoding="utf-8")
    return directory


@pytest.fixture
def another_runtime(runtime, clock):
    """Build more Runtimes on the same database (e.g. after the YAML changed)."""
    built: list[Runtime] = []

    def build(workflows_dir: Path) -> Runtime:
        settings = make_settings(runtime.settings.database_url, workflows_dir=workflows_dir)
        rt = Runtime.build(settings, clock)
        rt.start()
        built.append(rt)
        return rt

    yield build
    for rt in built:
        rt.stop()


# --- all or nothing --------------------------------------------------------------------


def test_refused_event_leaves_everything_as_it_was(runtime, refer, fire, staff):
    case_id = refer()["case_id"]
    fire(case_id, "officer", "screen", {"rag": "amber", "rationale": "Worried"})
    before = world(runtime)
    with pytest.raises(InvalidData) as exc:
        fire(
            case_id,
            "officer",
            "request_checks",
            {
                "agencies": ["police", "aliens"],
                "lawful_basis": "safeguarding",
                "recipient": "Partner agency leads",
            },
        )
    assert any(e.field.startswith("agencies") for e in exc.value.errors)
    with pytest.raises(StaleVersion):
        runtime.engine.fire(case_id, "refer_for_decision", staff["officer"].actor,
                            {"rationale": "r"}, 1)  # fmt: skip
    with pytest.raises(NotValidNow):
        fire(case_id, "officer", "complete_checks", {})
    assert world(runtime) == before
    refused = audit_rows(runtime, case_id=case_id, outcome="refused")
    assert [r["action"] for r in refused] == [
        "api:case:request_checks", "api:case:refer_for_decision", "api:case:complete_checks",
    ]  # fmt: skip
    assert runtime.verify_audit().ok


def test_decide_onto_an_undefined_pathway_is_refused_and_writes_nothing(
    runtime, another_runtime, refer, staff, tmp_path
):
    # An installation with the MASH pathway only: `marac` is a valid onward choice in
    # policies/reference.yaml but no such pathway is set up.
    directory = tmp_path / "mash_only"
    directory.mkdir()
    shutil.copy(PROJECT_ROOT / "workflows" / "mash.yaml", directory / "mash.yaml")
    rt = another_runtime(directory)
    assert "marac" not in rt.workflows.pathways
    case_id = refer()["case_id"]
    manager = staff["manager"].actor
    rt.engine.fire(case_id, "screen", staff["officer"].actor, {"rag": "red", "rationale": "r"}, 1)
    rt.engine.fire(case_id, "refer_for_decision", manager, {"rationale": "r"}, 2)
    before, cases_before = world(rt), len(rows(rt, Case))
    with pytest.raises(InvalidData) as exc:
        rt.engine.fire(case_id, "decide", manager, {**DECIDE, "onward": ["marac"]}, 3)
    assert [e.field for e in exc.value.errors] == ["onward"]
    assert exc.value.status == 422
    after = world(rt)
    assert after == before
    assert len(rows(rt, Case)) == cases_before  # no linked case
    assert case_row(rt, case_id)["version"] == 3 and case_row(rt, case_id)["state"] == (
        "decision_pending"
    )
    assert rows(rt, Outbox, Outbox.kind == "referral_outcome") == []
    assert [d["status"] for d in deadlines(rt, case_id, "decision")] == ["open"]
    (refusal,) = audit_rows(rt, case_id=case_id, outcome="refused")
    assert refusal["action"] == "api:case:decide"
    assert rt.verify_audit().ok


def test_an_effect_failing_after_the_case_row_was_written_rolls_it_all_back(
    runtime, refer, fire, staff, monkeypatch
):
    case_id = refer()["case_id"]
    to_decision(fire, case_id)
    before = world(runtime)
    allowed_before = len(audit_rows(runtime, outcome="allowed"))
    real_enqueue = runtime.outbox.enqueue

    def failing_enqueue(s, **kw):
        if kw["kind"] == "referral_outcome":
            raise RuntimeError("the notification store is down")
        return real_enqueue(s, **kw)

    # The referrer is told last: by then the case row, the deadline and the referral
    # have been written in this transaction.
    monkeypatch.setattr(runtime.outbox, "enqueue", failing_enqueue)
    with pytest.raises(RuntimeError, match="notification store"):
        fire(case_id, "manager", "decide", DECIDE)
    assert world(runtime) == before
    assert len(audit_rows(runtime, outcome="allowed")) == allowed_before
    monkeypatch.undo()
    fire(case_id, "manager", "decide", DECIDE)  # and the same change then goes through
    assert case_row(runtime, case_id)["state"] == "closed"
    assert runtime.verify_audit().ok


# --- deadlines -------------------------------------------------------------------------


def test_a_new_referral_is_due_for_decision_one_working_day_after_receipt(runtime, refer):
    case_id = refer()["case_id"]
    (d,) = deadlines(runtime, case_id)
    assert (d["name"], d["status"], d["due_at"]) == ("decision", "open", NEXT_WORKING_DAY)
    assert case_row(runtime, case_id)["due_at"] == NEXT_WORKING_DAY


@pytest.mark.parametrize("screened_after", [timedelta(0), timedelta(hours=3)])
def test_red_screening_brings_the_decision_forward_to_four_hours_after_receipt(
    runtime, refer, fire, clock, screened_after
):
    case_id = refer()["case_id"]
    clock.advance(screened_after)
    fire(case_id, "officer", "screen", {"rag": "red", "rationale": "Immediate risk"})
    red_due = START + timedelta(hours=4)  # from receipt, not from the screening
    (d,) = deadlines(runtime, case_id, "decision")
    assert (d["status"], d["due_at"]) == ("open", red_due)
    case = case_row(runtime, case_id)
    assert (case["rag"], case["priority"], case["due_at"]) == ("red", 0, red_due)


@pytest.mark.parametrize("rag", ["amber", "green"])
def test_amber_and_green_keep_one_working_day(runtime, refer, fire, rag):
    case_id = refer()["case_id"]
    fire(case_id, "officer", "screen", {"rag": rag, "rationale": "Some concern"})
    (d,) = deadlines(runtime, case_id, "decision")
    assert (d["status"], d["due_at"]) == ("open", NEXT_WORKING_DAY)
    case = case_row(runtime, case_id)
    assert (case["rag"], case["priority"], case["due_at"]) == (rag, 1, NEXT_WORKING_DAY)


def test_red_on_a_friday_evening_counts_hours_not_working_days(runtime, refer, fire, clock):
    clock.advance(timedelta(days=2, hours=8))  # Friday 27 November, 18:00
    case_id = refer()["case_id"]
    (d,) = deadlines(runtime, case_id, "decision")
    assert d["due_at"] == datetime(2026, 11, 30, 18, 0, tzinfo=UTC)  # Monday
    fire(case_id, "officer", "screen", {"rag": "red", "rationale": "Immediate risk"})
    (d,) = deadlines(runtime, case_id, "decision")
    assert d["due_at"] == datetime(2026, 11, 27, 22, 0, tzinfo=UTC)


def test_decision_on_time_meets_the_deadline(runtime, refer, fire, clock):
    case_id = refer()["case_id"]
    to_decision(fire, case_id)
    clock.advance(timedelta(hours=23))
    fire(case_id, "manager", "decide", DECIDE)
    (d,) = deadlines(runtime, case_id, "decision")
    assert (d["status"], d["met_at"], d["late_reason"]) == ("met", clock.now(), None)
    case = case_row(runtime, case_id)
    assert case["closed"] and case["closed_at"] == clock.now() and case["due_at"] is None


def test_a_late_decision_needs_a_reason_which_is_recorded(runtime, refer, fire, clock):
    case_id = refer()["case_id"]
    to_decision(fire, case_id)
    clock.advance(timedelta(days=1, minutes=1))  # one minute past the deadline
    before = world(runtime)
    with pytest.raises(InvalidData) as exc:
        fire(case_id, "manager", "decide", DECIDE)
    assert [e.field for e in exc.value.errors] == ["late_reason"]
    assert exc.value.status == 422
    assert world(runtime) == before
    with pytest.raises(InvalidData) as exc:  # a blank reason is no reason
        fire(case_id, "manager", "decide", {**DECIDE, "late_reason": ""})
    assert [e.field for e in exc.value.errors] == ["late_reason"]
    assert world(runtime) == before

    fire(case_id, "manager", "decide", {**DECIDE, "late_reason": "Waiting for a police check"})
    (d,) = deadlines(runtime, case_id, "decision")
    assert d["status"] == "met"
    assert d["late_reason"] == "Waiting for a police check"
    assert d["met_at"] == clock.now() > d["due_at"]
    assert case_row(runtime, case_id)["state"] == "closed"


def test_a_decision_after_a_breach_keeps_the_breach_on_record(runtime, refer, fire, clock):
    case_id = refer()["case_id"]
    to_decision(fire, case_id)
    clock.advance(timedelta(days=1, hours=1))
    assert runtime.scheduler.tick().breached
    breached_at = clock.now()
    clock.advance(timedelta(hours=1))
    with pytest.raises(InvalidData) as exc:
        fire(case_id, "manager", "decide", DECIDE)
    assert [e.field for e in exc.value.errors] == ["late_reason"]
    fire(case_id, "manager", "decide", {**DECIDE, "late_reason": "Manager off sick"})
    (d,) = deadlines(runtime, case_id, "decision")
    assert d["breached_at"] == breached_at
    assert d["late_reason"] == "Manager off sick"
    assert d["met_at"] == clock.now()
    assert d["status"] not in ("open", "breached")


def test_closing_a_case_cancels_what_it_no_longer_owes(runtime, another_runtime, staff, tmp_path):
    # A partnership adds a reminder deadline to MASH: a closed case owes it no more.
    directory = workflows_copy(
        tmp_path,
        "with_reminder",
        [("on_open:\n", "  - set_deadline: {name: first_contact, sla: mash_decision,"
                        " start: received, on_due: remind}\n")],
    )  # fmt: skip
    rt = another_runtime(directory)
    body = referral_body()
    case_id = rt.referrals.create(staff["teacher"].actor, body)["case_id"]
    assert {d["name"]: d["status"] for d in deadlines(rt, case_id)} == {
        "decision": "open", "first_contact": "open",
    }  # fmt: skip
    officer, manager = staff["officer"].actor, staff["manager"].actor
    rt.engine.fire(case_id, "screen", officer, {"rag": "red", "rationale": "r"}, 1)
    rt.engine.fire(case_id, "refer_for_decision", officer, {"rationale": "r"}, 2)
    rt.engine.fire(case_id, "decide", manager, {**DECIDE, "outcome": "strategy_discussion"}, 3)
    status = {d["name"]: d["status"] for d in deadlines(rt, case_id)}
    # Met: the decision. Cancelled: the reminder. Set by the decision itself and still
    # owed (shown on the case): the initial child protection conference timescale.
    assert status == {
        "decision": "met",
        "first_contact": "cancelled",
        "initial_child_protection_conference": "open",
    }
    case = case_row(rt, case_id)
    assert case["closed"] and case["state"] == "closed"
    assert case["due_at"] is None  # nothing it owes escalates any more


# --- the outbox ------------------------------------------------------------------------


def test_the_referrer_is_told_of_receipt_and_of_the_outcome(runtime, refer, fire, staff):
    created = refer()
    case_id, referral_id = created["case_id"], created["id"]
    teacher = staff["teacher"].user_id
    received = rows(runtime, Outbox)
    assert [(o["kind"], o["recipient_user_id"], o["referral_id"]) for o in received] == [
        ("referral_received", teacher, referral_id)
    ]
    to_decision(fire, case_id)
    assert rows(runtime, Outbox) == received  # working the case tells the referrer nothing
    fire(case_id, "manager", "decide", DECIDE)
    (outcome,) = rows(runtime, Outbox, Outbox.kind == "referral_outcome")
    assert outcome["recipient_user_id"] == teacher
    assert (outcome["case_id"], outcome["referral_id"]) == (case_id, referral_id)
    assert outcome["payload"]["outcome"] == "early_help"
    assert outcome["payload"]["feedback"] == DECIDE["feedback_to_referrer"]
    # The outcome, not the MASH's reasoning.
    assert DECIDE["rationale"] not in str(outcome["payload"])
    assert len(rows(runtime, Outbox)) == 2
    (referral,) = rows(runtime, Referral, Referral.id == referral_id)
    assert referral["outcome"] == "early_help"


# --- one machine per definition --------------------------------------------------------


def test_one_machine_per_definition_shared_by_all_cases(runtime, refer, fire, monkeypatch):
    import transitions.core

    wf = runtime.workflows.get("mash")
    machine = wf.machine
    assert machine.models == []

    def no_new_machines(*args, **kwargs):
        raise AssertionError("a transitions Machine was built while firing an event")

    cases = [refer()["case_id"] for _ in range(3)]
    monkeypatch.setattr(transitions.core.Machine, "__init__", no_new_machines)
    for case_id in cases:
        to_decision(fire, case_id)
    fire(cases[0], "manager", "decide", DECIDE)
    with runtime.db.reading() as s:
        versions = {case_row(runtime, c)["workflow_version"] for c in cases}
        assert versions == {wf.version}
        assert runtime.engine.workflow_for(s, wf.version) is wf
    assert runtime.workflows.get("mash") is wf and wf.machine is machine
    assert machine.models == []
    assert [case_row(runtime, c)["state"] for c in cases] == [
        "closed", "decision_pending", "decision_pending",
    ]  # fmt: skip


# --- versions of a definition ----------------------------------------------------------


def test_a_case_keeps_running_on_its_workflow_version(runtime, another_runtime, staff, tmp_path):
    v1 = runtime.workflows.get("mash").version
    teacher, officer = staff["teacher"].actor, staff["officer"].actor
    old_case = runtime.referrals.create(teacher, referral_body())["case_id"]

    # The partnership adds a "hold" state to MASH.
    directory = workflows_copy(
        tmp_path,
        "with_hold",
        [
            ("states:\n", "  on_hold:\n    label: On hold\n"),
            ("events:\n",
             "  hold:\n    label: Put on hold\n    from: [screening]\n    to: on_hold\n"
             "    permission: mash:case:screen\n"
             "  take_off_hold:\n    label: Take off hold\n    from: [on_hold]\n    to: screening\n"
             "    permission: mash:case:screen\n"),
        ],
    )  # fmt: skip
    rt2 = another_runtime(directory)
    v2 = rt2.workflows.get("mash").version
    assert v2 != v1
    new_case = rt2.referrals.create(teacher, referral_body())["case_id"]
    assert case_row(rt2, old_case)["workflow_version"] == v1
    assert case_row(rt2, new_case)["workflow_version"] == v2
    assert {r["version"] for r in rows(rt2, WorkflowVersion)} >= {v1, v2}

    # The old case, worked by the new installation, still runs on the old definition ...
    rt2.engine.fire(old_case, "screen", officer, {"rag": "amber", "rationale": "r"}, 1)
    with pytest.raises(NotValidNow):
        rt2.engine.fire(old_case, "hold", officer, {}, 2)
    with rt2.db.reading() as s:
        row = s.get(Case, old_case)
        assert "hold" not in rt2.engine.available_events(s, officer, row)
        assert rt2.engine.workflow_for(s, v1).definition.states.keys() == (
            runtime.workflows.get("mash").definition.states.keys()
        )
    assert case_row(rt2, old_case)["state"] == "screening"
    assert case_row(rt2, old_case)["workflow_version"] == v1

    # ... and the new case on the new one, wherever it is worked.
    rt2.engine.fire(new_case, "screen", officer, {"rag": "amber", "rationale": "r"}, 1)
    rt2.engine.fire(new_case, "hold", officer, {}, 2)
    assert case_row(rt2, new_case)["state"] == "on_hold"
    runtime.engine.fire(new_case, "take_off_hold", officer, {}, 3)  # the old installation too
    assert case_row(runtime, new_case)["state"] == "screening"
    with pytest.raises(NotValidNow):
        runtime.engine.fire(old_case, "hold", officer, {}, 2)
    assert runtime.verify_audit().ok


# --- concurrency -----------------------------------------------------------------------


@pytest.mark.parametrize("threads", [8])
def test_concurrent_fires_at_the_same_version_exactly_one_wins(runtime, refer, staff, threads):
    case_id = refer()["case_id"]
    officer = staff["officer"].actor
    rags = ["red", "amber", "green"]
    barrier = threading.Barrier(threads)
    results: list[Any] = [None] * threads

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            results[i] = runtime.engine.fire(
                case_id, "screen", officer, {"rag": rags[i % 3], "rationale": f"by {i}"}, 1
            )
        except Exception as exc:
            results[i] = exc

    workers = [threading.Thread(target=attempt, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert not any(w.is_alive() for w in workers)
    won = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
    lost = [r for r in results if isinstance(r, Exception)]
    assert len(won) == 1, results
    assert all(isinstance(r, StaleVersion) for r in lost), lost
    assert len(lost) == threads - 1

    case = case_row(runtime, case_id)
    assert (case["version"], case["state"]) == (2, "screening")
    assert case["rag"] == rags[won[0] % 3]
    history = rows(runtime, CaseHistory, CaseHistory.case_id == case_id)
    assert [(h["version"], h["event"]) for h in history] == [(1, "open"), (2, "screen")]
    assert history[1]["data"]["rationale"] == f"by {won[0]}"
    refused = audit_rows(runtime, case_id=case_id, outcome="refused")
    assert len(refused) == threads - 1
    assert runtime.verify_audit().ok


# --- tick ------------------------------------------------------------------------------


def test_tick_breaches_a_passed_deadline_and_tells_managers_once(
    runtime, refer, fire, staff, clock
):
    second_manager = add_user(runtime, "manager2", ["mash_manager"], "City MASH",
                              "children_social_care")  # fmt: skip
    late = refer()["case_id"]
    decided = refer()["case_id"]
    to_decision(fire, decided)
    fire(decided, "manager", "decide", DECIDE)

    clock.advance(timedelta(days=1) - timedelta(minutes=1))  # a minute before it is due
    result = runtime.scheduler.tick()
    assert result.breached == [] and rows(runtime, Outbox, Outbox.kind == "deadline_breached") == []

    clock.advance(timedelta(minutes=2))
    result = runtime.scheduler.tick()
    (d,) = deadlines(runtime, late, "decision")
    assert result.breached == [d["id"]]
    assert (d["status"], d["breached_at"]) == ("breached", clock.now())
    notices = rows(runtime, Outbox, Outbox.kind == "deadline_breached")
    assert sorted(n["recipient_user_id"] for n in notices) == sorted(
        [staff["manager"].user_id, second_manager.user_id]
    )
    assert {n["case_id"] for n in notices} == {late}
    assert [d["status"] for d in deadlines(runtime, decided, "decision")] == ["met"]
    assert len(audit_rows(runtime, action="tick:deadline:breach")) == 1

    everything = world(runtime)
    clock.advance(timedelta(hours=1))
    again = runtime.scheduler.tick()
    assert again.breached == [] and again.reminded == [] and again.fired == []
    assert world(runtime) == everything  # nobody is told again
    assert len(audit_rows(runtime, action="tick:deadline:breach")) == 1
    assert runtime.verify_audit().ok


def test_red_screening_after_a_breach_does_not_escalate_the_decision_twice(
    runtime, refer, fire, staff, clock
):
    """The decision deadline was missed and managers were told; a red rating given
    afterwards must not start a second decision deadline that is breached all over again."""
    case_id = refer()["case_id"]
    clock.advance(timedelta(days=1, hours=1))
    assert len(runtime.scheduler.tick().breached) == 1
    fire(case_id, "officer", "screen", {"rag": "red", "rationale": "Seen at last: urgent"})
    clock.advance(timedelta(hours=1))
    runtime.scheduler.tick()
    notices = rows(runtime, Outbox, Outbox.kind == "deadline_breached")
    owed = [d for d in deadlines(runtime, case_id, "decision") if d["status"] != "cancelled"]
    assert [n["recipient_user_id"] for n in notices] == [staff["manager"].user_id]
    assert len(owed) == 1, owed  # one decision deadline, not a second one


def test_a_deadline_is_breached_only_once_it_has_passed(runtime, refer, fire, clock):
    """At the due instant the case is still on time; a moment later tick escalates it."""
    case_id = refer()["case_id"]
    fire(case_id, "officer", "screen", {"rag": "red", "rationale": "threats to kill"})
    with runtime.db.reading() as s:
        due = s.execute(sa.select(Deadline.due_at).where(Deadline.case_id == case_id)).scalar_one()
    clock.at = due
    assert runtime.scheduler.tick().breached == []
    clock.at = due + timedelta(microseconds=1)
    assert len(runtime.scheduler.tick().breached) == 1
