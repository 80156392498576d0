"""Random sequences of MASH events, by random people, against `Engine.fire`.

A hypothesis state machine keeps a model of every case (state, version, history, the
decision deadline) written from DOMAIN.md, fires events with valid and invalid data,
current and stale versions, by people allowed to and not, moves the clock and runs
`tick`, and after every step checks that:

- each case's state is a state of the definition, and the one the model expects;
- the version rose by exactly one for an applied event and not at all for a refusal;
- a refused event changed nothing: the `cases`, `deadline`, `case_history`, `outbox`
  and `referral` tables are exactly as before, and it left one audit row, "refused";
- an applied event left one audit row, "allowed", and wrote what it should;
- `case_history` holds exactly the applied events, in order;
- the audit chain verifies.

Each run of the machine gets a fresh database (a copy of the migrated template), on
SQLite and, when REFERRAL_ENGINE_TEST_PG_URL is set, on PostgreSQL.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import START, _pg_admin, _pg_url, add_user, make_settings, referral_body
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from referral_engine.clock import FixedClock
from referral_engine.errors import (
    DomainError,
    Forbidden,
    InvalidData,
    NotFound,
    NotValidNow,
    StaleVersion,
)
from referral_engine.runtime import Runtime
from referral_engine.settings import PROJECT_ROOT
from referral_engine.storage.db import dispose_all
from referral_engine.storage.models import (
    AuditEvent,
    Case,
    CaseHistory,
    Deadline,
    Outbox,
    Referral,
)

# The lawful basis and recipient each information request and answer records.
ASKED = {"lawful_basis": "safeguarding", "recipient": "Partner agency leads"}
ANSWERED = {"lawful_basis": "safeguarding", "recipient": "MASH duty desk"}

# --- what DOMAIN.md says ---------------------------------------------------------------

# username -> (roles, agency, agency kind)
PEOPLE: dict[str, tuple[list[str], str, str]] = {
    "teacher": (["practitioner"], "Northgate Academy", "education"),
    "constable": (["practitioner"], "City Police", "police"),
    "officer": (["mash_officer"], "City MASH", "children_social_care"),
    "officer2": (["mash_officer"], "City MASH", "children_social_care"),
    "manager": (["mash_manager"], "City MASH", "children_social_care"),
    "dual": (["practitioner", "mash_officer"], "Northgate Academy", "education"),
    "coordinator": (["marac_coordinator"], "Community Safety", "local_authority"),
    "idva": (["idva"], "Safer Homes", "voluntary"),
    "auditor": (["auditor"], "Internal Audit", "local_authority"),
    "admin": (["admin"], "Council IT", "local_authority"),
}
# Who may see a MASH case at all (everyone else gets 404, as if it did not exist).
SEES_MASH = {"mash_officer", "mash_manager", "auditor"}
OFFICER_WORK = {"mash_officer", "mash_manager"}  # a manager may do what an officer may
MAY: dict[str, set[str]] = {
    "screen": OFFICER_WORK,
    "request_checks": OFFICER_WORK,
    "record_check": OFFICER_WORK,
    "complete_checks": OFFICER_WORK,
    "refer_for_decision": OFFICER_WORK,
    "decide": {"mash_manager"},
    "assign": {"mash_manager"},
}
WORKING = ["received", "screening", "information_gathering", "decision_pending"]
FROM: dict[str, set[str]] = {
    "screen": {"received"},
    "request_checks": {"screening"},
    "record_check": {"information_gathering"},
    "complete_checks": {"information_gathering"},
    "refer_for_decision": {"screening"},
    "decide": {"decision_pending"},
    "assign": set(WORKING),
}
TO: dict[str, str | None] = {  # None: stays where it is
    "screen": "screening",
    "request_checks": "information_gathering",
    "record_check": None,
    "complete_checks": "decision_pending",
    "refer_for_decision": "decision_pending",
    "decide": "closed",
    "assign": None,
}
UNKNOWN_EVENT = "close_quietly"
# Everyone, with MASH staff more often (most attempts by others stop at the first check).
ANYONE = [*PEOPLE, "officer", "officer", "manager", "manager", "manager", "dual"]
AGENCY_KINDS = ["police", "health", "education", "children_social_care", "adult_social_care",
                "probation", "housing", "voluntary", "local_authority", "other"]  # fmt: skip
OUTCOMES = ["no_further_action", "universal_services", "early_help",
            "child_in_need_assessment", "strategy_discussion", "adult_safeguarding_enquiry",
            "police_investigation"]  # fmt: skip
ADULT_ONLY = {"adult_safeguarding_enquiry"}
CHILD_ONLY = {"child_in_need_assessment", "strategy_discussion"}
# Deadlines a decision itself sets (shown on the closed case as reminders).
SET_BY_DECISION = {
    "child_in_need_assessment": "child_and_family_assessment",
    "strategy_discussion": "initial_child_protection_conference",
}
RED_HOURS = 4
CAN_BE_ASSIGNED = {"officer", "officer2", "manager", "dual"}  # hold mash:case:screen

# --- event data: (data, valid as far as the data alone can say) -------------------------

text = st.sampled_from(["Seen at school", "Bruising noted", "Told a teacher", "x"])


def _screen(only_valid: bool = False):
    valid = st.builds(lambda r, t: ({"rag": r, "rationale": t}, True),
                      st.sampled_from(["red", "amber", "green"]), text)  # fmt: skip
    if only_valid:
        return valid
    invalid = st.sampled_from([
        {"rag": "purple", "rationale": "x"},
        {"rag": "red"},
        {"rag": "amber", "rationale": "   "},
        {"rag": "green", "rationale": "x", "colour": "blue"},
        ["rag", "red"],
    ]).map(lambda d: (d, False))  # fmt: skip
    return st.one_of(valid, valid, invalid)


def _request_checks(only_valid: bool = False):
    valid = st.lists(st.sampled_from(AGENCY_KINDS), min_size=1, max_size=3).map(
        lambda a: ({"agencies": a, **ASKED}, True)
    )
    if only_valid:
        return valid
    invalid = st.sampled_from(
        [{"agencies": []}, {"agencies": ["police", "aliens"]}, {}, {"agencies": "police"}]
    ).map(lambda d: (d, False))
    return st.one_of(valid, valid, invalid)


def _record_check(only_valid: bool = False):
    valid = st.builds(
        lambda a, s, r: ({"agency": a, "summary": s, "risk_found": r, **ANSWERED}, True),
        st.sampled_from(AGENCY_KINDS), text, st.booleans(),
    )  # fmt: skip
    if only_valid:
        return valid
    invalid = st.sampled_from([
        {"agency": "police", "summary": "known to police"},
        {"agency": "aliens", "summary": "x", "risk_found": False, **ANSWERED},
        {"agency": "health", "summary": "", "risk_found": True, **ANSWERED},
        {"agency": "health", "summary": "x", "risk_found": "maybe"},
    ]).map(lambda d: (d, False))  # fmt: skip
    return st.one_of(valid, valid, invalid)


def _complete_checks(only_valid: bool = False):
    choices = [({}, True), ({"note": "All back"}, True), ({"agencies": ["police"]}, False)]
    return st.sampled_from(choices[:2] if only_valid else choices)


def _refer_for_decision(only_valid: bool = False):
    choices = [({"rationale": "Red: cannot wait"}, True), ({}, False), ({"rationale": ""}, False)]
    return st.sampled_from(choices[:1] if only_valid else choices)


@dataclass(frozen=True)
class Decision:
    """The ingredients of a `decide`; whether it is valid depends on the case."""

    outcome: str
    onward: list[str]
    rationale: bool
    feedback: bool
    s42: bool
    late_reason: bool

    def data(self) -> dict[str, Any]:
        d: dict[str, Any] = {"outcome": self.outcome, "onward": self.onward}
        if self.rationale:
            d["rationale"] = "Threshold met"
        if self.feedback:
            d["feedback_to_referrer"] = "Thank you; we have acted on this."
        if self.s42:
            d.update(s42_care_and_support_needs=True, s42_abuse_or_neglect=True,
                     s42_unable_to_protect=True)  # fmt: skip
        if self.late_reason:
            d["late_reason"] = "Waiting for a police check"
        return d

    def valid_for(self, is_child: bool, late: bool) -> bool:
        return (
            self.outcome in OUTCOMES
            and self.onward == []  # no other pathway is set up in this installation
            and self.rationale
            and self.feedback
            and (self.s42 or self.outcome not in ADULT_ONLY)
            and not (self.outcome in ADULT_ONLY and is_child)
            and not (self.outcome in CHILD_ONLY and not is_child)
            and (self.late_reason or not late)
        )


def _decide(only_valid: bool = False):
    if only_valid:  # valid but for a missing late reason when the decision is late
        return st.builds(
            Decision, outcome=st.sampled_from(OUTCOMES), onward=st.just([]),
            rationale=st.just(True), feedback=st.just(True), s42=st.just(True),
            late_reason=st.sampled_from([True, True, False]),
        )  # fmt: skip
    likely = st.sampled_from([True, True, True, False])  # mostly present
    return st.builds(
        Decision,
        outcome=st.sampled_from([*OUTCOMES, "made_up"]),
        onward=st.sampled_from([[], [], [], ["marac"]]),
        rationale=likely,
        feedback=likely,
        s42=st.booleans(),
        late_reason=st.booleans(),
    )


def _assign(only_valid: bool = False):
    users = sorted(CAN_BE_ASSIGNED) if only_valid else [*PEOPLE, "nobody"]
    return st.sampled_from(users).map(lambda u: ({"user": u}, u in CAN_BE_ASSIGNED))


MAKERS = {
    "screen": _screen,
    "request_checks": _request_checks,
    "record_check": _record_check,
    "complete_checks": _complete_checks,
    "refer_for_decision": _refer_for_decision,
    "decide": _decide,
    "assign": _assign,
}
DATA = {name: make() for name, make in MAKERS.items()} | {UNKNOWN_EVENT: st.just(({}, True))}
VALID_DATA = {name: make(only_valid=True) for name, make in MAKERS.items()}

# --- databases, one per run of the machine ---------------------------------------------


class Databases:
    def __init__(self, backend: str, template: Any, scratch: Path):
        self.backend, self.template, self.scratch = backend, template, scratch

    def create(self) -> str:
        name = f"re_sm_{uuid.uuid4().hex[:12]}"
        if self.backend == "sqlite":
            path = self.scratch / f"{name}.db"
            shutil.copyfile(self.template, path)
            return f"sqlite:///{path}"
        with _pg_admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return _pg_url(name)

    def drop(self, url: str) -> None:
        dispose_all()
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(sa.engine.make_url(url).database + suffix).unlink(missing_ok=True)
            return
        name = sa.engine.make_url(url).database
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- the model -------------------------------------------------------------------------


@dataclass
class ModelCase:
    id: int
    referrer_id: int
    is_child: bool
    received_at: datetime
    decision_due: datetime
    state: str = "received"
    version: int = 1
    rag: str | None = None
    assigned_to: int | None = None
    # (version, event, from_state, to_state, actor_id)
    history: list[tuple[int, str, str | None, str, int | None]] = field(default_factory=list)


TABLES = (Case, Deadline, CaseHistory, Outbox, Referral)


class MashMachine(RuleBasedStateMachine):
    def __init__(self, databases: Databases, workflows_dir: Path):
        super().__init__()
        self.databases = databases
        self.url = databases.create()
        self.clock = FixedClock(START)
        self.rt = Runtime.build(make_settings(self.url, workflows_dir=workflows_dir), self.clock)
        self.rt.start()
        self.wf_states = set(self.rt.workflows.get("mash").definition.states)
        self.people = {name: add_user(self.rt, name, *spec) for name, spec in PEOPLE.items()}
        self.roles = {name: set(spec[0]) for name, spec in PEOPLE.items()}
        self.managers = {
            p.user_id for n, p in self.people.items() if "mash_manager" in self.roles[n]
        }
        self.cases: list[ModelCase] = []
        self.audit_seen = self._max_audit_id()
        self.refer("teacher", True)

    def teardown(self) -> None:
        try:
            self.rt.stop()
        finally:
            self.databases.drop(self.url)

    # --- reading the database ----------------------------------------------------------

    def _rows(self, model: Any, *where: Any) -> list[dict[str, Any]]:
        table = model.__table__
        query = sa.select(table).where(*where).order_by(*table.primary_key.columns)
        with self.rt.db.reading() as s:
            return [dict(r._mapping) for r in s.connection().execute(query)]

    def _world(self) -> dict[str, list[dict[str, Any]]]:
        return {m.__tablename__: self._rows(m) for m in TABLES}

    def _max_audit_id(self) -> int:
        with self.rt.db.reading() as s:
            return s.execute(sa.select(sa.func.max(AuditEvent.id))).scalar_one() or 0

    def _new_audit(self) -> list[dict[str, Any]]:
        fresh = self._rows(AuditEvent, AuditEvent.id > self.audit_seen)
        self.audit_seen = max([self.audit_seen, *(r["id"] for r in fresh)])
        return fresh

    # --- rules ---------------------------------------------------------------------------

    @precondition(lambda self: len(self.cases) < 3)
    @rule(who=st.sampled_from(["teacher", "constable"]), child=st.booleans())
    def refer(self, who: str, child: bool) -> None:
        dob = "2012-05-01" if child else "1980-03-03"
        subject = {"given_name": "Sam", "family_name": f"Case{len(self.cases)}",
                   "date_of_birth": dob}  # fmt: skip
        made = self.rt.referrals.create(self.people[who].actor, referral_body(subject=subject))
        (d,) = self._rows(Deadline, Deadline.case_id == made["case_id"])
        assert d["name"] == "decision" and d["status"] == "open"
        now = self.clock.now()
        self.cases.append(
            ModelCase(
                id=made["case_id"], referrer_id=self.people[who].user_id, is_child=child,
                received_at=now, decision_due=d["due_at"],
                history=[(1, "open", None, "received", self.people[who].user_id)],
            )
        )  # fmt: skip
        assert d["due_at"] > now
        self._new_audit()

    @rule(hours=st.sampled_from([1, 3, 5, 20, 72]))
    def advance_clock(self, hours: int) -> None:
        self.clock.advance(timedelta(hours=hours))

    def _something_due(self) -> bool:
        with self.rt.db.reading() as s:
            query = sa.select(Deadline.id).where(
                Deadline.status == "open", Deadline.due_at < self.clock.now()
            )
            return s.execute(query.limit(1)).first() is not None

    @precondition(_something_due)
    @rule()
    def tick(self) -> None:
        now = self.clock.now()
        before = self._world()
        due = [d for d in before["deadline"] if d["status"] == "open" and d["due_at"] < now]
        # Escalating deadlines coming due soon are warned of, each once, in the same run.
        soon = now + timedelta(hours=self.rt.policy.rules.due_soon_hours)
        near = [d["id"] for d in before["deadline"]
                if d["status"] == "open" and d["on_due"] == "escalate"
                and d["warned_at"] is None and now <= d["due_at"] <= soon]  # fmt: skip
        result = self.rt.scheduler.tick()
        assert sorted(result.warned) == sorted(near)
        after = self._world()
        assert after["cases"] == before["cases"]
        assert after["case_history"] == before["case_history"]
        handled = sorted([*result.breached, *result.reminded])
        assert handled == sorted(d["id"] for d in due)
        by_id = {d["id"]: d for d in after["deadline"]}
        for d in due:
            want = "breached" if d["on_due"] == "escalate" else "reminded"
            assert by_id[d["id"]]["status"] == want
        assigned = {c["id"]: c["assigned_to_id"] for c in after["cases"]}
        notices = after["outbox"][len(before["outbox"]) :]
        assert len(self._new_audit()) == len(due) + len(near)
        for d in due:
            kind = "deadline_breached" if d["on_due"] == "escalate" else "deadline_reminder"
            told = {n["recipient_user_id"] for n in notices
                    if n["kind"] == kind and n["payload"]["deadline"] == d["name"]
                    and n["case_id"] == d["case_id"]}  # fmt: skip
            assert told == self.managers | ({assigned[d["case_id"]]} - {None})
        # A second run finds nothing to do and tells nobody again.
        again = self.rt.scheduler.tick()
        assert (again.breached, again.reminded, again.fired, again.warned) == ([], [], [], [])
        assert self._world() == after
        assert self._new_audit() == []

    @rule(
        index=st.integers(min_value=0, max_value=2),
        who=st.sampled_from(ANYONE),
        event=st.sampled_from([*MAY, UNKNOWN_EVENT]),
        skew=st.sampled_from([0, 0, 0, 0, 0, -1, 1, -3]),
        draw=st.data(),
    )
    def fire_anything(self, index: int, who: str, event: str, skew: int, draw) -> None:
        """Anyone, any event, any data, any version."""
        case = self.cases[index % len(self.cases)]
        self.attempt(case, who, event, skew, draw.draw(DATA[event], label="data"))

    @rule(index=st.integers(min_value=0, max_value=2), draw=st.data())
    def work_the_case(self, index: int, draw) -> None:
        """What MASH staff would do next: an event valid now, by someone allowed to."""
        case = self.cases[index % len(self.cases)]
        events = [e for e in MAY if case.state in FROM[e]] or list(MAY)
        event = draw.draw(st.sampled_from(events), label="event")
        staff = [p for p in PEOPLE if self.roles[p] & MAY[event]]
        who = draw.draw(st.sampled_from(staff), label="who")
        self.attempt(case, who, event, 0, draw.draw(VALID_DATA[event], label="data"))

    def attempt(self, case: ModelCase, who: str, event: str, skew: int, drawn: Any) -> None:
        now = self.clock.now()
        if isinstance(drawn, Decision):
            late = now > case.decision_due
            data, valid = drawn.data(), drawn.valid_for(case.is_child, late)
        else:
            data, valid = drawn
        expected = self.expect(case, who, event, skew, valid)
        before = self._world()
        actor = self.people[who].actor
        try:
            fired = self.rt.engine.fire(case.id, event, actor, data, case.version + skew)
        except DomainError as exc:
            assert expected, f"{who} {event} {data} on {case.state} was refused: {exc!r}"
            assert type(exc) in expected, f"{exc!r} is not one of {expected}"
            self.check_refusal(case, event, before)
            return
        assert not expected, f"{who} {event} {data} at skew {skew} on {case.state}: allowed"
        self.check_applied(case, who, event, data, fired, before, now)

    def expect(self, case: ModelCase, who: str, event: str, skew: int, valid: bool) -> set:
        """The refusals this attempt may meet (empty: it must be applied)."""
        roles = self.roles[who]
        if not roles & SEES_MASH:
            return {NotFound}
        if event == UNKNOWN_EVENT:
            return {NotValidNow, Forbidden}
        if not roles & MAY[event]:
            return {Forbidden}
        errors: set[type] = set()
        if skew:
            errors.add(StaleVersion)
        if case.state not in FROM[event]:
            errors.add(NotValidNow)
        if not valid:
            errors.add(InvalidData)
        return errors

    # --- checks after one attempt ------------------------------------------------------

    def check_refusal(self, case: ModelCase, event: str, before: dict) -> None:
        assert self._world() == before, "a refused event changed something"
        (audit,) = self._new_audit()
        # An event no pathway has is recorded by the closed vocabulary's name for it
        # (audit/vocabulary.py), never by what was typed.
        action = "api:case:unknown_event" if event == UNKNOWN_EVENT else f"api:case:{event}"
        assert (audit["outcome"], audit["action"], audit["case_id"]) == (
            "refused", action, case.id,
        )  # fmt: skip

    def check_applied(self, case, who, event, data, fired, before, now) -> None:
        from_state = case.state
        to_state = TO[event] or from_state
        actor_id = self.people[who].user_id
        assert (fired.case_id, fired.event, fired.from_state, fired.to_state, fired.version) == (
            case.id, event, from_state, to_state, case.version + 1,
        )  # fmt: skip
        case.state, case.version = to_state, case.version + 1
        case.history.append((case.version, event, from_state, to_state, actor_id))
        if event == "screen":
            case.rag = data["rag"]
            if data["rag"] == "red":
                case.decision_due = min(
                    case.decision_due, case.received_at + timedelta(hours=RED_HOURS)
                )
        if event == "assign":
            case.assigned_to = self.people[data["user"]].user_id

        after = self._world()
        (audit,) = self._new_audit()
        assert (audit["outcome"], audit["action"], audit["case_id"]) == (
            "allowed", f"api:case:{event}", case.id,
        )  # fmt: skip

        # Other cases are untouched; no case was opened.
        def others(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r for r in rows if r["id"] != case.id]

        assert others(after["cases"]) == others(before["cases"])
        assert len(after["cases"]) == len(before["cases"])
        row = next(r for r in after["cases"] if r["id"] == case.id)
        assert (row["state"], row["version"], row["rag"]) == (case.state, case.version, case.rag)
        assert row["priority"] == (0 if case.rag == "red" else 1)
        assert row["assigned_to_id"] == case.assigned_to
        assert row["closed"] == (case.state == "closed")
        assert row["updated_at"] == now

        new_outbox = [(o["kind"], o["recipient_user_id"]) for o in after["outbox"]
                      if o["id"] not in {b["id"] for b in before["outbox"]}]  # fmt: skip
        decisions = [d for d in after["deadline"] if d["case_id"] == case.id
                     and d["name"] == "decision"]  # fmt: skip
        if event == "decide":
            assert new_outbox == [("referral_outcome", case.referrer_id)]
            assert row["closed_at"] == now and row["due_at"] is None
            late = now > case.decision_due
            assert decisions and all(d["status"] == "met" for d in decisions), decisions
            assert all(d["met_at"] == now for d in decisions)
            want_reason = data.get("late_reason") if late else None
            assert all(d["late_reason"] == want_reason for d in decisions), decisions
            still_owed = {d["name"] for d in after["deadline"] if d["case_id"] == case.id
                          and d["status"] in ("open", "breached")}  # fmt: skip
            assert still_owed == ({SET_BY_DECISION.get(data["outcome"])} - {None})
            (referral,) = [r for r in after["referral"] if r["case_id"] == case.id]
            assert referral["outcome"] == data["outcome"]
        else:
            expected_notices = [("case_assigned", case.assigned_to)] if event == "assign" else []
            assert new_outbox == expected_notices
            assert row["due_at"] == case.decision_due
            owed = [d for d in decisions if d["status"] in ("open", "breached")]
            assert owed and min(d["due_at"] for d in owed) == case.decision_due
            changed_deadlines = event == "screen" and data["rag"] == "red"
            if not changed_deadlines:
                assert after["deadline"] == before["deadline"]

    # --- invariants ----------------------------------------------------------------------

    @invariant()
    def cases_match_the_model(self) -> None:
        rows = {r["id"]: r for r in self._rows(Case)}
        assert set(rows) == {c.id for c in self.cases}
        for case in self.cases:
            row = rows[case.id]
            assert row["state"] in self.wf_states
            assert (row["state"], row["version"]) == (case.state, case.version)
            history = self._rows(CaseHistory, CaseHistory.case_id == case.id)
            assert [(h["version"], h["event"], h["from_state"], h["to_state"], h["actor_id"])
                    for h in history] == case.history  # fmt: skip
            assert history[-1]["version"] == row["version"]

    @invariant()
    def each_deadline_is_owed_at_most_once(self) -> None:
        owed: dict[tuple[int, str], int] = {}
        for d in self._rows(Deadline):
            if d["status"] in ("open", "breached"):
                key = (d["case_id"], d["name"])
                owed[key] = owed.get(key, 0) + 1
        assert all(n == 1 for n in owed.values()), owed

    @invariant()
    def the_audit_chain_verifies(self) -> None:
        check = self.rt.verify_audit()
        assert check.ok, check.as_dict()


@pytest.fixture
def databases(backend, request, tmp_path) -> Databases:
    if backend == "sqlite":
        return Databases(backend, request.getfixturevalue("sqlite_template"), tmp_path)
    return Databases(backend, request.getfixturevalue("pg_template"), tmp_path)


def test_random_mash_event_sequences_keep_the_invariants(databases, tmp_path):
    # Only the MASH pathway is set up, so `onward` naming another pathway is refused.
    workflows_dir = tmp_path / "workflows"
    workflows_dir.mkdir()
    shutil.copy(PROJECT_ROOT / "workflows" / "mash.yaml", workflows_dir / "mash.yaml")
    run_state_machine_as_test(
        lambda: MashMachine(databases, workflows_dir),
        settings=settings(
            max_examples=25,
            stateful_step_count=15,
            deadline=None,
            # Every example builds a database, so shrinking a failure can take minutes;
            # a failing run prints its (at most 15) steps unshrunk instead.
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
