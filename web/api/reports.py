"""The partnership's measures over a date range."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Depends, Query

from referral_engine.access import Actor
from referral_engine.runtime import Runtime
from web.deps import actor, runtime
from web.problems import RESPONSES

router = APIRouter(prefix="/api/reports", tags=["reports"])


@router.get("/kpis", responses={k: RESPONSES[k] for k in (401, 403, 422)})
def kpis(
    who: Actor = Depends(actor),
    rt: Runtime = Depends(runtime),
    start: date = Query(alias="from"),
    end: date = Query(alias="to"),
) -> dict[str, Any]:
    """Measures over referrals received from `from` to `to` (inclusive, UK dates)."""
    return rt.reports.kpis(who, start, end)


@router.get("/trends", responses={k: RESPONSES[k] for k in (401, 403, 422)})
def trends(
    who: Actor = Depends(actor),
    rt: Runtime = Depends(runtime),
    start: date = Query(alias="from"),
    end: date = Query(alias="to"),
) -> dict[str, Any]:
    """The same range month by month: `months`, `referrals` (a count a month) and, for a
    caller who may see MASH, `rag`, `outcomes` and `timeliness` (each a series a month)."""
    return rt.reports.trends(who, start, end)
