"""The audit log for auditors: search it, and verify the chain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from referral_engine import audit
from referral_engine.access import Actor
from referral_engine.errors import DomainError, Forbidden
from referral_engine.runtime import Runtime
from web.deps import actor, runtime
from web.problems import MEDIA_TYPE, RESPONSES

router = APIRouter(prefix="/api/audit", tags=["audit"])


@router.get("", responses={k: RESPONSES[k] for k in (401, 403, 422)})
def search_audit(
    who: Actor = Depends(actor),
    rt: Runtime = Depends(runtime),
    case_id: int | None = None,
    person_id: int | None = None,
    actor_id: int | None = None,
    action: str | None = Query(default=None, max_length=100),
    outcome: str | None = Query(default=None, pattern="^(allowed|refused)$"),
    since: datetime | None = Query(default=None, alias="from"),
    until: datetime | None = Query(default=None, alias="to"),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0),
) -> dict[str, Any]:
    """Audit rows as recorded, oldest first, with their chain position and hash.

    `action` is exact, or a pattern where `*` stands for anything (`*:case:view`)."""
    query = audit.AuditQuery(
        case_id=case_id, person_id=person_id, actor_id=actor_id, action=action,
        outcome=outcome, since=since, until=until,
    )  # fmt: skip
    act = "api:audit:search"
    try:
        if not rt.access.can(who, "audit:log:view"):
            raise Forbidden("only auditors may read the audit log")
        with rt.db.transaction() as s:
            rows = audit.search(s, rt.audit, who, query, limit=limit, offset=offset)
    except DomainError as exc:
        rt.engine.refused(who, act, exc, target="audit", case_id=case_id)
        raise
    return {"items": rows, "limit": limit, "offset": offset}


@router.get("/verify", responses={k: RESPONSES[k] for k in (401, 403, 409)})
def verify_audit(
    request: Request,
    who: Actor = Depends(actor),
    rt: Runtime = Depends(runtime),
    deep: bool = False,
) -> Any:
    """Seal pending rows, then verify the chain and checkpoints: 200 intact, 409 broken."""
    act = "api:audit:verify"
    if not rt.access.can(who, "audit:chain:verify"):
        exc = Forbidden("you may not verify the audit chain")
        rt.engine.refused(who, act, exc, target="audit")
        raise exc
    result = rt.verify_audit(deep=deep)
    with rt.db.transaction() as s:
        rt.audit.record(s, who, act, target="audit", summary=result.as_dict())
    if result.ok:
        return result.as_dict()
    return JSONResponse(
        {
            "type": "urn:referral-engine:problem:audit-chain-broken",
            "title": "The audit chain is broken",
            "status": 409,
            "detail": result.reason,
            "instance": request.url.path,
            **result.as_dict(),
        },
        status_code=409,
        media_type=MEDIA_TYPE,
    )
