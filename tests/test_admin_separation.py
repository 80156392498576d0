"""Separation of duties (issue 19): no sequence of administrator actions reaches case
content, however the administrator combines them (accounts they create, second
administrators they create and act as, roles they give, resets, disabling).

The model: an administrator controls every account they create (they chose its email, so
its set-password link reaches them) and every account a controlled administrator
creates. Accounts made by others (the `staff` fixture) are not controlled: a reset of
one sends its link to that person's own address. The property: after every step, no
controlled account can read a case (MASH or Channel), a person, or the audit log, or
approve a role. A role that reads case content is only ever asked for; only an access
approver, who is never an administrator-controlled account, can approve it.
"""

from __future__ import annotations

import itertools

import pytest
from conftest import add_approver, referral_body
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from referral_engine.accounts.grants import needs_approval
from referral_engine.errors import DomainError, Forbidden, NotFound

CASE_CONTENT = (
    "mash:case:view", "mash:history:view", "channel:case:view", "channel:history:view",
    "marac:case:view", "nrm:case:view", "gang_exit:case:view", "iom:case:view",
    "person:person:view", "audit:log:view", "report:cases:export", "channel:case:break_glass",
    "access:grant:approve",
)  # fmt: skip

ROLES = st.lists(
    st.sampled_from(
        ["admin", "auditor", "prevent_officer", "channel_chair", "practitioner", "mash_manager",
         "access_approver", "idva"]
    ),
    min_size=1, max_size=3, unique=True,
)  # fmt: skip
STEP = st.one_of(
    st.tuples(st.just("create"), st.integers(0, 5), ROLES),
    st.tuples(st.just("set_roles"), st.integers(0, 5), st.integers(0, 30), ROLES),
    st.tuples(st.just("reset"), st.integers(0, 5), st.integers(0, 30)),
    st.tuples(st.just("disable"), st.integers(0, 5), st.integers(0, 30), st.booleans()),
    st.tuples(st.just("agency"), st.integers(0, 5), st.integers(0, 30)),
    st.tuples(st.just("approve"), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("list_requests"), st.integers(0, 5)),
)


def test_which_roles_an_administrator_grants_alone(runtime):
    """Only roles without case content; every role with it (and the approver) waits."""
    alone = sorted(r for r in runtime.policy.roles if not needs_approval(runtime.policy, r))
    assert alone == ["admin", "practitioner"]


@pytest.fixture
def world(runtime, staff):
    mash = runtime.referrals.create(staff["teacher"].actor, referral_body(), None)["case_id"]
    channel = runtime.referrals.create(
        staff["prevent"].actor, referral_body(pathway="channel", concerns=["radicalisation"]),
        None,
    )["case_id"]  # fmt: skip
    return {"cases": [mash, channel], "person": runtime.cases.view(staff["auditor"].actor, mash)}


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(STEP, max_size=10))
def test_no_sequence_of_admin_actions_reads_a_case(runtime, staff, world, steps):
    rt = runtime
    fresh = next(_names)
    controlled = [staff["admin"].user_id]  # admin-role accounts the attacker drives first
    everyone = [p.user_id for p in staff.values()]

    for n, step in enumerate(steps):
        kind, by = step[0], controlled[step[1] % len(controlled)]
        me = _actor(rt, by)
        if me is None:
            continue
        try:
            if kind == "create":
                made = rt.accounts.create_user(
                    me, username=f"x{fresh}n{n}", roles=step[2], agency="Council IT",
                    email=f"attacker+{fresh}{n}@example.org", display_name="Made By Admin",
                )  # fmt: skip
                controlled.append(made["id"])
            elif kind == "set_roles":
                pool = everyone + controlled
                rt.accounts.set_roles(me, pool[step[2] % len(pool)], step[3])
            elif kind == "reset":
                pool = everyone + controlled
                rt.accounts.reset_password(me, pool[step[2] % len(pool)])
            elif kind == "disable":
                pool = everyone + controlled
                rt.accounts.set_disabled(me, pool[step[2] % len(pool)], step[3])
            elif kind == "agency":
                pool = everyone + controlled
                rt.accounts.set_agency(me, pool[step[2] % len(pool)], "City Police")
            elif kind == "approve":
                waiting = _open_requests(rt)
                if waiting:
                    rt.accounts.decide_role_request(me, waiting[0], step[2])
            elif kind == "list_requests":
                rt.accounts.role_requests(me)
        except DomainError:
            pass
        for uid in controlled:
            _cannot_read(rt, _actor(rt, uid), world)


