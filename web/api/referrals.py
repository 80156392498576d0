"""Referrals: receive one, and let its referrer follow it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Header, Response
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


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its `$defs` written in place, to stand alone in the OpenAPI."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(dict(defs[node["$ref"].rsplit("/", 1)[1]]))
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


# The body is documented as `ReferralIn` but validated by the service, not by FastAPI:
# the service reports the schema's errors and the referral rules together, so a referrer
# sees every error on the first submit.
BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": _inlined(ReferralIn.model_json_schema())}}}}  # fmt: skip


@router.post(
    "", status_code=201, response_model=ReferralCreated, responses=ERRORS, openapi_extra=BODY
)
def create_referral(
    response: Response,
    body: Any = Body(...),
    who: Actor = Depends(actor),
    rt: Runtime = Depends(runtime),
    idempotency_key: str | None = Header(default=None, max_length=200),
) -> Any:
    """Refer someone. A retry with the same `Idempotency-Key` returns the same referral."""
    created = rt.referrals.create(who, body, idempotency_key)
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
