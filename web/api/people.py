"""A person and every case of theirs the caller may see."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from referral_engine.access import Actor
from referral_engine.runtime import Runtime
from web.deps import actor, runtime
from web.problems import RESPONSES

router = APIRouter(prefix="/api/people", tags=["people"])


@router.get("/{person_id}", responses={k: RESPONSES[k] for k in (401, 403, 404)})
def get_person(
    person_id: int, who: Actor = Depends(actor), rt: Runtime = Depends(runtime)
) -> dict[str, Any]:
    return rt.cases.person(who, person_id)
