"""Demo accounts and data: `referral-engine demo [--scale N]`.

The demo set is a believable day at a MASH: referrals from a school, a GP, the police and
housing, in every MASH state, some overdue, one red. It goes through the same services
as real use (referrals, the engine), so it is audited like anything else. `--scale N`
bulk-loads N synthetic cases across every pathway for benchmarks; those are written in
batches directly (the engine would take hours for a million), each case given a history
that follows a real path through its workflow, and each batch audited as one bulk load.
"""

from __future__ import annotations

import random
import sys
from collections import deque
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa

from referral_engine.access.rules import Actor
from referral_engine.pathways.definitions import Workflow, event_routes
from referral_engine.people.matching import normalise, phonetic
from referral_engine.storage.columns import utcnow
from referral_engine.storage.db import Statement
from referral_engine.storage.models import (
    Case,
    CaseHistory,
    Deadline,
    Person,
    Referral,
    User,
)

# The lawful basis and recipient each information request and answer records.
ASKED = {"lawful_basis": "safeguarding", "recipient": "Partner agency leads"}
ANSWERED = {"lawful_basis": "safeguarding", "recipient": "MASH duty desk"}

DEMO_PASSWORD = "safeguarding-demo-2026"  # noqa: S105 - demo mode only; printed by `make run`

DEMO_USERS: list[dict[str, Any]] = [
    {"username": "practitioner", "name": "Sam Patel (Northgate Academy)", "roles": ["practitioner"],
     "agency": "Northgate Academy", "kind": "education"},
    {"username": "gp", "name": "Dr Ayo Mensah (Riverside Surgery)", "roles": ["practitioner"],
     "agency": "Riverside Surgery", "kind": "health"},
    {"username": "police", "name": "PC Dana Reed", "roles": ["practitioner"],
     "agency": "City Police", "kind": "police"},
    {"username": "mash.officer", "name": "Jordan Lee (MASH)", "roles": ["mash_officer"],
     "agency": "City Council MASH", "kind": "children_social_care"},
    {"username": "mash.manager", "name": "Priya Shah (MASH manager)", "roles": ["mash_manager"],
     "agency": "City Council MASH", "kind": "children_social_care"},
    {"username": "marac.coordinator", "name": "Alex Kim (MARAC)", "roles": ["marac_coordinator"],
     "agency": "City Council Community Safety", "kind": "local_authority"},
    {"username": "idva", "name": "Morgan Blake (IDVA)", "roles": ["idva"],
     "agency": "Safer Homes IDVA Service", "kind": "voluntary"},
    {"username": "nrm.responder", "name": "Chris Evans (First Responder)",
     "roles": ["nrm_first_responder"], "agency": "City Council Modern Slavery Team",
     "kind": "local_authority"},
    {"username": "prevent.officer", "name": "DS Robin Hale (Prevent)", "roles": ["prevent_officer"],
     "agency": "City Police", "kind": "police"},
    {"username": "channel.chair", "name": "Taylor Ward (Channel chair)", "roles": ["channel_chair"],
     "agency": "City Council Community Safety", "kind": "local_authority"},
    {"username": "gang.worker", "name": "Jamie Cole (Gang exit)", "roles": ["gang_worker"],
     "agency": "Youth Justice Service", "kind": "local_authority"},
    {"username": "iom.officer", "name": "Sgt Casey Ford (IOM)", "roles": ["iom_officer"],
     "agency": "Probation Service", "kind": "probation"},
    {"username": "auditor", "name": "Internal Audit", "roles": ["auditor"],
     "agency": "City Council Internal Audit", "kind": "local_authority"},
    {"username": "admin", "name": "System Administrator", "roles": ["admin"],
     "agency": "City Council IT", "kind": "local_authority"},
]  # fmt: skip


# Who receives MARAC actions and listings for their agency.
DEMO_AGENCY_CONTACTS = {"police", "gp", "idva", "marac.coordinator"}


def _actor(runtime, username: str) -> Actor:
    with runtime.db.reading() as s:
        uid = s.execute(sa.select(User.id).where(User.username == username)).scalar_one()
        actor = runtime.accounts.actor_for_user(s, uid, source="demo", request_id=None)
    assert actor is not None
    return actor


