"""The restricted query (`Access.visible_cases`) and the per-case rule (`Access.can_see`)
say the same thing, for every role of the real policy and any mix of cases.

Every list, count and report filters in SQL with `visible_cases`; a single case is let
through by `can_see`. If the two ever disagreed, a case would be listed that cannot be
opened, or (worse) counted where it may not be seen. Hypothesis builds cases (pathway,
allocation, agency) and actors (roles, agency, break-glass grants) and compares the SQL
answer, run on an in-memory SQLite table, with the Python one. No application database:
the table is built here from the real `Case` columns the rule reads.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from referral_engine.access.rules import Access
from referral_engine.policies.policy import load_policy
from referral_engine.settings import PROJECT_ROOT

POLICY = load_policy(PROJECT_ROOT / "policies")
PATHWAYS = frozenset({"mash", "marac", "nrm", "channel", "gang_exit", "iom"})
ACCESS = Access(POLICY, PATHWAYS)
ROLES = sorted(POLICY.roles)
KINDS = ["police", "health", "voluntary", "local_authority", None]

TABLE = sa.Table(
    "cases",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("pathway", sa.String),
    sa.Column("allocated_to_id", sa.Integer, nullable=True),
    sa.Column("agency_id", sa.Integer, nullable=True),
)


@pytest.fixture(scope="module")
def engine():
    e = sa.create_engine("sqlite://")
    TABLE.metadata.create_all(e)
    return e


cases = st.lists(
    st.fixed_dictionaries(
        {
            "pathway": st.sampled_from(sorted(PATHWAYS)),
            "allocated_to_id": st.one_of(st.none(), st.integers(1, 3)),
            "agency_id": st.one_of(st.none(), st.integers(1, 3)),
        }
    ),
    min_size=1,
    max_size=25,
)
actors = st.fixed_dictionaries(
    {
        "roles": st.lists(st.sampled_from(ROLES), min_size=1, max_size=3, unique=True),
        "user_id": st.integers(1, 3),
        "agency_id": st.one_of(st.none(), st.integers(1, 3)),
        "agency_kind": st.sampled_from(KINDS),
        "glass": st.sets(st.integers(1, 25), max_size=3),
    }
)


@settings(max_examples=100, deadline=None)
@given(rows=cases, who=actors, glass=st.booleans())
def test_the_list_filter_and_the_case_rule_agree(engine, rows, who, glass):
    actor = ACCESS.actor(
        user_id=who["user_id"], username="u", display_name="U", roles=who["roles"],
        agency_id=who["agency_id"], agency_kind=who["agency_kind"],
        glass=frozenset(who["glass"]),
    )  # fmt: skip
    with engine.begin() as conn:
        conn.execute(TABLE.delete())
        conn.execute(TABLE.insert(), [{"id": n, **r} for n, r in enumerate(rows, start=1)])
        listed = set(
            conn.execute(
                sa.select(TABLE.c.id).where(ACCESS.visible_cases(actor, TABLE.c, glass=glass))
            ).scalars()
        )
    bare = actor if glass else ACCESS.actor(
        user_id=who["user_id"], username="u", display_name="U", roles=who["roles"],
        agency_id=who["agency_id"], agency_kind=who["agency_kind"],
    )  # fmt: skip
    expected = {
        n for n, r in enumerate(rows, start=1) if ACCESS.can_see(bare, SimpleNamespace(id=n, **r))
    }
    assert listed == expected


def test_channel_is_invisible_to_every_role_policy_does_not_name():
    """DOMAIN.md: only Prevent, the Channel chair and auditors see Channel at all."""
    seeing = {
        role
        for role in ROLES
        if ACCESS.can(
            ACCESS.actor(user_id=1, username="u", display_name="U", roles=[role]),
            "channel:case:view",
        )
    }
    assert seeing == {"prevent_officer", "channel_chair", "auditor"}
