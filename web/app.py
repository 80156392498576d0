"""The web application: JSON API under /api (and, later, HTML pages), thin over the engine."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles

from referral_engine.runtime import Runtime
from referral_engine.settings import Settings, get_settings
from web import openapi, problems
from web.api import (
    access,
    audit,
    auth,
    cases,
    exports,
    meetings,
    notifications,
    people,
    referrals,
    reports,
    workflows,
)
from web.middleware import BodyLimit, RequestContext
from web.pages import PAGE_ROUTERS
from web.pages.base import SignInRequired, login_redirect

STATIC = Path(__file__).resolve().parent / "static"


def create_app(
    settings: Settings | None = None, runtime: Runtime | None = None, *, deliver: bool = False
) -> FastAPI:
    """`deliver`: also drain the outbox by email in the background (what `serve` does)."""
    settings = settings or get_settings()
    settings.require_secrets()
    rt = runtime or Runtime.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        rt.start()
        if deliver:
            rt.start_delivery()
        yield
        rt.stop()

    app = FastAPI(
        title="Referral Engine",
        version="0.1.0",
        description="Multi-agency referral and case-pathway workflow engine. "
        "Errors are RFC 9457 problem details.",
        lifespan=lifespan,
        # The interactive docs load scripts from a CDN; this runs with no internet.
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = rt
    problems.install(app)
    openapi.install(app)
    # Routers are tried in this order, each a few tens of µs when it does not match: the
    # busiest (cases: the queue, case pages, fired events) goes first (bench/README.md).
    for module in (cases, referrals, auth, access, people, meetings, workflows, audit, reports,
                   notifications, exports):  # fmt: skip
        app.include_router(module.router)
    for router in PAGE_ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(SignInRequired)
    async def sign_in_first(request: Request, exc: SignInRequired):
        return login_redirect(request)

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext)
    return app


def serve_app() -> FastAPI:
    """The app `referral-engine serve` runs: settings from the environment, mail delivered."""
    return create_app(settings=get_settings(), deliver=True)
