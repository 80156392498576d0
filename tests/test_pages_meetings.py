"""Meetings, agendas, the person page (with merge and undo) and pathway diagrams, through
HTTP as a browser uses them: cookie sessions signed in through /login, CSRF-protected
forms. Every test runs on SQLite and on PostgreSQL (conftest's `backend`).

Cases are set up through the services (conftest's `refer` and `fire`, the same engine the
pages use); what is checked is what each person's pages show them.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from itertools import pairwise
from typing import Any

import pytest
from conftest import START, csrf_of

from referral_engine.clock import LONDON

TODAY = START.astimezone(LONDON).date()  # Wednesday 25 November 2026
NAMES = ["Dana", "Erin", "Freya", "Gwen"]


def victim(n: int = 0) -> dict[str, Any]:
    return {
        "given_name": NAMES[n], "family_name": "Price", "date_of_birth": f"19{80 + n}-04-12",
        "gender": "female", "address": f"{n + 4} Mill Lane", "postcode": "AB2 3CD",
    }  # fmt: skip


def dash(yes: int) -> dict[str, Any]:
    return {"answers": {str(i): ("yes" if i <= yes else "no") for i in range(1, 25)}}


def refer_marac(refer, n: int = 0, yes: int = 14) -> int:
    return refer(
        "constable", pathway="marac", subject=victim(n), concerns=["domestic_abuse"],
        summary="Partner strangled her last night.", consent="not_sought",
        consent_reason="High risk", victim_aware=False, victim_aware_reason="Unsafe to tell her",
        dash=dash(yes),
    )["case_id"]  # fmt: skip


def new_meeting(runtime, staff, day: date, pathway: str = "marac", capacity: int = 10) -> int:
    who = staff["chair" if pathway == "channel" else "coordinator"].actor
    return runtime.meetings.create(who, pathway, day, capacity)["id"]


def article(html: str, name: str) -> str:
    """The agenda block of the case whose person is called `name`."""
    for block in re.findall(r'<article class="agenda-item.*?</article>', html, re.S):
        if name in block:
            return block
    raise AssertionError(f"{name} is not on the agenda")


def section(html: str, heading_id: str) -> str:
    """From the <h2> with this id to the next <h2>."""
    start = html.index(f'id="{heading_id}"')
    end = html.find("<h2", start)
    return html[start : end if end > 0 else len(html)]


# --- setting up a meeting ----------------------------------------------------------------


def test_coordinator_sets_up_a_meeting_and_a_past_date_keeps_what_was_typed(browser_for, runtime):
    coordinator = browser_for("coordinator")
    page = coordinator.get("/meetings")
    assert page.status_code == 200
    assert "Set up a meeting" in page.text
    assert 'value="marac"' in page.text and 'value="channel"' not in page.text
    token = csrf_of(page.text)

    past = coordinator.post(
        "/meetings",
        data={"csrf": token, "pathway": "marac", "date": "2026-11-02", "capacity": "12"},
    )
    assert past.status_code == 422
    assert "There is a problem" in past.text and 'href="#meeting-date"' in past.text
    field = past.text[past.text.index('for="meeting-date"') : past.text.index('id="meeting-date"')]
    assert "is in the past" in field  # the message sits beside its field
    assert 'value="2026-11-02"' in past.text and 'value="12"' in past.text
    assert 'aria-invalid="true"' in past.text

    bad = coordinator.post(
        "/meetings", data={"csrf": token, "pathway": "marac", "date": "", "capacity": "none"}
    )
    assert bad.status_code == 422
    assert 'href="#meeting-date"' in bad.text and 'href="#meeting-capacity"' in bad.text

    forged = coordinator.post(
        "/meetings", data={"pathway": "marac", "date": "2026-12-02", "capacity": "12"}
    )
    assert forged.status_code == 403
    auditor = runtime.access.actor(user_id=None, username="a", display_name="a", roles=["auditor"])
    assert runtime.meetings.list(auditor)["items"] == []

    made = coordinator.post(
        "/meetings",
        data={"csrf": token, "pathway": "marac", "date": "2026-12-02", "capacity": "12"},
        follow_redirects=False,
    )
    assert made.status_code == 303
    meeting_id = int(made.headers["location"].split("/")[2].split("?")[0])
    agenda = coordinator.get(made.headers["location"])
    assert agenda.status_code == 200 and "Wednesday 2 December 2026" in agenda.text
    listing = coordinator.get("/meetings").text
    assert f'href="/meetings/{meeting_id}"' in listing and "0 of 12" in listing


def test_only_those_who_manage_meetings_get_the_form(browser_for, runtime, staff):
    idva = browser_for("idva")
    page = idva.get("/meetings")
    assert page.status_code == 200 and "Set up a meeting" not in page.text
    r = idva.post(
        "/meetings",
        data={"csrf": csrf_of(page.text), "pathway": "marac", "date": "2026-12-02",
              "capacity": "5"},
    )  # fmt: skip
    assert r.status_code == 403


# --- the agenda ------------------------------------------------------------------------


def test_agenda_shows_repeats_dash_criteria_and_the_hearings_actions(
    browser_for, runtime, staff, refer, fire, clock
):
    first = new_meeting(runtime, staff, TODAY + timedelta(days=7))
    second = new_meeting(runtime, staff, TODAY + timedelta(days=28))
    earlier = refer_marac(refer, 0, yes=14)
    repeat = refer_marac(refer, 0, yes=2)  # the same person again within 12 months
    other = refer_marac(refer, 1, yes=15)
    for case_id in (earlier, repeat, other):
        fire(case_id, "coordinator", "accept")
        fire(case_id, "coordinator", "list", {"meeting_id": first})
    waiting = refer_marac(refer, 2, yes=16)
    fire(waiting, "coordinator", "accept")

    coordinator = browser_for("coordinator")
    page = coordinator.get(f"/meetings/{first}")
    assert page.status_code == 200
    block = article(page.text, "Erin Price")
    assert "DASH score" in block and ">15<" in block and "Visible high risk" in block
    assert "tag-repeat" not in block
    repeats = [b for b in re.findall(r'<article class="agenda-item.*?</article>', page.text, re.S)
               if f'href="/cases/{repeat}"' in b]  # fmt: skip
    assert len(repeats) == 1 and "Repeat: referred again within 12 months" in repeats[0]
    assert "agenda-item--repeat" in repeats[0] and ">2<" in repeats[0]
    assert f'href="/cases/{other}#event-hear"' in page.text  # where the hearing is recorded
    # Accepted and waiting for a meeting, with the way to list it.
    waiting_html = section(page.text, "waiting")
    assert "Freya Price" in waiting_html and f'href="/cases/{waiting}#event-list"' in waiting_html

    # On the meeting's day, the hearing sets the action plan; it shows with owners and due
    # dates.
    clock.at = START + timedelta(days=7)
    coordinator = browser_for("coordinator")
    fire(other, "coordinator", "hear", {"risks": "Threats to kill", "actions": [
        {"owner_agency": "housing", "description": "Move her to a refuge",
         "due": (TODAY + timedelta(days=10)).isoformat()},
        {"owner_agency": "police", "description": "Flag the address",
         "due": (TODAY + timedelta(days=14)).isoformat()},
    ]})  # fmt: skip
    block = article(coordinator.get(f"/meetings/{first}").text, "Erin Price")
    assert "Flag the address" in block and "Police" in block and "9 Dec 2026" in block
    fire(other, "coordinator", "complete_action", {"action_id": "A2", "outcome": "Flag set"})
    block = article(coordinator.get(f"/meetings/{first}").text, "Erin Price")
    assert "Move her to a refuge" in block and "Housing" in block
    assert "Threats to kill" in block
    assert "5 Dec 2026" in block and "Overdue" not in block

    # Three weeks on, the refuge action is overdue and carries over to the next meeting.
    clock.advance(timedelta(days=21))
    coordinator = browser_for("coordinator")
    later = coordinator.get(f"/meetings/{second}").text
    carried = section(later, "carried-over")
    assert "Erin Price" in carried and "Move her to a refuge" in carried
    assert 'class="overdue"' in carried and "Overdue" in carried
    assert "Flag the address" not in carried  # done: nothing to carry
    assert "Overdue actions" in later


def test_a_repeat_shows_the_earlier_cases_plan_apart_from_its_own(
    browser_for, runtime, staff, refer, fire, clock
):
    first = new_meeting(runtime, staff, TODAY + timedelta(days=7))
    second = new_meeting(runtime, staff, TODAY + timedelta(days=28))
    earlier = refer_marac(refer, 3, yes=14)
    fire(earlier, "coordinator", "accept")
    fire(earlier, "coordinator", "list", {"meeting_id": first})
    clock.at = START + timedelta(days=7)  # heard at the first meeting, on its day
    fire(earlier, "coordinator", "hear", {"risks": "Stalking", "actions": [
        {"owner_agency": "housing", "description": "Sanctuary scheme for the house",
         "due": (TODAY + timedelta(days=14)).isoformat()},
    ]})  # fmt: skip
    clock.advance(timedelta(days=2))  # a new incident, two days later
    repeat = refer_marac(refer, 3, yes=0)
    fire(repeat, "coordinator", "accept")
    fire(repeat, "coordinator", "list", {"meeting_id": second})
    clock.at = START + timedelta(days=28)  # and the repeat at the second
    fire(repeat, "coordinator", "hear", {"risks": "Threats", "actions": [
        {"owner_agency": "police", "description": "Bail conditions check",
         "due": (TODAY + timedelta(days=30)).isoformat()},
    ]})  # fmt: skip

    page = browser_for("coordinator").get(f"/meetings/{second}").text
    block = next(
        b for b in re.findall(r'<article class="agenda-item.*?</article>', page, re.S)
        if f'href="/cases/{repeat}"' in b
    )  # fmt: skip
    assert "Repeat: referred again within 12 months" in block
    own, _, before = block.partition("Earlier referral")
    assert "Bail conditions check" in own and "Sanctuary scheme" not in own
    assert f'href="/cases/{earlier}"' in before and "Sanctuary scheme for the house" in before


def test_an_idva_sees_only_the_cases_allocated_to_them(browser_for, runtime, staff, refer, fire):
    meeting = new_meeting(runtime, staff, TODAY + timedelta(days=7))
    mine, theirs = refer_marac(refer, 0), refer_marac(refer, 1)
    for case_id in (mine, theirs):
        fire(case_id, "coordinator", "accept")
        fire(case_id, "coordinator", "list", {"meeting_id": meeting})
    fire(mine, "coordinator", "allocate_idva", {"user": "idva"})

    idva = browser_for("idva")
    assert 'href="/meetings"' in idva.get("/").text
    page = idva.get(f"/meetings/{meeting}")
    assert page.status_code == 200
    assert "Dana Price" in page.text and "Allocated to you" in page.text
    assert "Erin Price" not in page.text and f"/cases/{theirs}" not in page.text
    assert 'id="waiting"' not in page.text  # listing is the coordinator's
    coordinator_view = browser_for("coordinator").get(f"/meetings/{meeting}").text
    assert "Dana Price" in coordinator_view and "Erin Price" in coordinator_view


def test_a_mash_officer_has_no_meetings_link_and_no_agenda(browser_for, runtime, staff):
    meeting = new_meeting(runtime, staff, TODAY + timedelta(days=7))
    officer = browser_for("officer")
    assert 'href="/meetings"' not in officer.get("/").text
    assert officer.get(f"/meetings/{meeting}").status_code == 404
    assert officer.get("/meetings").status_code in (403, 404)
    assert officer.get("/meetings/999999").status_code == 404


def test_channel_panels_and_their_cases_are_invisible_outside_channel(
    browser_for, runtime, staff, refer, fire
):
    panel = new_meeting(runtime, staff, TODAY + timedelta(days=14), pathway="channel")
    case_id = refer(
        "prevent", pathway="channel", concerns=["radicalisation"],
        subject={"given_name": "Sami", "family_name": "Okafor", "date_of_birth": "1999-02-03",
                 "gender": "male", "address": "9 Dock Road", "postcode": "AB9 9ZZ"},
        summary="Sharing extremist material.",
    )["case_id"]  # fmt: skip
    fire(case_id, "prevent", "start_gateway")
    fire(case_id, "prevent", "pass_to_panel")
    fire(case_id, "chair", "record_vaf", {
        "engagement": "low", "intent": "low", "capability": "none", "factors": [],
        "summary": "Early concern",
    })  # fmt: skip
    fire(case_id, "chair", "list_for_panel", {"meeting_id": panel})

    chair = browser_for("chair")
    listing = chair.get("/meetings").text
    assert f'href="/meetings/{panel}"' in listing and "Channel" in listing
    agenda = chair.get(f"/meetings/{panel}").text
    assert "Sami Okafor" in agenda and "DASH" not in agenda

    for who in ("officer", "coordinator"):
        b = browser_for(who)
        assert b.get(f"/meetings/{panel}").status_code == 404
        assert "Sami Okafor" not in b.get("/").text
        page = b.get("/meetings")
        assert f"/meetings/{panel}" not in page.text and "Sami Okafor" not in page.text
        assert b.get(f"/cases/{case_id}").status_code == 404


# --- a person --------------------------------------------------------------------------


def child(family: str = "Bloggs") -> dict[str, Any]:
    return {"given_name": "Jo", "family_name": family, "date_of_birth": "2012-05-01",
            "gender": "female", "address": "1 High Street", "postcode": "AB1 2CD"}  # fmt: skip


def test_person_page_lists_cases_and_warns_of_repeats_and_duplicates(browser_for, refer, runtime):
    first = refer(subject=child())
    second = refer(subject=child(), summary="Again hungry and bruised.")
    assert first["case_id"] != second["case_id"]
    twin = refer(subject=child("Blogs"))  # sounds the same: a possible duplicate
    person_id = _person_of(runtime, first["case_id"])
    twin_id = _person_of(runtime, twin["case_id"])
    assert person_id == _person_of(runtime, second["case_id"]) and twin_id != person_id

    officer = browser_for("officer")
    page = officer.get(f"/people/{person_id}")
    assert page.status_code == 200
    assert "Jo Bloggs" in page.text
    assert "Check before you act" in page.text and "2 referrals in the last 12 months" in page.text
    cases = section(page.text, "cases")
    # newest first
    assert cases.index(f'href="/cases/{second["case_id"]}"') < cases.index(
        f'href="/cases/{first["case_id"]}"'
    )
    assert first["reference"] in page.text and second["reference"] in page.text
    assert "Merge" not in page.text  # a MASH officer may not merge

    twin_page = officer.get(f"/people/{twin_id}").text
    assert "Possible duplicate" in twin_page and f'href="/people/{person_id}"' in twin_page
    assert browser_for("teacher").get(f"/people/{person_id}").status_code in (403, 404)


def test_manager_merges_two_records_and_undoes_it(browser_for, refer, runtime):
    original = refer(subject=child())
    twin = refer(subject=child("Blogs"))
    person_id = _person_of(runtime, original["case_id"])
    twin_id = _person_of(runtime, twin["case_id"])

    manager = browser_for("manager")
    page = manager.get(f"/people/{twin_id}")
    assert "Merge with another record" in page.text
    token = csrf_of(page.text)

    forged = manager.post(f"/people/{twin_id}/merge", data={"into": str(person_id), "reason": "x"})
    assert forged.status_code == 403
    assert _person_of(runtime, twin["case_id"]) == twin_id

    missing = manager.post(
        f"/people/{twin_id}/merge", data={"csrf": token, "into": str(person_id), "reason": " "}
    )
    assert missing.status_code == 422
    assert 'href="#merge-reason"' in missing.text and f'value="{person_id}"' in missing.text
    nobody = manager.post(
        f"/people/{twin_id}/merge", data={"csrf": token, "into": "999999", "reason": "Same DOB"}
    )
    assert nobody.status_code == 422 and "no person 999999" in nobody.text

    merged = manager.post(
        f"/people/{twin_id}/merge",
        data={"csrf": token, "into": str(person_id), "reason": "Same child, misspelt surname"},
        follow_redirects=False,
    )
    assert merged.status_code == 303
    result = manager.get(merged.headers["location"])
    assert result.status_code == 200 and "Records merged" in result.text
    assert "Undo this merge" in result.text and "Moved by the merge" in result.text
    assert f'href="/cases/{twin["case_id"]}"' in result.text
    assert f'href="/cases/{original["case_id"]}"' in result.text
    assert _person_of(runtime, twin["case_id"]) == person_id
    assert manager.get(f"/people/{twin_id}").status_code == 404  # nothing left on it

    undo_url = re.search(r'action="(/people/merges/\d+/undo)"', result.text).group(1)
    assert manager.post(undo_url, data={}).status_code == 403  # CSRF required here too
    undone = manager.post(undo_url, data={"csrf": csrf_of(result.text)}, follow_redirects=False)
    assert undone.status_code == 303
    back = manager.get(undone.headers["location"])
    assert back.status_code == 200 and "Merge undone" in back.text
    assert f'href="/cases/{twin["case_id"]}"' in back.text
    assert _person_of(runtime, twin["case_id"]) == twin_id
    again = manager.post(undo_url, data={"csrf": csrf_of(back.text)})
    assert again.status_code == 409


def _person_of(runtime, case_id: int) -> int:
    from referral_engine.storage.models import Case

    with runtime.db.reading() as s:
        return s.get(Case, case_id).person_id


# --- pathway diagrams ----------------------------------------------------------------


@pytest.mark.parametrize("pathway", ["marac", "channel", "nrm", "mash"])
def test_each_pathways_page_draws_every_state_and_event(browser_for, runtime, pathway):
    b = browser_for("coordinator")
    listing = b.get("/workflows")
    assert listing.status_code == 200 and f'href="/workflows/{pathway}"' in listing.text
    page = b.get(f"/workflows/{pathway}")
    assert page.status_code == 200
    svg = page.text[page.text.index("<svg") : page.text.index("</svg>")]
    definition = runtime.workflows.get(pathway).definition
    for state in definition.states:
        assert f">{state}<" in svg, state
    for event in definition.events:
        assert re.search(rf">{event}( \(automatic\))?<", svg), event
    terminal = [s for s, info in definition.states.items() if info.terminal]
    marked = re.findall(r'<g class="wf-state wf-terminal">.*?</g>', svg, re.S)
    assert len(marked) == len(terminal) and all(
        any(f">{s}<" in g and "(final state)" in g for g in marked) for s in terminal
    )
    assert "<details" in page.text and "stateDiagram" in page.text  # the Mermaid text
    assert "<script" not in svg and 'style="' not in page.text
    alone = b.get(f"/workflows/{pathway}/diagram.svg")
    assert alone.status_code == 200 and alone.headers["content-type"].startswith("image/svg+xml")
    assert alone.text.startswith("<?xml") and all(f">{s}<" in alone.text for s in definition.states)


def test_the_layout_keeps_states_apart_and_forward_arrows_pointing_down(runtime):
    from web.diagram import layout

    for pathway, wf in runtime.workflows.current.items():
        nodes, edges, _loops = layout(wf.describe(runtime.policy))
        rows: dict[int, list] = {}
        for n in nodes.values():
            rows.setdefault(n.layer, []).append(n)
        for row in rows.values():
            row.sort(key=lambda n: n.x)
            for a, b in pairwise(row):
                assert a.x + a.w + a.right < b.x, (pathway, a.key, b.key)
        assert nodes[wf.definition.initial].layer == 0
        for e in edges:
            src, dst = nodes[e.src], nodes[e.dst]
            assert (dst.layer < src.layer) if e.up else (dst.layer > src.layer), (pathway, e)


def test_an_unknown_pathway_is_404_and_the_page_needs_the_right(browser_for):
    assert browser_for("coordinator").get("/workflows/nope").status_code == 404
    assert browser_for("admin").get("/workflows/marac").status_code == 200


def test_these_pages_need_no_inline_style_or_script(browser_for, runtime, staff, refer):
    meeting = new_meeting(runtime, staff, TODAY + timedelta(days=7))
    person = _person_of(runtime, refer()["case_id"])
    pages = {
        "coordinator": ["/meetings", f"/meetings/{meeting}", "/workflows", "/workflows/marac"],
        "manager": [f"/people/{person}"],
    }
    for who, urls in pages.items():
        b = browser_for(who)
        for url in urls:
            r = b.get(url)
            assert r.status_code == 200, url
            assert 'style="' not in r.text and "<script>" not in r.text, url
            assert "/static/meetings.css" in r.text, url
