"""The dashboard's trends (issue 18): month by month, through the same visibility as the
KPIs. The month buckets are pure and property-tested; the counts run on both databases.
"""

from __future__ import annotations

from datetime import date, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from referral_engine.reports.trends import months

LONDON = ZoneInfo("Europe/London")
DECIDE = {"outcome": "early_help", "onward": [], "rationale": "r", "feedback_to_referrer": "f"}


@given(
    start=st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 12, 31)),
    days=st.integers(min_value=0, max_value=366 * 5),
)
def test_months_cover_the_range_exactly_one_calendar_month_each(start, days):
    end = start + timedelta(days=days)
    buckets = months(start, end, LONDON)
    assert buckets[0].first == start and buckets[-1].last == end
    assert len(buckets) == (end.year - start.year) * 12 + end.month - start.month + 1
    for before, after in pairwise(buckets):
        assert before.end == after.start  # contiguous instants: nothing counted twice
        assert after.first == before.last + timedelta(days=1)
    for m in buckets:
        assert (m.first.year, m.first.month) == (m.last.year, m.last.month)
        assert m.start.utcoffset() in (timedelta(0), timedelta(hours=1))  # GMT or BST
        assert m.key == f"{m.first:%Y-%m}"


def test_a_month_starts_at_london_midnight_in_summer_time():
    (june,) = months(date(2026, 6, 1), date(2026, 6, 30), LONDON)
    assert june.start.isoformat() == "2026-06-01T00:00:00+01:00"
    assert june.label == "Jun 2026"


def test_trends_count_each_month_through_what_the_caller_may_see(
    runtime, refer, fire, staff, clock
):
    """conftest's clock starts on 25 Nov 2026: two referrals in November, one in December
    (decided late), a Channel referral the MASH manager may not see, all counted by month."""
    november = refer()["case_id"]
    fire(november, "officer", "screen", {"rag": "red", "rationale": "r"})
    fire(november, "officer", "refer_for_decision", {"rationale": "r"})
    fire(november, "manager", "decide", DECIDE)
    refer()  # not rated
    clock.advance(timedelta(days=10))  # 5 December
    december = refer()["case_id"]
    fire(december, "officer", "screen", {"rag": "amber", "rationale": "r"})
    fire(december, "officer", "refer_for_decision", {"rationale": "r"})
    clock.advance(timedelta(days=3))
    late = {**DECIDE, "outcome": "no_further_action", "late_reason": "waiting for police"}
    fire(december, "manager", "decide", late)
    refer("prevent", pathway="channel", concerns=["radicalisation"])

    autumn = date(2026, 10, 1), date(2026, 12, 31)
    manager = runtime.reports.trends(staff["manager"].actor, *autumn)
    assert [m["month"] for m in manager["months"]] == ["2026-10", "2026-11", "2026-12"]
    assert manager["referrals"] == [0, 2, 1]  # not the Channel one: he may not see it
    assert manager["rag"] == {"red": [0, 1, 0], "amber": [0, 0, 1], "green": [0, 0, 0],
                              "unrated": [0, 1, 0]}  # fmt: skip
    assert manager["outcomes"] == {"no_further_action": [0, 0, 1], "early_help": [0, 1, 0]}
    assert manager["timeliness"] == {"decided": [0, 1, 1], "on_time": [0, 1, 0],
                                     "on_time_pct": [None, 100.0, 0.0]}  # fmt: skip

    auditor = runtime.reports.trends(staff["auditor"].actor, *autumn)
    assert auditor["referrals"] == [0, 2, 2]  # the auditor sees Channel too

    chair = runtime.reports.trends(staff["chair"].actor, *autumn)
    assert chair["referrals"] == [0, 0, 1] and "rag" not in chair  # Channel only: no MASH series


# --- the charts (web/charts.py): pure --------------------------------------------------


def test_month_columns_name_every_figure_and_escape_every_label():
    from web.charts import columns, stacked_columns

    svg = columns("c", "Referrals <over> time", ["Nov 2026", "Dec 2026"], [3, None])
    assert 'role="img"' in svg and "Referrals &lt;over&gt; time" in svg
    assert "Nov 2026: 3; Dec 2026: no figure." in svg  # the description a screen reader hears
    assert svg.count("<rect") == 1  # no column for a month with no figure
    assert "style=" not in svg  # the CSP would block it
    stacked = stacked_columns("s", "RAG mix", ["Jan 2027"],
                              [("Red", "#b3261e", [2]), ("<b>", "#000000", [1])])  # fmt: skip
    assert "Jan 2027: Red 2, &lt;b&gt; 1." in stacked and "<b>" not in stacked
    timely = columns("t", "In time", ["Jan 2027"], [55.0], percent_scale=True, target=80)
    assert "Target 80.0%" in timely and 'stroke-dasharray="6 4"' in timely
    assert 'fill="#8a5a00"' in timely  # below the target: amber, not green


# --- the dashboard page ----------------------------------------------------------------


def test_the_dashboard_draws_each_trend_with_its_table(runtime, refer, fire, browser_for):
    case = refer()["case_id"]
    fire(case, "officer", "screen", {"rag": "red", "rationale": "r"})
    fire(case, "officer", "refer_for_decision", {"rationale": "r"})
    fire(case, "manager", "decide", DECIDE)
    refer("prevent", pathway="channel", concerns=["radicalisation"])

    page = browser_for("manager").get("/dashboard?from=2026-10-01&to=2026-11-30").text
    for chart, title in (("trend-referrals", "Referrals over time"), ("trend-rag", "RAG mix"),
                         ("trend-outcomes", "Outcome mix"),
                         ("trend-timeliness", "MASH decisions in time, by month")):  # fmt: skip
        section = page[page.index(f'aria-labelledby="{chart}-heading"') :]
        section = section[: section.index("</section>")]
        assert title in section and f'id="chart-{chart}"' in section, chart
        assert '<th scope="row">Oct 2026</th>' in section and "Nov 2026" in section, chart
    referrals = page[page.index('id="trend-referrals-heading"') :]
    # one referral in November: the Channel one is not the manager's to count
    assert '<th scope="row">Nov 2026</th><td class="numeric">1</td>' in referrals
    outcomes = page[page.index('id="trend-outcomes-heading"') :]
    assert "Early help" in outcomes[: outcomes.index("</section>")]  # the policy's label
    assert "early_help" not in page
    assert "style=" not in page

    chair = browser_for("chair").get("/dashboard?from=2026-10-01&to=2026-11-30").text
    assert "Referrals over time" in chair
    assert "RAG mix" not in chair and "Outcome mix" not in chair  # no MASH series for Channel
    chair_referrals = chair[chair.index('id="trend-referrals-heading"') :]
    assert '<th scope="row">Nov 2026</th><td class="numeric">1</td>' in chair_referrals


def test_trends_are_refused_to_who_may_not_read_the_measures(runtime, staff):
    import pytest

    from referral_engine.errors import Forbidden

    with pytest.raises(Forbidden):
        runtime.reports.trends(staff["teacher"].actor, date(2026, 1, 1), date(2026, 1, 31))


def test_trends_over_http(users, refer):
    refer()
    got = users["auditor"].get(
        "/api/reports/trends", params={"from": "2026-11-01", "to": "2026-12-31"}
    )
    assert got.status_code == 200
    assert got.json()["referrals"] == [1, 0] and got.json()["rag"]["unrated"] == [1, 0]
    refused = users["teacher"].get(
        "/api/reports/trends", params={"from": "2026-11-01", "to": "2026-11-30"}
    )
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