def load_users(runtime) -> None:
    with runtime.db.transaction() as s:
        taken = set(s.execute(sa.select(User.username)).scalars())
        for u in DEMO_USERS:
            if u["username"] in taken:
                continue
            user = runtime.accounts.add_user(
                s, username=u["username"], password=DEMO_PASSWORD, roles=u["roles"],
                agency=u["agency"], agency_kind=u["kind"], display_name=u["name"],
                # .invalid never reaches a real mailbox; a local SMTP catcher shows it.
                email=f"{u['username']}@demo.invalid",
            )  # fmt: skip
            if u["username"] in DEMO_AGENCY_CONTACTS:
                runtime.outbox.set_agency_contact(s, user.agency_id, user.id)


# (referrer, subject, concerns, summary, immediate danger, steps to take)
STORIES: list[tuple[str, dict, list[str], str, bool, list[tuple[str, str, dict]]]] = [
    ("practitioner", {"given_name": "Leah", "family_name": "Morgan", "date_of_birth": "2014-03-09",
                      "gender": "female", "postcode": "NG1 4AB"},
     ["neglect"], "Leah has come to school hungry most days this month and her uniform is "
     "unwashed. Mum seemed distracted at pick-up.", False, []),
    ("gp", {"given_name": "Tyler", "family_name": "Okafor", "date_of_birth": "2011-11-21",
            "gender": "male"},
     ["physical_abuse"], "Bruising to upper arms in a grip pattern; account from the child does "
     "not fit the injuries.", False,
     [("mash.officer", "screen", {"rag": "amber", "rationale": "Injury unexplained; no immediate "
                                  "danger reported; needs checks today"})]),
    ("police", {"given_name": "Kayla", "family_name": "Hughes", "date_of_birth": "1994-06-02",
                "gender": "female"},
     ["domestic_abuse", "stalking"], "Third call-out this year. Ex-partner attended address "
     "in breach of bail; threats to kill made in front of the children.", True,
     [("mash.officer", "screen", {"rag": "red", "rationale": "Threats to kill, children "
                                  "present, breach of bail"})]),
    ("practitioner", {"given_name": "Mason", "family_name": "Clarke", "date_of_birth": "2009-01-15",
                      "gender": "male"},
     ["child_criminal_exploitation", "missing_episodes"], "Missing overnight twice; found in "
     "another county with new phone and cash.", False,
     [("mash.officer", "screen", {"rag": "amber", "rationale": "Indicators of county lines"}),
      ("mash.officer", "request_checks", {"agencies": ["police", "education",
                                                      "children_social_care"], **ASKED}),
      ("mash.officer", "record_check", {"agency": "police", "summary": "Stopped with older "
                                        "males known for supply", "risk_found": True,
                                        **ANSWERED})]),
    ("gp", {"given_name": "Edith", "family_name": "Barnes", "date_of_birth": "1939-08-30",
            "gender": "female"},
     ["self_neglect"], "Lives alone; house cold, little food, declining help from family.", False,
     [("mash.officer", "screen", {"rag": "green", "rationale": "No acute risk; care needs"}),
      ("mash.officer", "refer_for_decision", {"rationale": "Clear adult care needs; checks "
                                             "would not change the route"})]),
    ("practitioner", {"given_name": "Aisha", "family_name": "Rahman", "date_of_birth": "2012-07-04",
                      "gender": "female"},
     ["emotional_abuse"], "Says she is shouted at and locked in her room as punishment.", False,
     [("mash.officer", "screen", {"rag": "amber", "rationale": "Repeated emotional harm"}),
      ("mash.officer", "request_checks", {"agencies": ["education", "health"], **ASKED}),
      ("mash.officer", "record_check", {"agency": "health", "summary": "Two A&E attendances "
                                        "this year, self-harm", "risk_found": True, **ANSWERED}),
      ("mash.officer", "complete_checks", {}),
      ("mash.manager", "decide", {"outcome": "child_in_need_assessment", "onward": [],
                                  "rationale": "Cumulative harm; needs assessment",
                                  "feedback_to_referrer": "A social worker will assess the "
                                  "family's needs."})]),
    ("practitioner", {"given_name": "Noah", "family_name": "Fletcher",
                      "date_of_birth": "2016-02-11", "gender": "male"},
     ["other"], "Parent asked for help with housing and food bank vouchers.", False,
     [("mash.officer", "screen", {"rag": "green", "rationale": "Support need, not risk"}),
      ("mash.officer", "refer_for_decision", {"rationale": "Clear early help route"}),
      ("mash.manager", "decide", {"outcome": "early_help", "onward": [],
                                  "rationale": "Family consent to early help",
                                  "feedback_to_referrer": "Early help has been offered."})]),
]  # fmt: skip


_DASH_HIGH = {"answers": {str(i): "yes" for i in range(1, 17)}, "police_incidents_12m": 3}