def _actor(rt, uid):
    with rt.db.reading() as s:
        return rt.accounts.actor_for_user(s, uid, source="web", request_id=None)


def _open_requests(rt) -> list[int]:
    import sqlalchemy as sa

    from referral_engine.storage.models import RoleRequest

    with rt.db.reading() as s:
        return list(
            s.execute(sa.select(RoleRequest.id).where(RoleRequest.decided_at.is_(None))).scalars()
        )


def _cannot_read(rt, who, world) -> None:
    if who is None:  # disabled: cannot sign in at all
        return
    assert not [p for p in CASE_CONTENT if rt.access.can(who, p)], who.roles
    assert rt.access.visible_pathways(who) == []
    for case_id in world["cases"]:
        with pytest.raises((NotFound, Forbidden)):
            rt.cases.view(who, case_id)


_names = itertools.count()


def test_a_role_that_reads_cases_needs_a_second_person(runtime, staff):
    """Asked for by an administrator, it is held only once an approver approves: never the
    one who asked (even an approver who is also an administrator), never for oneself."""
    rt, admin = runtime, staff["admin"].actor
    approver = add_approver(rt)
    made = rt.accounts.create_user(
        admin, username="newauditor", roles=["auditor"], agency="Internal Audit",
        email="auditor@example.org", display_name="New Auditor",
    )  # fmt: skip
    assert made["roles"] == [] and made["pending_roles"] == ["auditor"]
    assert rt.access.visible_pathways(_actor(rt, made["id"])) == []
    # An approver who also administers cannot approve what they asked for ...
    both = add_approver(rt, "both")
    rt.accounts.set_roles(admin, both.user_id, ["access_approver", "admin"])
    both_actor = _actor(rt, both.user_id)
    rt.accounts.set_roles(both_actor, staff["teacher"].user_id, ["practitioner", "idva"])
    theirs = [w for w in rt.accounts.role_requests(approver.actor) if w["role"] == "idva"]
    with pytest.raises(Forbidden, match="another approver"):
        rt.accounts.decide_role_request(both_actor, theirs[0]["id"], True)
    # ... nor a role for themselves.
    rt.accounts.set_roles(admin, both.user_id, ["access_approver", "admin", "auditor"])
    own = [w for w in rt.accounts.role_requests(approver.actor) if w["username"] == "both"]
    with pytest.raises(Forbidden, match="yourself"):
        rt.accounts.decide_role_request(both_actor, own[0]["id"], True)
    waiting = [
        w for w in rt.accounts.role_requests(approver.actor) if w["username"] == "newauditor"
    ]
    with pytest.raises(Forbidden):  # an administrator holds no access:grant:approve
        rt.accounts.decide_role_request(admin, waiting[0]["id"], True)
    done = rt.accounts.decide_role_request(approver.actor, waiting[0]["id"], True)
    assert done["outcome"] == "approved"
    assert "mash" in rt.access.visible_pathways(_actor(rt, made["id"]))
    with pytest.raises(NotFound):  # decided once only
        rt.accounts.decide_role_request(approver.actor, waiting[0]["id"], False)
    decided = sorted(
        (d for a in ("approve", "refuse") for src in ("api", "web")
         for d in audit_docs(rt, f"{src}:grant:{a}")),
        key=lambda d: d["id"],
    )  # fmt: skip
    seen = [(d["actor"]["username"], d["outcome"], d["summary"].get("status")) for d in decided]
    assert seen == [
        ("both", "refused", 403), ("both", "refused", 403), ("admin", "refused", 403),
        ("approver", "allowed", None), ("approver", "refused", 404),
    ]  # fmt: skip
    assert decided[3]["summary"]["role"] == "auditor"


def audit_docs(rt, action: str) -> list[dict]:
    import sqlalchemy as sa

    from referral_engine.audit.log import rows_for
    from referral_engine.storage.models import AuditEvent

    with rt.db.reading() as s:
        return list(rows_for(s, sa.and_(AuditEvent.action == action), 1000))
