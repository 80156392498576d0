"""Referrals: receive one, and let its referrer follow it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Response
from pydantic import BaseModel

from referral_engine.access import Actor
from referral_engine.referrals import ReferralIn
from referral_engine.runtime import Runtime
from web.deps import actor, runtime
from web.problems import RESPONSES

router = APIRouter(prefix="/api/referrals", tags=["referrals"])
ERRORS = {k: RESPONSES[k] for k in (401, 403, 404, 422)}


class ReferralCreated(BaseModel):
    id: int
    reference: str
    case_id: int
    pathway: str
    state: str
    received_at: str
    # Only for a caller who may see the case it opened (not the referrer: a repeat is
    # about someone else's earlier referral).
    repeat: bool | None = None
    replayed: bool


@router.post("", status_code=201, response_model=ReferralCreated, responses=ERRORS)
def create_referral(
    body: ReferralIn,
    response: Response,
    who: Actor = Depends(actor),
    rt: Runtime = Depends(runtime),
    idempotency_key: str | None = Header(default=None, max_length=200),
) -> Any:
    """Refer someone. A retry with the same `Idempotency-Key` returns the same referral."""
    created = rt.referrals.create(
        who, body.model_dump(mode="json", exclude_unset=True), idempotency_key
    )
    if created["replayed"]:
        response.headers["Idempotent-Replayed"] = "true"
    return created


@router.get("/{referral_id}", responses=ERRORS)
def get_referral(
    referral_id: int, who: Actor = Depends(actor), rt: Runtime = Depends(runtime)
) -> dict[str, Any]:
    """The referrer sees status and outcome; those who may see the case see it all."""
    return rt.referrals.view(who, referral_id)


@router.get("", responses=ERRORS)
def my_referrals(
    who: Actor = Depends(actor), rt: Runtime = Depends(runtime), limit: int = 50, offset: int = 0
) -> dict[str, Any]:
    """The caller's own referrals, newest first, with status and outcome."""
    return rt.referrals.mine(who, limit=limit, offset=offset)
