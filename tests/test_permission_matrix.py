"""The permission matrix: every role x every route x every pathway state, from policy.

For each route the app serves, `RULES` says how to call it and what policies/roles.yaml
(through `Access`, never a role name) says the answer must be: allowed, 403 or 404. A
route the app serves with no entry here fails `test_every_route_is_classified`, so a new
endpoint cannot ship without its access decision being written down and checked.

The world is built once per module per database: one user per role, and one case in each
state of each pathway, walked there through `Engine.fire` (as the scheduler's SYSTEM actor,
trying each event the workflow allows from a state, with data made from its schema), so a
state added to a workflow is covered without touching this file. Every request then goes
through the real ASGI app. Change requests are sent with a version far ahead of the case's,
so an allowed change is answered 409 (stale) and nothing moves. (Which routes are asked
in every state and which once per pathway: see `case_asks`.)
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import PASSWORD, PG_URL, STAFF, START, _pg_admin, _pg_url, add_user, make_settings
from conftest import referral_body as base_referral
from starlette.testclient import TestClient

from referral_engine.access.rules import SYSTEM
from referral_engine.clock import FixedClock
from referral_engine.errors import DomainError
from referral_engine.pathways.definitions import event_routes
from referral_engine.runtime import Runtime
from referral_engine.storage.db import dispose_all, get_engine
from referral_engine.storage.models import Case, Deadline, Referral

FAR_AHEAD = 10**6  # an expected_version no case has: an allowed change answers 409
PEOPLE: dict[str, tuple[list[str], str, str]] = {
    **STAFF,
    "iom": (["iom_officer"], "City Police", "police"),
}
ADULT = {"given_name": "Matrix", "family_name": "Adult", "date_of_birth": "1990-03-04",
         "gender": "male"}  # fmt: skip
NO_CONSENT = {"consent": "not_sought", "consent_reason": "Risk of significant harm."}
# Who refers into each pathway, and how.
REFERRALS: dict[str, tuple[str, dict[str, Any]]] = {
    "mash": ("teacher", {}),
    "marac": ("coordinator", {"pathway": "marac", "subject": ADULT,
                              "concerns": ["domestic_abuse"], **NO_CONSENT}),
    "nrm": ("responder", {"pathway": "nrm", "subject": ADULT, "concerns": ["modern_slavery"]}),
    "channel": ("prevent", {"pathway": "channel", "subject": ADULT,
                            "concerns": ["radicalisation"], **NO_CONSENT}),
    "gang_exit": ("gangs", {"pathway": "gang_exit", "subject": ADULT,
                            "concerns": ["gang_involvement"]}),
    "iom": ("iom", {"pathway": "iom", "subject": ADULT, "concerns": ["other"], **NO_CONSENT}),
}  # fmt: skip


# --- the world: built once per module per database -------------------------------------


@dataclass
class World:
    rt: Runtime
    client: TestClient
    tokens: dict[str, str]
    csrf: dict[str, str]
    # (pathway, state) -> case id
    cases: dict[tuple[str, str], int] = field(default_factory=dict)
    meetings: dict[str, int] = field(default_factory=dict)

    _actors: dict[str, Any] = field(default_factory=dict)
    _rows: dict[int, Case] = field(default_factory=dict)
    frozen: bool = False  # once walked, cases do not change until the last test
    referrers: dict[int, int] = field(default_factory=dict)
    # (pathway, event) -> the first state (by name) it is valid from
    first_state: dict[tuple[str, str], str] = field(default_factory=dict)

    def actor(self, who: str):
        if who not in self._actors:
            uid = self.rt.accounts.user_id_for(who)
            with self.rt.db.reading() as s:
                self._actors[who] = self.rt.accounts.actor_for_user(
                    s, uid, source="api", request_id=None
                )
        return self._actors[who]

    def case(self, case_id: int) -> Case:
        if not self.frozen or case_id not in self._rows:
            with self.rt.db.reading() as s:
                row = s.get(Case, case_id)
                s.expunge(row)
            self._rows[case_id] = row
        return self._rows[case_id]


def _database(backend: str, request, tmp_path_factory) -> Iterator[str]:
    if backend == "sqlite":
        # A real SQLite file, in memory-backed storage where there is one: thousands of
        # audited requests, each committed with synchronous=FULL, would otherwise wait
        # on the disk for most of a minute.
        shm = Path("/dev/shm")
        where = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() else tmp_path_factory.mktemp("m")
        path = where / "matrix.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        shutil.rmtree(where, ignore_errors=True)
        return
    template = request.getfixturevalue("pg_template")
    name = f"re_matrix_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield _pg_url(name)
    dispose_all()
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def world(request, tmp_path_factory) -> Iterator[World]:
    if request.param == "postgres" and not PG_URL:
        pytest.skip("no PostgreSQL server: set REFERRAL_ENGINE_TEST_PG_URL (CI always does)")
    from web.app import create_app

    databases = _database(request.param, request, tmp_path_factory)
    url = next(databases)
    settings = make_settings(url)
    rt = Runtime.build(settings, FixedClock(START))
    app = create_app(settings=settings, runtime=rt)
    with TestClient(app, base_url="http://testserver") as client:
        for name, spec in PEOPLE.items():
            add_user(rt, name, *spec)
        tokens, csrf = {}, {}
        for name in PEOPLE:
            r = client.post("/api/auth/token", data={"username": name, "password": PASSWORD})
            assert r.status_code == 200, r.text
            tokens[name] = r.json()["access_token"]
            home = client.get("/", headers={"Cookie": f"re_session={tokens[name]}"})
            csrf[name] = re.search(r'name="csrf" value="([^"]+)"', home.text).group(1)
        w = World(rt, client, tokens, csrf)
        # Today's meetings: a hearing is recorded on or after its meeting's date.
        day = START.date()
        w.meetings = {
            "marac": rt.meetings.create(w.actor("coordinator"), "marac", day, 100)["id"],
            "channel": rt.meetings.create(w.actor("chair"), "channel", day, 100)["id"],
        }
        for pathway in sorted(rt.workflows.pathways):
            walk(w, pathway)
        w.frozen, w._rows = True, {}
        for pathway, state in sorted(w.cases):
            wf = rt.workflows.get(pathway)
            for e in set(wf.machine.get_triggers(state)) & set(wf.definition.events):
                w.first_state.setdefault((pathway, e), state)
        with rt.db.reading() as s:
            w.referrers = dict(s.execute(sa.select(Referral.id, Referral.referrer_id)).all())
        yield w
    rt.stop()
    get_engine(url).dispose()
    next(databases, None)


def refer(w: World, pathway: str) -> int:
    who, overrides = REFERRALS[pathway]
    return w.rt.referrals.create(w.actor(who), base_referral(**overrides))["case_id"]


def candidates(w: World, pathway: str, event: str) -> list[dict[str, Any]]:
    """Data for an event, made from its schema: one plain choice of every field, then
    each other choice of each choice field (guards may want a particular one)."""
    wf = w.rt.workflows.get(pathway)
    spec = wf.schemas[event].describe()
    today = w.rt.clock.now().date()

    def options(f: dict[str, Any]) -> list[str]:
        if f.get("choices"):
            return list(f["choices"])
        return list(getattr(w.rt.policy.reference, f["choices_from"]))

    def value(f: dict[str, Any], pick: int = 0) -> Any:
        match f["type"]:
            case "text":
                return "Matrix walk"
            case "choice":
                return options(f)[pick]
            case "choices":
                return [options(f)[pick]] if f.get("min_items", 0) or pick else []
            case "bool":
                return True
            case "date":
                return [today, today + timedelta(days=7), today - timedelta(days=7)][pick]
            case "datetime":
                return w.rt.clock.now().isoformat()
            case "integer":
                return f.get("min") or 1
            case "meeting":
                return w.meetings[pathway]
            case "user":
                return next(u for u in PEOPLE if w.rt.access.can(w.actor(u), f["holds_permission"]))
            case "list":
                item = {k: fix(value(v)) for k, v in f["items"].items()}
                return [item] if f.get("min_items", 0) else []
        raise AssertionError(f["type"])

    def fix(v: Any) -> Any:
        return v.isoformat() if isinstance(v, date) else v

    base = {k: fix(value(f)) for k, f in spec.items()}
    out = [base]
    for k, f in spec.items():
        n = len(f.get("choices") or ()) if f["type"] in ("choice", "choices") else 0
        n = 3 if f["type"] == "date" else n
        for i in range(1, n):
            out.append({**base, k: fix(value(f, i))})
    return out


def fire(w: World, case_id: int, event: str, data: dict[str, Any]) -> str | None:
    """Fire as SYSTEM; the new state, or None if refused (a guard, bad data). An event
    that may not happen before a deadline of the case (a Channel review, a gang-exit
    follow-up) is tried again just after the case's deadlines, one by one, then the clock is put
    back (the world's tokens were issued at START)."""
    try:
        return w.rt.engine.fire(case_id, event, SYSTEM, data, w.case(case_id).version).to_state
    except DomainError:
        pass
    with w.rt.db.reading() as s:
        dues = s.execute(
            sa.select(Deadline.due_at)
            .where(Deadline.case_id == case_id, Deadline.status == "open")
            .order_by(Deadline.due_at)
        ).scalars().all()  # fmt: skip
    clock, saved = w.rt.clock, w.rt.clock.at
    try:
        for due in dues:
            clock.at = max(saved, due + timedelta(minutes=1))
            try:
                version = w.case(case_id).version
                return w.rt.engine.fire(case_id, event, SYSTEM, data, version).to_state
            except DomainError:
                continue
        return None
    finally:
        clock.at = saved


def walk(w: World, pathway: str) -> None:
    """One case in each state of the pathway, found breadth first: a state's case stays
    there; the walk onward goes on from fresh cases replayed to it. Events that keep the
    state (recording an assessment, allocating) come first, as a guard onward may need them."""
    wf = w.rt.workflows.get(pathway)
    events = wf.definition.events

    def order(e: str) -> tuple[int, str]:
        return (0 if events[e].to is None and not events[e].routes else 1, e)

    paths: dict[str, list[tuple[str, dict]]] = {wf.definition.initial: []}
    w.cases[(pathway, wf.definition.initial)] = refer(w, pathway)
    frontier = [wf.definition.initial]
    while frontier:
        state = frontier.pop(0)
        spare, log = None, []
        for event in sorted(set(wf.machine.get_triggers(state)) & set(events), key=order):
            for data in candidates(w, pathway, event):
                if spare is None:
                    spare, log = refer(w, pathway), []
                    for e, d in paths[state]:
                        assert fire(w, spare, e, d), (pathway, e)
                reached = fire(w, spare, event, data)
                if reached is None:
                    continue
                if reached == state:
                    log.append((event, data))
                elif reached not in paths:
                    paths[reached] = [*paths[state], *log, (event, data)]
                    w.cases[(pathway, reached)] = spare
                    frontier.append(reached)
                    spare = None
                else:
                    spare = None  # moved on to a state already covered: start afresh
                if not events[event].routes:
                    break  # an event with routes may go elsewhere with other data


def reachable(definition) -> set[str]:
    """The states some sequence of events leads to from the initial one."""
    seen, todo = {definition.initial}, [definition.initial]
    while todo:
        state = todo.pop()
        for ev in definition.events.values():
            for sources, to in event_routes(ev):
                if state in sources and to and to not in seen:
                    seen.add(to)
                    todo.append(to)
    return seen


def test_every_state_of_every_pathway_has_a_case(world):
    for pathway in world.rt.workflows.pathways:
        states = reachable(world.rt.workflows.get(pathway).definition)
        assert {s for p, s in world.cases if p == pathway} == states, pathway
        for (p, s), case_id in world.cases.items():
            assert world.case(case_id).state == s, (p, s)


# --- the rules -------------------------------------------------------------------------


@dataclass
class Ask:
    """One request and the answer policy requires."""

    who: str
    method: str
    url: str
    expect: int
    json: Any = None
    form: dict[str, Any] | None = None
    page: bool = False
    anonymous: bool = False


def gate(w: World, who: str, case_id: int, *, reading: bool = True) -> int | None:
    """None if `who` may see the case; else 403 (policy lets them open it with a reason,
    and they reached it through a link of their own: only for reading) or 404 (as if it
    did not exist)."""
    actor, row = w.actor(who), w.case(case_id)
    if w.rt.access.can_see(actor, row):
        return None
    if reading and w.rt.access.may_break_glass(actor, row):
        with w.rt.db.reading() as s:
            if w.rt.access.linked_to_visible(s, actor, row):
                return 403
    return 404


def can(w: World, who: str, permission: str, case_id: int | None = None) -> bool:
    row = w.case(case_id) if case_id else None
    return w.rt.access.can(w.actor(who), permission, row)


def yes_no(ok: bool, yes: int = 200, no: int = 403) -> int:
    return yes if ok else no


def event_rule(w: World, who: str, case_id: int, event: str, *, page: bool = False) -> int:
    """A change: 404 for a case the caller may not see, reachable or not (a reason opens a
    record for reading only); the page reads the case first, so it asks for the reason."""
    wf = w.rt.workflows.get(w.case(case_id).pathway)
    g = gate(w, who, case_id, reading=page)
    if g:
        return g
    system = wf.definition.events[event].system
    return 403 if system or not can(w, who, wf.permission(event), case_id) else 409


def case_asks(
    w: World, who: str, pathway: str, state: str, case_id: int, first: bool
) -> Iterator[Ask]:
    """Every case route, for one person and one case. In every state: reading the case,
    and changing it (the state's first event, and each event of the pathway in the first
    state it is valid in). Routes whose answer depends on the state only through whether
    the case can be seen (history, the case page and its forms, the audit page, the
    referral's pages) on each pathway's `first` case: every request is audited, and
    asking them in all 46 states would take minutes on a loaded machine."""
    wf = w.rt.workflows.get(pathway)
    g = gate(w, who, case_id)
    yield Ask(who, "GET", f"/api/cases/{case_id}", g or 200)
    if first:
        hist = yes_no(can(w, who, f"{pathway}:history:view", case_id))
        yield Ask(who, "GET", f"/api/cases/{case_id}/history", g or hist)
        yield Ask(who, "GET", f"/cases/{case_id}", g or 200, page=True)
        yield Ask(who, "GET", f"/audit/cases/{case_id}", yes_no(can(w, who, "audit:log:view")),
                  page=True)  # fmt: skip
    events = sorted(set(wf.machine.get_triggers(state)) & set(wf.definition.events))
    events = events or sorted(wf.definition.events)[:1]  # a terminal state: any event
    # Each event by API where it is first valid, and in every state the first event.
    for event in sorted({events[0], *(e for e in events if w.first_state[(pathway, e)] == state)}):
        body = {"event": event, "data": {}, "expected_version": FAR_AHEAD}
        yield Ask(who, "POST", f"/api/cases/{case_id}/events", event_rule(w, who, case_id, event),
                  json=body)  # fmt: skip
    if first:
        yield Ask(who, "POST", f"/cases/{case_id}/events/{events[0]}",
                  event_rule(w, who, case_id, events[0], page=True),
                  form={"expected_version": FAR_AHEAD}, page=True)  # fmt: skip
    referral_id = w.case(case_id).referral_id
    if referral_id:
        referrer = w.referrers[referral_id]
        own = referrer == w.actor(who).user_id and can(w, who, "referral:own:view")
        seen = yes_no(g is None or own, no=404)
        if first:
            yield Ask(who, "GET", f"/api/referrals/{referral_id}", seen)
            yield Ask(who, "GET", f"/referrals/{referral_id}", seen, page=True)
            yield Ask(who, "GET", f"/referrals/{referral_id}/done", seen, page=True)


def person_asks(w: World, who: str, person_id: int) -> Iterator[Ask]:
    with w.rt.db.reading() as s:
        rows = s.execute(sa.select(Case).where(Case.person_id == person_id)).scalars().all()
        for r in rows:
            s.expunge(r)
    actor = w.actor(who)
    visible = any(w.rt.access.can_see(actor, r) for r in rows)
    status = 403 if not can(w, who, "person:person:view") else (200 if visible else 404)
    yield Ask(who, "GET", f"/api/people/{person_id}", status)
    yield Ask(who, "GET", f"/people/{person_id}", status, page=True)
    # The page re-shows the person with the error beside the field: 404 if it is not theirs.
    merge = 403 if not can(w, who, "person:person:merge") else (422 if status == 200 else 404)
    yield Ask(who, "POST", f"/people/{person_id}/merge", merge,
              form={"into": "999999", "reason": "same person"}, page=True)  # fmt: skip


def role_asks(w: World, who: str) -> Iterator[Ask]:
    """Routes whose answer depends on the person's permissions alone."""
    c = lambda p: can(w, who, p)  # noqa: E731
    period = "from=2026-11-01&to=2026-11-30"
    reviews = bool(w.rt.break_glass.review_pathways(w.actor(who)))
    meets = [p for p in w.meetings if c(f"{p}:case:view")]
    yield Ask(who, "GET", "/api/me", 200)
    yield Ask(who, "GET", "/api/referrals", yes_no(c("referral:own:view")))
    yield Ask(who, "GET", "/api/cases?include_closed=true&limit=200", 200)
    yield Ask(who, "POST", "/api/people/1/merge", yes_no(c("person:person:merge"), 422),
              json={"into": 1, "reason": "same"})  # fmt: skip
    yield Ask(who, "POST", "/api/people/merges/999999/undo", yes_no(c("person:person:merge"), 404))
    yield Ask(who, "GET", "/api/meetings", 200)
    for pathway, mid in w.meetings.items():
        yield Ask(who, "GET", f"/api/meetings/{mid}", yes_no(pathway in meets, no=404))
        yield Ask(who, "GET", f"/meetings/{mid}", yes_no(pathway in meets, no=404), page=True)
        manage = c(f"{pathway}:meeting:manage")
        yield Ask(who, "POST", "/api/meetings", yes_no(manage, 201),
                  json={"pathway": pathway, "date": "2027-03-01", "capacity": 5})  # fmt: skip
        yield Ask(who, "POST", "/meetings", yes_no(manage, 303),
                  form={"pathway": pathway, "date": "2027-03-02", "capacity": "5"},
                  page=True)  # fmt: skip
    yield Ask(who, "GET", "/meetings", yes_no(bool(meets)), page=True)
    workflows = yes_no(c("workflow:definition:view"))
    yield Ask(who, "GET", "/api/workflows", workflows)
    yield Ask(who, "GET", "/api/workflows/mash", workflows)
    yield Ask(who, "GET", "/workflows", workflows, page=True)
    yield Ask(who, "GET", "/workflows/mash", workflows, page=True)
    yield Ask(who, "GET", "/workflows/mash/diagram.svg", workflows, page=True)
    yield Ask(who, "GET", "/api/audit", yes_no(c("audit:log:view")))
    yield Ask(who, "GET", "/audit", yes_no(c("audit:log:view")), page=True)
    yield Ask(who, "GET", "/api/audit/verify", yes_no(c("audit:chain:verify")))
    yield Ask(who, "GET", "/audit/verify", yes_no(c("audit:chain:verify")), page=True)
    yield Ask(who, "POST", "/audit/verify", yes_no(c("audit:chain:verify")), form={}, page=True)
    yield Ask(who, "GET", f"/api/reports/kpis?{period}", yes_no(c("report:kpi:view")))
    yield Ask(who, "GET", "/dashboard", yes_no(c("report:kpi:view")), page=True)
    admin = c("admin:user:manage")
    yield Ask(who, "GET", "/admin/users", yes_no(admin), page=True)
    yield Ask(who, "GET", "/admin/users/new", yes_no(admin), page=True)
    yield Ask(who, "GET", "/admin/users/1", yes_no(admin), page=True)
    yield Ask(who, "POST", "/admin/users", yes_no(admin, 422), form={}, page=True)
    yield Ask(who, "POST", "/admin/users/1", yes_no(admin, 422),
              form={"change": "set_roles"}, page=True)  # fmt: skip
    approves = c("access:grant:approve")
    yield Ask(who, "GET", "/admin/approvals", yes_no(approves), page=True)
    yield Ask(who, "POST", "/admin/approvals/999999", yes_no(approves, 404),
              form={"decision": "approve"}, page=True)  # fmt: skip
    yield Ask(who, "GET", "/", 200, page=True)
    works_cases = bool(w.rt.access.visible_pathways(w.actor(who)))
    yield Ask(who, "GET", "/queue", yes_no(works_cases), page=True)
    refers = c("referral:referral:create")
    yield Ask(who, "GET", "/referrals/new", yes_no(refers), page=True)
    yield Ask(who, "POST", "/referrals/new", yes_no(refers, 422), form={}, page=True)
    yield Ask(who, "GET", "/referrals", yes_no(c("referral:own:view")), page=True)
    # Everyone has their own notices; nobody can mark another's (an unknown id is 404).
    yield Ask(who, "GET", "/api/notifications", 200)
    yield Ask(who, "POST", "/api/notifications/read", 200, json={})
    yield Ask(who, "POST", "/api/notifications/999999/read", 404)
    yield Ask(who, "GET", "/notifications", 200, page=True)
    yield Ask(who, "POST", "/notifications/read", 303, form={}, page=True)
    kpi = c("report:kpi:view")
    yield Ask(who, "GET", f"/api/exports/kpis.csv?{period}", yes_no(kpi))
    for pathway in ("marac", "nrm"):  # a pathway's return counts cases one may see
        allowed = kpi and c(f"{pathway}:case:view")
        yield Ask(who, "GET", f"/api/exports/{pathway}.csv?{period}", yes_no(allowed))
    yield Ask(who, "GET", f"/exports/kpis.xlsx?{period}", yes_no(kpi), page=True)
    listing = c("report:cases:export")
    yield Ask(who, "GET", "/api/exports/cases/list.csv", yes_no(listing))
    yield Ask(who, "GET", "/exports/cases.csv", yes_no(listing), page=True)
    # A form's address opened as a page (after signing in again) leads back to the case.
    yield Ask(who, "GET", "/cases/1/events/screen", 303, page=True)
    yield Ask(who, "GET", "/api/access/grants", yes_no(reviews))
    yield Ask(who, "GET", "/review/access", yes_no(reviews), page=True)
    yield Ask(who, "POST", "/api/access/grants/999999/review", yes_no(reviews, 404),
              json={"note": "checked"})  # fmt: skip
    yield Ask(who, "POST", "/review/access/999999", yes_no(reviews, 404),
              form={"note": "checked"}, page=True)  # fmt: skip


def public_asks() -> Iterator[Ask]:
    yield Ask("", "GET", "/healthz", 200, anonymous=True)
    yield Ask("", "GET", "/openapi.json", 200, anonymous=True)
    yield Ask("", "GET", "/login", 200, anonymous=True, page=True)


# How each route the app serves is covered: by which family of asks above, or (for the
# few that act on the caller's own session) by which test. Anything missing here fails.
ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "public",
    ("GET", "/openapi.json"): "public",
    ("GET", "/login"): "public",
    ("POST", "/login"): "session: tests/test_pages_core.py, test_sign_in_security.py",
    ("GET", "/logout"): "session: tests/test_pages_core.py",
    ("POST", "/logout"): "session: tests/test_pages_core.py",
    ("GET", "/login/oidc"): "public: tests/test_oidc.py",
    ("GET", "/login/oidc/callback"): "session: tests/test_oidc.py",
    ("GET", "/login/code"): "session: tests/test_second_factor.py",
    ("POST", "/login/code"): "session: tests/test_second_factor.py",
    ("GET", "/login/enrol"): "session: tests/test_second_factor.py",
    ("POST", "/login/enrol"): "session: tests/test_second_factor.py",
    ("POST", "/api/auth/token"): "session: tests/test_api.py, test_sign_in_security.py",
    ("POST", "/api/auth/logout"): "session: tests/test_sign_in_security.py",
    ("GET", "/api/me"): "role",
    ("POST", "/api/referrals"): "referral-create",
    ("GET", "/api/referrals"): "role",
    ("GET", "/api/referrals/{referral_id}"): "case",
    ("GET", "/api/cases"): "role",
    ("GET", "/api/cases/{case_id}"): "case",
    ("POST", "/api/cases/{case_id}/events"): "case",
    ("GET", "/api/cases/{case_id}/history"): "case",
    ("POST", "/api/cases/{case_id}/access"): "break-glass",
    ("POST", "/api/cases/{case_id}/links/{link}/access"): "break-glass",
    ("GET", "/cases/{case_id}/links/{link}/access"): "break-glass",
    ("POST", "/cases/{case_id}/links/{link}/access"): "break-glass",
    ("GET", "/api/access/grants"): "role",
    ("POST", "/api/access/grants/{grant_id}/review"): "role",
    ("GET", "/api/people/{person_id}"): "person",
    ("POST", "/api/people/{person_id}/merge"): "role",
    ("POST", "/api/people/merges/{merge_id}/undo"): "role",
    ("POST", "/api/meetings"): "role",
    ("GET", "/api/meetings"): "role",
    ("GET", "/api/meetings/{meeting_id}"): "role",
    ("GET", "/api/workflows"): "role",
    ("GET", "/api/workflows/{pathway}"): "role",
    ("GET", "/api/audit"): "role",
    ("GET", "/api/audit/verify"): "role",
    ("GET", "/api/reports/kpis"): "role",
    ("GET", "/api/reports/trends"): "role",
    ("GET", "/admin/users"): "role",
    ("GET", "/admin/users/new"): "role",
    ("POST", "/admin/users"): "role",
    ("GET", "/admin/users/{user_id}"): "role",
    ("POST", "/admin/users/{user_id}"): "role",
    ("GET", "/admin/approvals"): "role",
    ("POST", "/admin/approvals/{request_id}"): "role",
    ("GET", "/account/password"): "link: tests/test_pages_audit_admin.py",
    ("POST", "/session/renew"): "session: tests/test_sessions_keep_work.py",
    ("POST", "/account/password"): "link: tests/test_pages_audit_admin.py",
    ("GET", "/audit"): "role",
    ("GET", "/audit/cases/{case_id}"): "case",
    ("GET", "/audit/verify"): "role",
    ("POST", "/audit/verify"): "role",
    ("GET", "/cases/{case_id}"): "case",
    ("GET", "/cases/{case_id}/print"): "case",
    ("POST", "/cases/{case_id}/events/{event}"): "case",
    ("POST", "/cases/{case_id}/access"): "break-glass",
    ("GET", "/dashboard"): "role",
    ("GET", "/"): "role",
    ("GET", "/meetings"): "role",
    ("POST", "/meetings"): "role",
    ("GET", "/meetings/{meeting_id}"): "role",
    ("GET", "/people/{person_id}"): "person",
    ("POST", "/people/{person_id}/merge"): "person",
    ("POST", "/people/merges/{merge_id}/undo"): "role",
    ("GET", "/queue"): "role",
    ("GET", "/referrals/new"): "role",
    ("POST", "/referrals/new"): "role",
    ("GET", "/referrals/{referral_id}/done"): "case",
    ("GET", "/referrals"): "role",
    ("GET", "/referrals/{referral_id}"): "case",
    ("GET", "/review/access"): "role",
    ("POST", "/review/access/{grant_id}"): "role",
    ("GET", "/workflows"): "role",
    ("GET", "/workflows/{pathway}"): "role",
    ("GET", "/workflows/{pathway}/diagram.svg"): "role",
    ("GET", "/api/notifications"): "role",
    ("POST", "/api/notifications/read"): "role",
    ("POST", "/api/notifications/{notification_id}/read"): "role",
    ("GET", "/notifications"): "role",
    ("POST", "/notifications/read"): "role",
    ("GET", "/api/exports/{what}.{fmt}"): "role",
    ("GET", "/api/exports/cases/list.{fmt}"): "role",
    ("GET", "/exports/{what}.{fmt}"): "role",
    ("GET", "/exports/cases.{fmt}"): "role",
    ("GET", "/cases/{case_id}/events/{event}"): "role",
}


