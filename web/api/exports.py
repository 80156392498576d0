"""Exports as CSV or Excel: the KPI report, the MARAC and NRM returns, the case list."""

from __future__ import annotations

from datetime import date
from typing import Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from referral_engine.access import Actor
from referral_engine.reports import Export
from referral_engine.runtime import Runtime
from web.deps import actor, runtime
from web.problems import RESPONSES

router = APIRouter(prefix="/api/exports", tags=["exports"])
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# The file itself, as CSV or Excel (the extension in the path chooses), and the errors.
ANSWERS: dict[int | str, dict] = {
    200: {
        "description": "The file, as an attachment; `X-Row-Count` says how many rows",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            XLSX: {"schema": {"type": "string", "format": "binary"}},
        },
    },
    **{k: RESPONSES[k] for k in (401, 403, 422)},
}
Format = Literal["csv", "xlsx"]


def download(got: Export) -> Response:
    return Response(
        got.content,
        media_type=got.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{got.filename}"',
            "X-Row-Count": str(got.rows),
            "Cache-Control": "no-store",
        },
    )


@router.get("/{what}.{fmt}", response_class=Response, responses=ANSWERS)
def export_report(
    what: Literal["kpis", "marac", "nrm"],
    fmt: Format,
    who: Actor = Depends(actor),
    rt: Runtime = Depends(runtime),
    start: date = Query(alias="from"),
    end: date = Query(alias="to"),
) -> Response:
    """`kpis` (the KPI report), `marac` (the SafeLives return), `nrm` (by age and type)."""
    return download(getattr(rt.exports, what)(who, start, end, fmt))


@router.get("/cases/list.{fmt}", response_class=Response, responses=ANSWERS)
def export_cases(
    fmt: Format,
    who: Actor = Depends(actor),
    rt: Runtime = Depends(runtime),
    pathway: str | None = None,
    state: str | None = None,
    include_closed: bool = False,
) -> Response:
    """The case list as the caller sees it, every page of it."""
    return download(
        rt.exports.cases(who, fmt, pathway=pathway, state=state, include_closed=include_closed)
    )