# Direct referrals into the specialist pathways: (referrer, pathway, subject, concerns,
# summary, extra body fields, steps).
SPECIALIST: list[tuple[str, str, dict, list[str], str, dict, list[tuple[str, str, dict]]]] = [
    ("police", "marac", {"given_name": "Gemma", "family_name": "Doyle",
                         "date_of_birth": "1988-04-17", "gender": "female",
                         "household": [{"name": "Ruby Doyle", "age": 7,
                                        "relationship": "daughter"}]},
     ["domestic_abuse", "stalking"], "Partner strangled her last night; she believes he will "
     "kill her. Daughter was in the house.", {"dash": _DASH_HIGH},
     [("marac.coordinator", "accept", {}),
      ("marac.coordinator", "allocate_idva", {"user": "idva"}),
      ("marac.coordinator", "list", {})]),
    ("nrm.responder", "nrm", {"given_name": "Luan", "family_name": "Berisha",
                              "date_of_birth": "2010-09-01", "gender": "male"},
     ["modern_slavery", "child_criminal_exploitation"], "Found working in a car wash, "
     "sleeping on site; says he owes money for his journey.", {},
     [("nrm.responder", "submit_referral", {"exploitation_types": ["labour", "criminal"]})]),
    ("prevent.officer", "channel", {"given_name": "Callum", "family_name": "Reid",
                                    "date_of_birth": "2009-12-03", "gender": "male"},
     ["radicalisation"], "School reports he is sharing extremist videos and talks of a "
     "coming race war.", {},
     [("prevent.officer", "start_gateway", {}), ("prevent.officer", "pass_to_panel", {}),
      ("channel.chair", "record_vaf", {"engagement": "high", "intent": "medium",
                                       "capability": "low", "factors": ["grievance", "identity",
                                       "us_and_them"], "summary": "Isolated, seeking belonging"})]),
    ("gang.worker", "gang_exit", {"given_name": "Jerome", "family_name": "Campbell",
                                  "date_of_birth": "2007-05-20", "gender": "male"},
     ["gang_involvement"], "Wants out after a friend was stabbed; worried for his sister.", {},
     [("gang.worker", "check_eligibility", {}), ("gang.worker", "start_assessment", {}),
      ("gang.worker", "agree_plan", {"needs": ["relocation", "education_employment"],
                                     "goals": "College place and a move out of the area"})]),
    ("iom.officer", "iom", {"given_name": "Darren", "family_name": "Pike",
                            "date_of_birth": "1985-02-14", "gender": "male"},
     ["other"], "Twelve acquisitive offences in a year; released last month.", {},
     [("iom.officer", "select", {"rationale": "Prolific, high harm"}),
      ("iom.officer", "rate", {"rating": "red", "rationale": "Missed two appointments"})]),
]  # fmt: skip


def load_meetings(runtime) -> None:
    """A MARAC and a Channel panel next week, if none is set up for the future."""
    from datetime import timedelta

    from referral_engine.clock import LONDON
    from referral_engine.storage.models import Meeting

    today = runtime.clock.now().astimezone(LONDON).date()
    chairs = {"marac": "marac.coordinator", "channel": "channel.chair"}
    for offset, pathway in enumerate(("marac", "channel")):
        with runtime.db.reading() as s:
            future = s.execute(
                sa.select(Meeting.id).where(Meeting.pathway == pathway, Meeting.date >= today)
            ).first()
        if future is None:
            day = today + timedelta(days=7 + offset)
            runtime.meetings.create(_actor(runtime, chairs[pathway]), pathway, day, 12)


def _walk(runtime, case_id: int, steps) -> None:
    for step_who, event, data in steps:
        with runtime.db.reading() as s:
            version = s.get(Case, case_id).version
        runtime.engine.fire(case_id, event, _actor(runtime, step_who), data, version)


