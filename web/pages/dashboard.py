"""The partnership's measures (DOMAIN.md), with charts drawn on the server as SVG.

The figures come from `Reports.kpis`, the API's one path: it decides which measures the
caller may see (no Channel figures for a role that may not see Channel) and audits the
read. Each chart has its data as a table too.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from referral_engine.errors import FieldError, Forbidden, InvalidData
from web import charts, session
from web.pages.base import render, signed_in

router = APIRouter(include_in_schema=False)


def _parse(errors: list[FieldError], field: str, value: str) -> date | None:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        errors.append(FieldError(field, "enter a real date, like 2026-04-01"))
        return None


def _ranges(today: date) -> list[tuple[str, date, date]]:
    """Quick choices: the last 12 months, and this and last financial year (April-March)."""
    fy = today.year if today.month >= 4 else today.year - 1
    return [
        ("Last 12 months", today - relativedelta(years=1) + timedelta(days=1), today),
        (f"{fy}/{str(fy + 1)[2:]} so far", date(fy, 4, 1), today),
        (f"{fy - 1}/{str(fy)[2:]}", date(fy - 1, 4, 1), date(fy, 3, 31)),
    ]


def _rows(counts: dict[str, int] | None, labels: dict[str, str]) -> list[tuple[str, int]]:
    return [(labels.get(k, k.replace("_", " ").capitalize()), v) for k, v in (counts or {}).items()]


def _charts(rt, kpis: dict[str, Any]) -> list[dict[str, Any]]:
    kinds = {**rt.policy.reference.agency_kinds, "unknown": "Not recorded"}
    concerns = rt.policy.reference.concerns
    specs = [
        ("referrals_by_source_agency", "Referrals by source agency",
         "Who referred: the kind of agency of each referrer.", "Agency kind", kinds),
        ("referrals_by_concern", "Referrals by concern",
         "A referral can name several concerns, so these add up to more than the referrals.",
         "Concern", concerns),
        ("nrm_referrals_by_age_group", "NRM referrals by age group",
         "Children (under 18 when referred) need no consent to enter the NRM.", "Age group",
         {"child": "Children", "adult": "Adults"}),
        ("nrm_by_exploitation_type", "NRM referrals by exploitation type",
         "A referral can name more than one type of exploitation.", "Exploitation type", {}),
    ]  # fmt: skip
    out = []
    for key, title, note, column, labels in specs:
        if key not in kpis:
            continue
        rows = _rows(kpis[key], labels)
        out.append({
            "id": key.replace("_", "-"), "title": title, "note": note, "column": column,
            "rows": rows, "total": sum(v for _, v in rows),
            "svg": charts.bar_chart(f"chart-{key.replace('_', '-')}", title, rows),
        })  # fmt: skip
    return out


RAG_COLOURS = {"red": "#b3261e", "amber": "#b26b00", "green": "#1b6e3a", "unrated": "#6f777b"}
RAG_NAMES = {"red": "Red", "amber": "Amber", "green": "Green", "unrated": "Not rated yet"}
# Told apart by colour-blind readers too (after Okabe and Ito), each at least 3:1 on white.
OUTCOME_COLOURS = ["#0072b2", "#d55e00", "#007a5a", "#a3457f", "#1d4f76", "#8a5a00", "#505a62"]


def _trends(rt, trends: dict[str, Any]) -> list[dict[str, Any]]:
    """The month-by-month charts, each with its data as a table (months down, series
    across), from `Reports.trends`: the MASH ones only when the caller may see MASH."""
    labels = [m["label"] for m in trends["months"]]
    out: list[dict[str, Any]] = []

    def table(columns: list[str], series: list[list[Any]], fmt=charts.number) -> dict[str, Any]:
        rows = [(label, [fmt(values[i]) for values in series]) for i, label in enumerate(labels)]
        return {"columns": columns, "rows": rows}

    out.append({
        "id": "trend-referrals", "title": "Referrals over time",
        "note": "Referrals received each month (a referral that opened several cases counts once).",
        "svg": charts.columns("chart-trend-referrals", "Referrals over time", labels,
                              trends["referrals"]),
        "table": table(["Referrals"], [trends["referrals"]]),
    })  # fmt: skip
    if "rag" in trends:
        series = [(RAG_NAMES[k], RAG_COLOURS[k], v) for k, v in trends["rag"].items()]
        out.append({
            "id": "trend-rag", "title": "RAG mix",
            "note": "MASH referrals received each month, by the rating given at screening.",
            "svg": charts.stacked_columns("chart-trend-rag", "RAG mix", labels, series),
            "table": table([name for name, _, _ in series], [v for _, _, v in series]),
        })  # fmt: skip
    if "outcomes" in trends:
        names = rt.policy.reference.mash_outcomes
        series = [
            (names.get(code, code.replace("_", " ").capitalize()),
             OUTCOME_COLOURS[i % len(OUTCOME_COLOURS)], values)
            for i, (code, values) in enumerate(trends["outcomes"].items())
        ]  # fmt: skip
        out.append({
            "id": "trend-outcomes", "title": "Outcome mix",
            "note": "MASH decisions on the referrals received each month, by outcome.",
            "svg": charts.stacked_columns("chart-trend-outcomes", "Outcome mix", labels, series),
            "table": table([name for name, _, _ in series] or ["Decisions"],
                           [v for _, _, v in series] or [[0] * len(labels)]),
        })  # fmt: skip
    if "timeliness" in trends:
        t = trends["timeliness"]
        target = rt.policy.rules.targets.get("mash_decided_within_1wd_pct")
        out.append({
            "id": "trend-timeliness", "title": "MASH decisions in time, by month",
            "note": "Of the MASH decisions on each month's referrals, the share made by their "
                    "deadline (1 working day; 4 hours for a red referral)."
                    + (f" The dashed line is the target, {charts.percent(target)}." if target
                       is not None else ""),
            "svg": charts.columns("chart-trend-timeliness", "MASH decisions in time, by month",
                                  labels, t["on_time_pct"], percent_scale=True, target=target),
            "table": {"columns": ["Decisions", "In time", "Share in time"],
                      "rows": [(label, [charts.number(t["decided"][i]),
                                        charts.number(t["on_time"][i]),
                                        charts.percent(t["on_time_pct"][i])])
                               for i, label in enumerate(labels)]},
        })  # fmt: skip
    return out


def _figures(rt, kpis: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline measures present for this caller, each with its meter and target."""
    targets = rt.policy.rules.targets
    out: list[dict[str, Any]] = []

    def count(key: str, title: str, note: str) -> None:
        if key in kpis:
            out.append({"key": key, "title": title, "text": charts.number(kpis[key]),
                        "note": note, "value": kpis[key]})  # fmt: skip

    def share(key: str, title: str, note: str) -> None:
        if key not in kpis:
            return
        value, target = kpis[key], targets.get(key)
        status = None
        if target is not None and value is not None:
            status = "met" if value >= target else "below"
        out.append({
            "key": key, "title": title, "text": charts.percent(value), "note": note,
            "value": value, "target": target, "status": status,
            "svg": charts.meter(f"meter-{key.replace('_', '-')}", title, value, target),
        })  # fmt: skip

    count("referrals_total", "Referrals received", "People referred in this period.")
    if "mash_decided_within_1wd_pct" in kpis:
        decided = kpis.get("mash_decisions")
        share("mash_decided_within_1wd_pct", "MASH decisions within 1 working day",
              f"Of {charts.number(decided)} MASH decisions made, the share made by their "
              "deadline (4 hours for a red referral).")  # fmt: skip
    count("marac_cases", "MARAC cases", "Accepted for MARAC: a referral criterion was met.")
    share(
        "marac_non_police_pct",
        "MARAC referrals not from the police",
        "Of the MARAC cases, the share referred by an agency other than the police.",
    )
    share(
        "marac_repeat_pct",
        "Repeat MARAC cases",
        "Of the MARAC cases, the share that are repeats within 12 months.",
    )
    count("channel_referrals", "Channel referrals", "Prevent referrals into Channel.")
    share(
        "channel_adoption_pct",
        "Channel adoption rate",
        "Of the Channel cases the panel decided, the share it adopted.",
    )
    count(
        "gang_exit_completions",
        "Gang-exit completions",
        "Gang-exit cases that reached the exit of their intervention.",
    )
    return out


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(request: Request) -> HTMLResponse:
    actor = signed_in(request).via("web")
    rt = session.runtime(request)
    if not rt.access.can(actor, "report:kpi:view"):
        exc = Forbidden("you may not read the partnership's measures")
        rt.engine.refused(actor, "web:report:kpis", exc, target="report:kpis")
        raise exc
    ranges = _ranges(rt.clock.now().astimezone(ZoneInfo(rt.policy.timezone)).date())
    default_from, default_to = ranges[0][1], ranges[0][2]
    params = request.query_params
    given = {"from": params.get("from", "").strip(), "to": params.get("to", "").strip()}
    errors: list[FieldError] = []
    start = _parse(errors, "from", given["from"]) if given["from"] else default_from
    end = _parse(errors, "to", given["to"]) if given["to"] else default_to
    kpis: dict[str, Any] | None = None
    trends: dict[str, Any] | None = None
    if errors:
        rt.engine.refused(actor, "web:report:kpis", InvalidData(errors), target="report:kpis")
    else:
        try:
            kpis = rt.reports.kpis(actor, start, end)  # type: ignore[arg-type]
            trends = rt.reports.trends(actor, start, end)  # type: ignore[arg-type]
        except InvalidData as exc:
            errors = exc.errors
    period = f"{start:%-d %b %Y} to {end:%-d %b %Y}" if kpis else None
    values = {"from": given["from"] or default_from.isoformat(),
              "to": given["to"] or default_to.isoformat()}  # fmt: skip
    return render(
        request, "dashboard.html",
        {"title": "Dashboard", "period": period, "values": values, "errors": errors, "kpis": kpis,
         "figures": _figures(rt, kpis) if kpis else [],
         "charts": _charts(rt, kpis) if kpis else [],
         "trends": _trends(rt, trends) if trends else [],
         "ranges": [(text, f"/dashboard?{urlencode({'from': a.isoformat(), 'to': b.isoformat()})}",
                     a == start and b == end) for text, a, b in ranges]},
        actor=actor, status=422 if errors else 200,
    )  # fmt: skip
