"""Sign in, sign out, and who am I."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from referral_engine.access import Actor
from referral_engine.runtime import Runtime
from web.deps import actor, runtime, token
from web.problems import RESPONSES

router = APIRouter(prefix="/api", tags=["auth"])


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type
    expires_in: int


class MeOut(BaseModel):
    id: int | None
    username: str
    display_name: str
    roles: list[str]
    agency: str | None
    agency_kind: str | None
    permissions: list[str]


@router.post(
    "/auth/token",
    response_model=TokenOut,
    responses={
        401: RESPONSES[401],
        429: {**RESPONSES[401], "description": "Locked after too many failed sign-ins"},
    },
)
def sign_in(
    request: Request,
    form: OAuth2PasswordRequestForm = Depends(),
    rt: Runtime = Depends(runtime),
) -> TokenOut:
    """OAuth2 password grant. Five failures in 15 minutes lock the username for 15 minutes."""
    value, _, expires_in = rt.accounts.sign_in(
        form.username, form.password, source="api", request_id=request.state.request_id
    )
    return TokenOut(access_token=value, expires_in=expires_in)


@router.post("/auth/logout", status_code=204, responses={401: RESPONSES[401]})
def sign_out(
    response: Response,
    value: str = Depends(token),
    who: Actor = Depends(actor),
    rt: Runtime = Depends(runtime),
) -> None:
    """Revoke this token now; it is refused from then on."""
    rt.accounts.sign_out(value, who)
    response.headers["Clear-Site-Data"] = '"cache"'  # what a browser client cached goes


@router.get("/me", response_model=MeOut, responses={401: RESPONSES[401]})
def me(who: Actor = Depends(actor)) -> MeOut:
    return MeOut(
        id=who.user_id,
        username=who.username,
        display_name=who.display_name,
        roles=list(who.roles),
        agency=who.agency_name,
        agency_kind=who.agency_kind,
        permissions=sorted({g.permission for g in who.grants}),
    )