def load_stories(runtime, quiet: bool) -> int:
    made = 0
    total = len(STORIES) + sum(p in runtime.workflows.pathways for _, p, *_ in SPECIALIST)
    for i, (who, subject, concerns, summary, danger, steps) in enumerate(STORIES):
        actor = _actor(runtime, who)
        body = {
            "pathway": "mash", "subject": subject, "concerns": concerns, "summary": summary,
            "immediate_danger": danger, "consent": "given" if not danger else "not_sought",
            "consent_reason": None if not danger else "Risk of significant harm to children",
        }  # fmt: skip
        if "domestic_abuse" in concerns:  # a domestic-abuse referral carries its DASH
            body["dash"] = _DASH_HIGH
        created = runtime.referrals.create(actor, body, idempotency_key=f"demo-story-{i}")
        if created["replayed"]:
            continue
        made += 1
        _walk(runtime, created["case_id"], steps)
    load_meetings(runtime)
    for i, (who, pathway, subject, concerns, summary, extra, steps) in enumerate(SPECIALIST):
        if pathway not in runtime.workflows.pathways:
            continue
        body = {"pathway": pathway, "subject": subject, "concerns": concerns,
                "summary": summary, "consent": "given", **extra}  # fmt: skip
        created = runtime.referrals.create(
            _actor(runtime, who), body, idempotency_key=f"demo-specialist-{i}"
        )
        if created["replayed"]:
            continue
        made += 1
        _walk(runtime, created["case_id"], steps)
    if not quiet:
        print(f"demo referrals: {made} new, {total - made} already loaded")
    return made


def load_demo(runtime, quiet: bool = False) -> None:
    load_users(runtime)
    load_stories(runtime, quiet)
    if not quiet:
        print("demo accounts (password for all: " + DEMO_PASSWORD + "):")
        for u in DEMO_USERS:
            print(f"  {u['username']:<18} {', '.join(u['roles'])}")


# --- synthetic scale -------------------------------------------------------------------

GIVEN = [
    "Amy",
    "Ben",
    "Chloe",
    "Daniel",
    "Ella",
    "Finn",
    "Grace",
    "Harry",
    "Isla",
    "Jack",
    "Kai",
    "Lily",
    "Mia",
    "Noah",
    "Olivia",
    "Oscar",
    "Poppy",
    "Ruby",
    "Sophie",
    "Theo",
    "Zara",
    "Yusuf",
    "Amara",
    "Leon",
    "Maya",
    "Ravi",
    "Sara",
    "Tom",
    "Ivy",
    "Omar",
]
FAMILY = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies",
          "Patel", "Khan", "Evans", "Thomas", "Roberts", "Walker", "Wright", "Robinson",
          "Thompson", "White", "Hughes", "Edwards", "Green", "Hall", "Wood", "Harris", "Lewis",
          "Martin", "Jackson", "Clarke", "Ahmed", "Begum"]  # fmt: skip


def paths(wf: Workflow) -> dict[str, list[tuple[str, str, str]]]:
    """For each state, the shortest list of (event, from, to) that reaches it."""
    found: dict[str, list[tuple[str, str, str]]] = {wf.definition.initial: []}
    todo = deque([wf.definition.initial])
    while todo:
        state = todo.popleft()
        for name, ev in wf.definition.events.items():
            for sources, dest in event_routes(ev):
                if state in sources and dest and dest not in found:
                    found[dest] = [*found[state], (name, state, dest)]
                    todo.append(dest)
    return found


def load_scale(runtime, n: int, seed: int = 1, progress: bool = True, batch: int = 5000) -> None:
    """Bulk-load `n` synthetic cases across all pathways (see the module docstring)."""
    from tqdm import tqdm

    rng = random.Random(seed)  # noqa: S311 - synthetic data, not secrets
    now = utcnow()
    workflows = list(runtime.workflows.current.values())
    routes = {wf.pathway: paths(wf) for wf in workflows}
    with runtime.db.reading() as s:
        referrer = s.execute(
            sa.select(User.id, User.agency_id).where(User.username == "practitioner")
        ).one()
    bar = tqdm(total=n, unit=" cases", desc="synthetic cases", disable=not progress,
               file=sys.stderr)  # fmt: skip
    actor = runtime.access.actor(
        user_id=None, username="demo:scale", display_name="Demo bulk loader", roles=[],
        source="cli",
    )  # fmt: skip
    done = 0
    while done < n:
        size = min(batch, n - done)
        with runtime.db.transaction() as s:
            case_ids = _scale_batch(s, rng, size, now, workflows, routes, referrer, runtime)
            # The case ids it covers: `audit verify` finds each case's history audited.
            runtime.audit.record(
                s, actor, "cli:demo:bulk_load", target="cases",
                summary={"cases": size, "seed": seed, "offset": done,
                         "case_ids": [min(case_ids), max(case_ids)]},
            )  # fmt: skip
        done += size
        bar.update(size)
    bar.close()