def served_routes(app) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves (HEAD aside), static files aside."""
    out: set[tuple[str, str]] = set()

    def add(path: str, methods) -> None:
        out.update((m, path) for m in methods or () if m != "HEAD")

    for route in app.routes:
        if hasattr(route, "effective_route_contexts"):
            for ctx in route.effective_route_contexts():
                add(ctx.path, ctx.methods)
        elif getattr(route, "methods", None):
            add(route.path, route.methods)
    return out


# --- running the asks ------------------------------------------------------------------


def send(w: World, ask: Ask):
    headers: dict[str, str] = {}
    if not ask.anonymous:
        if ask.page:
            headers["Cookie"] = f"re_session={w.tokens[ask.who]}"
        else:
            headers["Authorization"] = f"Bearer {w.tokens[ask.who]}"
    if ask.form is not None:
        form = {"csrf": w.csrf[ask.who], **ask.form}
        return w.client.request(
            ask.method, ask.url, data=form, headers=headers, follow_redirects=False
        )
    return w.client.request(
        ask.method, ask.url, json=ask.json, headers=headers, follow_redirects=False
    )


def check(w: World, asks: list[Ask]) -> None:
    wrong = []
    for ask in asks:
        r = send(w, ask)
        if r.status_code != ask.expect:
            wrong.append(f"{ask.who or 'anyone'} {ask.method} {ask.url}: "
                         f"{r.status_code}, policy says {ask.expect}")  # fmt: skip
        elif not ask.page and r.status_code >= 400:
            assert r.headers["content-type"].startswith("application/problem+json"), ask
    assert not wrong, f"{len(wrong)} of {len(asks)} answers differ from policy:\n" + "\n".join(
        wrong[:60]
    )


def test_every_route_is_classified(world):
    served = served_routes(world.client.app)
    unclassified = sorted(served - set(ROUTES))
    assert not unclassified, f"routes with no access rule in ROUTES: {unclassified}"
    assert not sorted(set(ROUTES) - served), "ROUTES names routes the app no longer serves"


def test_case_routes_in_every_state_for_every_role(world):
    initial = {p: world.rt.workflows.get(p).definition.initial for p in world.rt.workflows.pathways}
    asks = [
        ask
        for (pathway, state), case_id in sorted(world.cases.items())
        for who in PEOPLE
        for ask in case_asks(world, who, pathway, state, case_id, state == initial[pathway])
    ]
    check(world, asks)


def test_person_and_role_routes_for_every_role(world):
    people = sorted({world.case(c).person_id for c in world.cases.values()} - {None})
    asks = [*public_asks()]
    for who in PEOPLE:
        asks += [a for pid in people for a in person_asks(world, who, pid)]
        asks += list(role_asks(world, who))
    check(world, asks)


def test_lists_hold_exactly_the_cases_policy_lets_each_role_see(world):
    every = {case_id: world.case(case_id) for case_id in world.cases.values()}
    with world.rt.db.reading() as s:
        for row in s.execute(sa.select(Case)).scalars():
            s.expunge(row)
            every[row.id] = row
    for who in PEOPLE:
        actor = world.actor(who)
        r = world.client.get(
            "/api/cases", params={"include_closed": "true", "limit": 200},
            headers={"Authorization": f"Bearer {world.tokens[who]}"},
        )  # fmt: skip
        listed = {i["id"] for i in r.json()["items"]}
        assert listed == {i for i, row in every.items() if world.rt.access.can_see(actor, row)}
        assert r.json()["total"] == len(listed), who


def test_referring_and_break_glass_for_every_role(world):
    """Last, because both change the world: a referral per role that may make one, and
    opening each pathway's first case with a reason where policy allows it."""
    asks = []
    for who in PEOPLE:
        refers = can(world, who, "referral:referral:create")
        body = base_referral(subject={"given_name": "Extra", "family_name": who.title(),
                                      "date_of_birth": "2011-01-01"})  # fmt: skip
        asks.append(Ask(who, "POST", "/api/referrals", yes_no(refers, 201), json=body))
    for pathway in sorted(world.rt.workflows.pathways):
        initial = world.rt.workflows.get(pathway).definition.initial
        case_id = world.cases[(pathway, initial)]
        for who in PEOPLE:
            g = gate(world, who, case_id)
            expect = 409 if g is None else (201 if g == 403 else 404)
            reason = {"reason": "Covering for a colleague on leave today"}
            asks.append(Ask(who, "POST", f"/api/cases/{case_id}/access", expect, json=reason))
        # The page form for the next state's case (its own grant).
        states = [s for p, s in world.cases if p == pathway and s != initial]
        if states:
            other = world.cases[(pathway, sorted(states)[0])]
            for who in PEOPLE:
                g = gate(world, who, other)
                expect = {None: 409, 403: 303, 404: 404}[g]
                form = {"reason": "Urgent safeguarding query"}
                asks.append(Ask(who, "POST", f"/cases/{other}/access", expect, form=form,
                                page=True))  # fmt: skip
    check(world, asks)
