"""Sign in, sign out, and who am I."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from referral_engine.access import Actor
from referral_engine.errors import Forbidden
from referral_engine.runtime import Runtime
from web.deps import actor, runtime, token
from web.problems import RESPONSES, error_response

router = APIRouter(prefix="/api", tags=["auth"])


def refuse_password(rt: Runtime, username: str, source: str, rid: str | None, exc) -> None:
    """Audit a password sign-in refused because local passwords are off."""
    anon = rt.access.actor(
        user_id=None, username=username[:100], display_name=username[:100], roles=[],
        source=source, request_id=rid,
    )  # fmt: skip
    rt.engine.refused(
        anon, f"{source}:auth:sign_in", exc, target=f"user:{username[:100]}",
        summary={"method": "password", "passwords": "off"},
    )  # fmt: skip


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
        403: RESPONSES[403],
        429: error_response(429, "Locked after too many failed sign-ins; see `Retry-After`"),
    },
)
def sign_in(
    request: Request,
    form: OAuth2PasswordRequestForm = Depends(),
    otp: str | None = Form(
        default=None,
        max_length=64,
        description="An administrator's or auditor's second factor: the 6-digit code from "
        "their authenticator app, or one of their recovery codes",
    ),
    rt: Runtime = Depends(runtime),
) -> TokenOut:
    """OAuth2 password grant. Five failures in 15 minutes lock the username for 15 minutes.
    Administrators and auditors also send `otp` (their second factor).
    Refused (403) when local passwords are switched off: sign in through the provider."""
    rid = request.state.request_id
    if not rt.settings.local_passwords:
        refusal = Forbidden(
            "local passwords are switched off (REFERRAL_ENGINE_LOCAL_PASSWORDS=0): sign in "
            "through your organisation's identity provider at /login, or use a service "
            "account's API key"
        )
        refuse_password(rt, form.username, "api", rid, refusal)
        raise refusal
    value, _, expires_in = rt.accounts.sign_in(
        form.username, form.password, source="api", request_id=rid,
        second_factor=rt.second_factors.checker(otp, source="api", request_id=rid),
    )  # fmt: skip
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
