"""Access tokens: the only module that touches python-jose.

HS256 only, pinned on every decode (`algorithms=["HS256"]`), so a token claiming `none`
or an asymmetric algorithm is refused rather than trusted. No JWE. Each token has a
`jti` so that logout can revoke it before it expires, and the user's session generation
(`gen`), so that a password reset or disabling the account ends every session at once.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from jose import JWTError, jwt

from referral_engine.errors import Unauthorised

ALGORITHM = "HS256"


@dataclass(frozen=True)
class Claims:
    user_id: int
    jti: str
    expires_at: datetime
    generation: int = 0
    # When the user signed in with their password: renewing a session keeps it, so the
    # absolute session lifetime counts from here (None: a token from before this claim).
    signed_in_at: datetime | None = None


def issue(
    user_id: int,
    secret: str,
    now: datetime,
    ttl: timedelta,
    generation: int = 0,
    signed_in_at: datetime | None = None,
) -> tuple[str, Claims]:
    signed_in_at = signed_in_at or now
    claims = Claims(user_id, uuid.uuid4().hex, now + ttl, generation, signed_in_at)
    token = jwt.encode(
        {
            "sub": str(user_id),
            "jti": claims.jti,
            "iat": int(now.timestamp()),
            "exp": int(claims.expires_at.timestamp()),
            "typ": "access",
            "gen": generation,
            "auth": int(signed_in_at.timestamp()),
        },
        secret,
        algorithm=ALGORITHM,
    )
    return token, claims


@functools.lru_cache(maxsize=4096)
def _verified(token: str, secret: str) -> Mapping[str, Any]:
    """The payload of a token whose signature is genuine (read-only).

    Cached: every request checks its token, and the answer depends only on these two
    strings. A refusal raises, so it is never cached. Expiry, revocation and the session
    generation are checked on every request after this, never cached.
    """
    return MappingProxyType(
        jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            # Expiry is checked in `read` against the product's clock (tests move it), not
            # jose's wall clock; jose's require_exp would switch its own check back on.
            options={"verify_exp": False, "require_sub": True, "require_jti": True},
        )
    )


def read(token: str, secret: str, now: datetime) -> Claims:
    """The claims of a genuine, unexpired token, or Unauthorised."""
    try:
        payload = _verified(token, secret)
    except JWTError as exc:
        raise Unauthorised(f"the token is not valid: {exc}") from None
    if payload.get("typ") != "access":
        raise Unauthorised("the token is not an access token")
    try:
        user_id = int(payload["sub"])
        expires = datetime.fromtimestamp(int(payload["exp"]), tz=now.tzinfo)
        generation = payload["gen"]
        if not isinstance(generation, int) or isinstance(generation, bool):
            raise TypeError("gen")
        auth = payload.get("auth", payload.get("iat"))
        signed_in_at = datetime.fromtimestamp(int(auth), tz=now.tzinfo) if auth else None
    except (KeyError, TypeError, ValueError, OverflowError):
        raise Unauthorised(
            "the token's subject, expiry or session generation is missing or not valid"
        ) from None
    if expires <= now:
        raise Unauthorised("the token has expired")
    return Claims(user_id, str(payload["jti"]), expires, generation, signed_in_at)


# --- a step of sign-in not yet finished (the second factor) -------------------------------

PENDING = "sign_in_pending"


def issue_pending(user_id: int, secret: str, now: datetime, ttl: timedelta) -> str:
    """A short-lived proof that this user's password was right, for the page that asks
    for their second factor. It is not an access token: `read` refuses it."""
    return jwt.encode(
        {"sub": str(user_id), "jti": uuid.uuid4().hex, "iat": int(now.timestamp()),
         "exp": int((now + ttl).timestamp()), "typ": PENDING},
        secret,
        algorithm=ALGORITHM,
    )  # fmt: skip


def read_pending(token: str, secret: str, now: datetime) -> int:
    """The user id of a genuine, unexpired pending sign-in, or Unauthorised."""
    try:
        payload = jwt.decode(
            token, secret, algorithms=[ALGORITHM],
            options={"verify_exp": False, "require_sub": True},
        )  # fmt: skip
        if payload.get("typ") != PENDING:
            raise JWTError("not a pending sign-in")
        if int(payload["exp"]) <= int(now.timestamp()):
            raise JWTError("expired")
        return int(payload["sub"])
    except (JWTError, KeyError, TypeError, ValueError):
        raise Unauthorised(
            "the sign-in has expired: enter your username and password again"
        ) from None
