"""One formatter for every value shown: referral_engine.display, without a database."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from referral_engine.display import (
    Display,
    Record,
    day_text,
    flatten,
    pathway_fields,
    summary_rows,
    when_text,
)
from referral_engine.pathways import Workflows
from referral_engine.policies import load_policy

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def policy():
    return load_policy(ROOT / "policies")


@pytest.fixture(scope="module")
def workflows(policy):
    return Workflows(ROOT / "workflows", policy)


@pytest.fixture(scope="module")
def display(policy):
    ref = policy.reference
    return Display(
        ref.labels(), ref.field_labels,
        users={"idva": "Morgan Blake (IDVA)"}.get,
        meetings={1: "MARAC meeting on 3 December 2026"}.get,
        dash_questions={n: len(v.items) for n, v in policy.dash.versions.items()},
    )  # fmt: skip


def test_times_and_dates_read_as_people_write_them_on_the_uk_clock():
    assert when_text("2026-12-02T16:13:59.514695+00:00") == "2 December 2026, 4:13pm"
    # British Summer Time: 23:30 UTC on 14 May is 00:30 on 15 May in London.
    assert when_text("2026-05-14T23:30:00+00:00") == "15 May 2026, 12:30am"
    assert when_text("2026-12-02T09:00:00+00:00") == "2 December 2026, 9am"
    assert when_text("2026-12-02T12:00:00+00:00", seconds=True) == "2 December 2026, 12:00:00pm"
    assert day_text("1996-05-14") == "14 May 1996"


def test_the_issues_examples_read_as_people_write(display, workflows, policy):
    mash = pathway_fields(workflows.get("mash"), policy.reference.field_labels)
    check = {"agency": "police", "summary": "Known to us", "risk_found": True,
             "lawful_basis": "crime_and_disorder_s115", "recipient": "Duty desk",
             "at": "2026-12-02T04:13:59.514695+00:00", "by": "Jordan Lee (MASH)"}  # fmt: skip
    shown = display.value([check], "checks", mash.attributes)
    assert isinstance(shown, tuple) and isinstance(shown[0], Record)
    assert flatten(shown) == (
        "Agency: Police; What the agency knows: Known to us; Risk found: Yes; "
        "Lawful basis the agency shared on: Crime and Disorder Act 1998 s115; "
        "Received by (team or named contact): Duty desk; When: 2 December 2026, 4:13am; "
        "By: Jordan Lee (MASH)"
    )
    channel = pathway_fields(workflows.get("channel"), policy.reference.field_labels)
    factors = display.value(["grievance", "us_and_them"], "factors", channel.events["record_vaf"])
    assert factors == ("Feelings of grievance and injustice", "Us-and-them thinking")
    marac = pathway_fields(workflows.get("marac"), policy.reference.field_labels)
    assert (
        display.value(1, "meeting_id", marac.events["list"]) == "MARAC meeting on 3 December 2026"
    )
    assert display.value("idva", "user", marac.events["allocate_idva"]) == "Morgan Blake (IDVA)"
    assert display.value("female", "gender") == "Female"
    assert display.value("1996-05-14", "date_of_birth") == "14 May 1996"
    dash = {"version": "partner_24", "score": 13, "threshold": 14, "criteria": []}
    assert display.value(dash, "dash") == "13 of 24, high risk at 14"
    # Field names by their labels; the rationale's label is declared in the workflow YAML.
    assert display.label("lawful_basis") == "Lawful basis"
    assert display.label("rag", mash.attributes) == "RAG rating"
    assert display.label("rag_rationale", mash.attributes) == "Rationale for the RAG rating"


def test_free_text_is_shown_exactly_as_typed(display, workflows, policy):
    mash = pathway_fields(workflows.get("mash"), policy.reference.field_labels)
    # 'police' typed into a text field is not the agency code 'police'.
    assert display.value("police", "rationale", mash.events["screen"]) == "police"


def test_an_audit_summary_names_events_states_and_fields_as_the_pathway_does(display, workflows):
    rows = dict(summary_rows(display, {
        "event": "request_checks", "fields": ["agencies", "lawful_basis"],
        "from": "screening", "to": "information_gathering", "pathway": "mash",
        "reason": "mash:decide",
    }, workflows.current))  # fmt: skip
    assert rows["Event"] == "Request agency checks"
    assert rows["Fields given"] == "Agencies asked, Lawful basis for sharing"
    assert rows["From"] == "Screening" and rows["To"] == "Information gathering"
    assert rows["Pathway"] == "MASH front door"
    assert rows["Reason"] == "MASH front door: Record the MASH decision"


PROGRAM_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}|\bTrue\b|\bFalse\b|\bNone\b|\['|\{'|[a-z]+_[a-z_]+")

values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5)
    | st.sampled_from(["crime_and_disorder_s115", "children_social_care", "us_and_them",
                       "partner_24", "female", "not_known"])
    | st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1),
                   timezones=st.just(UTC)).map(datetime.isoformat)
    | st.dates(min_value=date(1900, 1, 1)).map(date.isoformat),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["lawful_basis", "risk_found", "at", "due", "agency"]),
                      inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


@given(values)
def test_no_stored_value_ever_reads_as_program_output(display, value):
    text = flatten(display.value(value))
    assert not PROGRAM_TEXT.search(text), text


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1)))
def test_a_time_reads_as_the_day_it_is_in_london(at):
    at = at.replace(tzinfo=UTC)
    from referral_engine.clock import LONDON

    local = at.astimezone(LONDON)
    text = when_text(at.isoformat())
    assert text.startswith(f"{local.day} {local:%B %Y}, ")
    assert day_text(at.isoformat()) == f"{local.day} {local:%B %Y}"
    assert (at + timedelta(0)).isoformat()  # the input is left as it was


@pytest.mark.parametrize(
    ("display_name", "greeting"),
    [("Dr Ayo Mensah (Riverside Surgery)", "Ayo"), ("PC Dana Reed", "Dana"),
     ("Sgt Casey Ford (IOM)", "Casey"), ("DS Robin Hale (Prevent)", "Robin"),
     ("Internal Audit", "Internal Audit"), ("System Administrator", "System Administrator"),
     ("Sam Patel (Northgate Academy)", "Sam"), ("Teacher", "Teacher")],
)  # fmt: skip
def test_people_are_greeted_by_name_not_title(display_name, greeting):
    from referral_engine.display import greeting_name

    assert greeting_name(display_name) == greeting


def test_the_header_names_the_agency_once():
    from referral_engine.display import header_name

    assert header_name("Sam Patel (Northgate Academy)", "Northgate Academy") == (
        "Sam Patel · Northgate Academy"
    )
    assert header_name("PC Dana Reed", "City Police") == "PC Dana Reed · City Police"
    assert header_name("Internal Audit", "City Council Internal Audit") == (
        "Internal Audit · City Council Internal Audit"
    )


def test_the_when_filter_keeps_the_day_with_seconds():
    from web.showing import when

    at = "2026-12-02T16:13:59+00:00"
    assert when(at, "%-d %b %Y, %H:%M:%S") == "2 December 2026, 4:13:59pm"
    assert when(at, "%-d %b %Y") == "2 December 2026"
    assert when(at, "%H:%M:%S") == "4:13:59pm"
    assert when(at) == "2 December 2026, 4:13pm"


def test_a_meeting_kept_as_a_case_attribute_reads_as_its_date(display, workflows, policy):
    marac = pathway_fields(workflows.get("marac"), policy.reference.field_labels)
    assert display.value(1, "meeting_id", marac.attributes) == "MARAC meeting on 3 December 2026"
