"""What routes depend on: the runtime, and the signed-in actor behind a bearer token."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from referral_engine.access import Actor
from referral_engine.errors import Unauthorised
from referral_engine.runtime import Runtime

bearer = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


# `async` for the pure ones: FastAPI runs a plain `def` dependency in its thread pool, and
# that hop, once per dependency per request, cost more than most routes' own work
# (bench/README.md). `actor` reads the database, so it stays in the pool.
async def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def token(request: Request, value: str | None = Depends(bearer)) -> str:
    return _required(value)


async def signed_token(request: Request, value: str | None = Depends(bearer)) -> str:
    """A token whose signature and expiry hold (no database read: pure, so `async`), for
    a route that resolves the actor inside its own thread-pool call (web/writes.py).
    Straight on `bearer`, not on `token`: each level of dependency cost FastAPI ~70 µs
    of solving on the busiest route (bench/README.md)."""
    value = _required(value)
    request.app.state.runtime.accounts.check_token(value)
    return value


def _required(value: str | None) -> str:
    if not value:
        raise Unauthorised("sign in first: send Authorization: Bearer <token>")
    return value


def actor(request: Request, value: str = Depends(token)) -> Actor:
    rt: Runtime = request.app.state.runtime
    return rt.accounts.actor_from_token(
        value, source="api", request_id=getattr(request.state, "request_id", None)
    )
