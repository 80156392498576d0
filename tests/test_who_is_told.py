"""Who is told what (issue 18): the MARAC coordinator hears of each new MARAC referral; an
IDVA's home counts the cases allocated to them; an IDVA's meeting page links only pages
the IDVA may open. Each runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from datetime import timedelta

import sqlalchemy as sa
from test_pages_meetings import TODAY, new_meeting, refer_marac

from referral_engine.storage.models import Outbox


def notices(runtime, kind: str) -> list[Outbox]:
    with runtime.db.reading() as s:
        return list(s.execute(sa.select(Outbox).where(Outbox.kind == kind)).scalars())


def test_the_coordinator_is_told_of_a_new_marac_referral(runtime, staff, refer):
    case_id = refer_marac(refer, 0)
    told = notices(runtime, "marac_referral")
    assert {n.recipient_user_id for n in told} == {staff["coordinator"].user_id}
    assert [n.case_id for n in told] == [case_id]
    # A MASH referral tells no coordinator.
    refer("teacher")
    assert len(notices(runtime, "marac_referral")) == 1


def test_an_idva_home_counts_the_cases_allocated_to_them(browser_for, staff, refer, fire):
    for n in (0, 1):
        case_id = refer_marac(refer, n)
        fire(case_id, "coordinator", "allocate_idva", {"user": "idva"})
    refer_marac(refer, 2)  # not theirs
    home = browser_for("idva").get("/").text
    card = home[home.index("Assigned to you") :]
    assert re.match(r'Assigned to you</p>\s*<p class="big">2</p>', card), card[:200]


def test_an_idva_meeting_page_links_only_pages_the_idva_may_open(
    browser_for, runtime, staff, refer, fire
):
    meeting = new_meeting(runtime, staff, TODAY + timedelta(days=7))
    mine = refer_marac(refer, 0)
    fire(mine, "coordinator", "accept")
    fire(mine, "coordinator", "list", {"meeting_id": meeting})
    fire(mine, "coordinator", "allocate_idva", {"user": "idva"})
    idva = browser_for("idva")
    page = idva.get(f"/meetings/{meeting}").text
    links = set(re.findall(r'href="(/(?:people|cases)/[^"#?]+)', page))
    assert f"/cases/{mine}" in links
    for link in links:
        assert idva.get(link).status_code == 200, link
    # The coordinator, who may view people, still gets the person link.
    coordinator = browser_for("coordinator").get(f"/meetings/{meeting}").text
    assert re.search(r'href="/people/\d+"', coordinator)