def _scale_batch(s, rng, size, now, workflows, routes, referrer, runtime) -> list[int]:
    conn = s.connection()
    persons, referrals = [], []
    for _ in range(size):
        given, family = rng.choice(GIVEN), rng.choice(FAMILY)
        dob = date(1950, 1, 1) + timedelta(days=rng.randrange(0, 27000))
        persons.append({"given_name": given, "family_name": family, "given_key": normalise(given),
                        "family_key": normalise(family), "family_phonetic": phonetic(family),
                        "date_of_birth": dob, "created_at": now})  # fmt: skip
    person_ids = _insert_ids(conn, Person.__table__, persons)
    concerns = list(runtime.policy.reference.concerns)
    received = []
    for i, pid in enumerate(person_ids):
        at = now - timedelta(minutes=rng.randrange(0, 60 * 24 * 365 * 3))
        received.append(at)
        p = persons[i]
        referrals.append({
            "reference": f"SY-{rng.getrandbits(48):012X}", "referrer_id": referrer.id,
            "agency_id": referrer.agency_id, "agency_kind": "education",
            "pathway": "mash", "person_id": pid,
            "subject": {"given_name": p["given_name"], "family_name": p["family_name"],
                        "date_of_birth": p["date_of_birth"].isoformat()},
            "concerns": [rng.choice(concerns)], "summary": "Synthetic referral for load testing.",
            "immediate_danger": False, "consent": "given", "details": {}, "received_at": at,
            "is_child": p["date_of_birth"] > (now.date() - timedelta(days=18 * 365)),
            "possible_matches": [],
        })  # fmt: skip
    referral_ids = _insert_ids(conn, Referral.__table__, referrals)
    cases, plans = [], []
    for i, rid in enumerate(referral_ids):
        wf = rng.choice(workflows)
        state, path = rng.choice(list(routes[wf.pathway].items()))
        closed = wf.is_terminal(state)
        rag = rng.choice(["red", "amber", "green", None])
        due = None if closed else received[i] + timedelta(hours=rng.randrange(1, 24 * 14))
        cases.append({
            "pathway": wf.pathway, "state": state, "version": len(path) + 1,
            "workflow_version": wf.version, "person_id": person_ids[i], "referral_id": rid,
            "agency_id": referrer.agency_id, "rag": rag, "priority": 0 if rag == "red" else 1,
            "due_at": due, "closed": closed, "attributes": {"synthetic": True},
            "opened_at": received[i], "updated_at": received[i],
            "closed_at": received[i] if closed else None,
        })  # fmt: skip
        plans.append((wf, path, due, received[i]))
    case_ids = _insert_ids(conn, Case.__table__, cases)
    history, deadlines = [], []
    for cid, (wf, path, due, at) in zip(case_ids, plans, strict=True):
        history.append({"case_id": cid, "version": 1, "event": "open", "from_state": None,
                        "to_state": wf.definition.initial, "actor_id": None,
                        "actor_name": "Demo bulk loader", "at": at,
                        "data": {"synthetic": True}})  # fmt: skip
        for v, (event, src, dest) in enumerate(path, start=2):
            history.append({"case_id": cid, "version": v, "event": event, "from_state": src,
                            "to_state": dest, "actor_id": None, "actor_name": "Demo bulk loader",
                            "at": at, "data": {"synthetic": True}})  # fmt: skip
        if due is not None:
            deadlines.append({"case_id": cid, "name": "synthetic", "label": "Synthetic deadline",
                              "due_at": due, "set_at": at, "status": "open",
                              "on_due": "escalate"})  # fmt: skip
    _bulk_insert(conn, CaseHistory.__table__, history)
    if deadlines:
        _bulk_insert(conn, Deadline.__table__, deadlines)
    return case_ids


def _bulk_insert(conn, table, rows: list[dict]) -> None:
    """Insert many rows of the same columns in one driver call."""
    Statement(table.insert().values({c: sa.bindparam(c) for c in rows[0]})).run_many(conn, rows)


def _insert_ids(conn, table, rows: list[dict]) -> list[int]:
    """Insert many rows and return their ids, in order.

    On SQLite the batch holds the only write lock, so it takes the next ids itself: with
    RETURNING in parameter order SQLAlchemy sends one INSERT a row there, which made a
    million-case load take hours.
    """
    if conn.dialect.name != "sqlite":
        result = conn.execute(
            table.insert().returning(table.c.id, sort_by_parameter_order=True), rows
        )
        return [r[0] for r in result]
    start = (conn.execute(sa.select(sa.func.max(table.c.id))).scalar() or 0) + 1
    ids = list(range(start, start + len(rows)))
    _bulk_insert(conn, table, [{**row, "id": i} for row, i in zip(rows, ids, strict=True)])
    return ids
