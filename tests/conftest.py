"""Shared fixtures: a fresh real database per test, on SQLite and on PostgreSQL.

Every test that asks for `runtime` (or anything built on it) runs twice: once on a real
SQLite file and once on a real PostgreSQL server named by REFERRAL_ENGINE_TEST_PG_URL
(.ci/run starts one). Without that variable the PostgreSQL runs are skipped, unless
REFERRAL_ENGINE_REQUIRE_PG=1 (set by CI), which makes a missing server an error rather
than a silent skip. Each test gets its own database: a copy of a migrated template
(a file copy on SQLite, CREATE DATABASE ... TEMPLATE on PostgreSQL), so nothing leaks
between tests and the audit chain of each test starts from nothing.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings
from playwright.sync_api import Browser, sync_playwright
from starlette.testclient import TestClient

from referral_engine.access.rules import Actor
from referral_engine.clock import FixedClock
from referral_engine.runtime import Runtime
from referral_engine.settings import Settings
from referral_engine.storage.db import dispose_all, get_engine
from referral_engine.storage.migrate import upgrade

PG_URL = os.environ.get("REFERRAL_ENGINE_TEST_PG_URL")
REQUIRE_PG = os.environ.get("REFERRAL_ENGINE_REQUIRE_PG") == "1"
SECRET = "test-secret-key-0123456789abcdef0123456789abcdef"
AUDIT_KEY = "test-audit-key-0123456789abcdef0123456789abcdef"
PASSWORD = "correct horse battery staple"
# A Wednesday in term time, 10:00 UK time (GMT in November).
START = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)

# CI replays a fixed set of generated examples, so a landing never depends on the dice;
# a developer's run explores new ones each time (and keeps any failure it finds in
# .hypothesis/ to replay). Set HYPOTHESIS_PROFILE=explore in CI to search there too.
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
hypothesis_settings.register_profile("explore")
hypothesis_settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if REQUIRE_PG else "explore")
)


def pytest_configure(config):
    if REQUIRE_PG and not PG_URL:
        raise pytest.UsageError(
            "REFERRAL_ENGINE_REQUIRE_PG=1 but REFERRAL_ENGINE_TEST_PG_URL is not set"
        )


# --- databases -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    dispose_all()
    return path


def _pg_admin():
    import psycopg

    return psycopg.connect(PG_URL, autocommit=True)


def _pg_url(name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    name = f"re_template_{uuid.uuid4().hex[:8]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    upgrade(_pg_url(name))
    dispose_all()
    yield name
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request) -> str:
    if request.param == "postgres" and not PG_URL:
        pytest.skip("no PostgreSQL server: set REFERRAL_ENGINE_TEST_PG_URL (CI always does)")
    return request.param


@pytest.fixture
def db_url(backend, request, tmp_path) -> Iterator[str]:
    if backend == "sqlite":
        path = tmp_path / "test.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("pg_template")
    name = f"re_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield _pg_url(name)
    dispose_all()
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- the product -----------------------------------------------------------------------


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


def make_settings(db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        database_url=db_url,
        secret_key=SECRET,
        audit_key=AUDIT_KEY,
        password_hasher="argon2-fast",
        audit_seal_interval_seconds=0.2,
        audit_head_interval_seconds=0,  # tests that want the head timer turn it on
        demo=False,
        # The fixtures sign admin and auditor in with a password alone; the second factor
        # is tested on its own (tests/test_second_factor.py).
        second_factor=False,
        # The suite's clients speak plain http to "testserver"; Secure cookies (the
        # default outside demo mode) are tested in tests/test_browser_cache_and_cookies.py.
        secure_cookies=False,
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(db_url) -> Settings:
    return make_settings(db_url)


@pytest.fixture
def runtime(settings, clock) -> Iterator[Runtime]:
    rt = Runtime.build(settings, clock)
    rt.start()
    yield rt
    rt.stop()
    get_engine(settings.database_url).dispose()


@pytest.fixture
def app(settings, runtime):
    from web.app import create_app

    return create_app(settings=settings, runtime=runtime)


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver") as c:
        yield c


# --- people using it -------------------------------------------------------------------


@dataclass
class Person:
    """A signed-up user and a way to call the API as them."""

    username: str
    user_id: int
    actor: Actor
    client: TestClient | None = None
    token: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        assert self.token, "sign in first (use the `users` fixture with a client)"
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, url: str, **kw):
        return self.client.get(url, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    def post(self, url: str, **kw):
        return self.client.post(url, headers={**self.headers, **kw.pop("headers", {})}, **kw)


# username -> (roles, agency, agency kind)
STAFF: dict[str, tuple[list[str], str, str]] = {
    "teacher": (["practitioner"], "Northgate Academy", "education"),
    "constable": (["practitioner"], "City Police", "police"),
    "officer": (["mash_officer"], "City MASH", "children_social_care"),
    "manager": (["mash_manager"], "City MASH", "children_social_care"),
    "coordinator": (["marac_coordinator"], "Community Safety", "local_authority"),
    "idva": (["idva"], "Safer Homes", "voluntary"),
    "responder": (["nrm_first_responder"], "Modern Slavery Team", "local_authority"),
    "prevent": (["prevent_officer"], "City Police", "police"),
    "chair": (["channel_chair"], "Community Safety", "local_authority"),
    "gangs": (["gang_worker"], "Youth Justice", "local_authority"),
    "auditor": (["auditor"], "Internal Audit", "local_authority"),
    "admin": (["admin"], "Council IT", "local_authority"),
}


def add_user(rt: Runtime, username: str, roles: list[str], agency: str, kind: str) -> Person:
    with rt.db.transaction() as s:
        user = rt.accounts.add_user(
            s, username=username, password=PASSWORD, roles=roles, agency=agency,
            agency_kind=kind, display_name=username.title(),
        )  # fmt: skip
        actor = rt.accounts.actor_for_user(s, user.id, source="api", request_id=None)
    assert actor is not None and user.id is not None
    return Person(username, user.id, actor)


@pytest.fixture
def staff(runtime) -> dict[str, Person]:
    """One user per role (see STAFF), without tokens: for engine-level tests."""
    return {name: add_user(runtime, name, *spec) for name, spec in STAFF.items()}


@pytest.fixture
def users(runtime, client, staff) -> dict[str, Person]:
    """The same users, signed in through the API: `users["officer"].get("/api/cases")`."""
    for person in staff.values():
        r = client.post("/api/auth/token", data={"username": person.username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        person.client, person.token = client, r.json()["access_token"]
    return staff


def add_approver(rt: Runtime, username: str = "approver") -> Person:
    """An access approver (access:grant:approve): the second person for roles that read
    case content. Not in STAFF, so the usual tests keep their users."""
    return add_user(rt, username, ["access_approver"], "Information Governance", "local_authority")


def password_link(rt: Runtime, username: str) -> str:
    """The secret of the newest set-password link sent to `username` (read from the
    outbox, as the email carrying it would be): the user's own, never the admin's."""
    import sqlalchemy as sa

    from referral_engine.storage.models import Outbox, User

    with rt.db.reading() as s:
        row = s.execute(
            sa.select(Outbox.payload)
            .join(User, User.id == Outbox.recipient_user_id)
            .where(User.username == username, Outbox.kind == "password_link")
            .order_by(Outbox.id.desc())
        ).first()
    assert row is not None, f"no set-password link was sent to {username}"
    return row[0]["secret"]


def set_password_page(client: TestClient, secret: str, password: str, confirm: str | None = None):
    """Open the emailed link and set a password through the page, as the person would."""
    page = client.get(f"/account/password?token={secret}")
    assert page.status_code == 200, page.text
    return client.post(
        "/account/password",
        data={"token": secret, "password": password,
              "confirm": password if confirm is None else confirm},
    )  # fmt: skip


# The subject of the usual test referral.
SUBJECT = {
    "given_name": "Jo",
    "family_name": "Bloggs",
    "date_of_birth": "2012-05-01",
    "gender": "female",
    "address": "1 High Street",
    "postcode": "AB1 2CD",
}


# A domestic-abuse referral needs its DASH answers or a reason why there are none; tests
# that are not about the DASH say why, unless they give a DASH of their own.
NO_DASH = {"not_completed_reason": "Not safe to ask the victim today."}


def referral_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "pathway": "mash",
        "subject": dict(SUBJECT),
        "concerns": ["neglect"],
        "summary": "Often hungry and tired at school.",
        "immediate_danger": False,
        "consent": "given",
    }
    body.update(overrides)
    if "domestic_abuse" in body["concerns"] and not body.get("dash"):
        body["dash"] = dict(NO_DASH)
    return body


@pytest.fixture
def refer(runtime, staff):
    """Make a referral through the service as `who` (default the teacher)."""

    def make(who: str = "teacher", key: str | None = None, **overrides: Any) -> dict[str, Any]:
        return runtime.referrals.create(staff[who].actor, referral_body(**overrides), key)

    return make


def case_version(rt: Runtime, case_id: int) -> int:
    from referral_engine.storage.models import Case

    with rt.db.reading() as s:
        return s.get(Case, case_id).version


@pytest.fixture
def fire(runtime, staff):
    """Fire an event as `who` at the case's current version."""

    def do(case_id: int, who: str, event: str, data: dict | None = None):
        return runtime.engine.fire(
            case_id, event, staff[who].actor, data or {}, case_version(runtime, case_id)
        )

    return do


# --- the browser-facing pages ----------------------------------------------------------


def sign_in_page(client: TestClient, username: str, password: str = PASSWORD):
    """Sign in through /login as a browser would (CSRF cookie and token included)."""
    import re

    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    return client.post(
        "/login",
        data={"username": username, "password": password, "csrf": token, "next": "/"},
        follow_redirects=False,
    )


def csrf_of(html: str) -> str:
    import re

    found = re.search(r'name="csrf" value="([^"]*)"', html)
    assert found, "the page has no CSRF token"
    return found.group(1)


@pytest.fixture
def browser_for(app, staff):
    """A separate cookie-carrying client per user, signed in through the login page."""
    clients: list[TestClient] = []

    def make(username: str) -> TestClient:
        c = TestClient(app, base_url="http://testserver")
        c.__enter__()
        clients.append(c)
        r = sign_in_page(c, username)
        assert r.status_code == 303, r.text
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


# --- the command line, in this process -------------------------------------------------


@pytest.fixture
def cli(runtime, monkeypatch, capsys, tmp_path):
    """Run `referral-engine ...` in this process against the test's database: the real
    parser and commands, without a Python start-up per call (tests/test_cli.py runs the
    installed script as a subprocess). Returns a CompletedProcess-like result."""
    import subprocess

    from referral_engine.cli.main import main
    from referral_engine.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", runtime.settings.database_url)
    monkeypatch.setenv("REFERRAL_ENGINE_SECRET_KEY", SECRET)
    monkeypatch.setenv("REFERRAL_ENGINE_AUDIT_KEY", AUDIT_KEY)
    monkeypatch.setenv("REFERRAL_ENGINE_PASSWORD_HASHER", "argon2-fast")
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> subprocess.CompletedProcess:
        get_settings.cache_clear()
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    yield run
    get_settings.cache_clear()


# --- a real HTTP server ----------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live(app) -> Iterator[str]:
    """The test's app served by a real uvicorn on a loopback port, in this process."""
    import threading
    import time

    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=20)


# --- a real OpenID Provider (tests/oidc_provider.py) -----------------------------------


@pytest.fixture(scope="session")
def oidc_provider():
    """oidc-provider-mock served on a loopback port for the whole session."""
    from oidc_provider import running_provider

    with running_provider() as provider:
        yield provider


def oidc_settings(db_url: str, provider, **overrides: Any) -> Settings:
    from oidc_provider import CLIENT_ID, CLIENT_SECRET

    return make_settings(
        db_url, oidc_issuer=provider.issuer, oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET, oidc_allow_http=True, **overrides,
    )  # fmt: skip


def sign_in_again(*people) -> None:
    """Sign each person in again (their token expired with the clock's move): the token
    goes on the person, for `person.get(...)` and the like."""
    for person in people:
        r = person.client.post(
            "/api/auth/token", data={"username": person.username, "password": PASSWORD}
        )
        assert r.status_code == 200, r.text
        person.token = r.json()["access_token"]


class Team(dict):
    """STAFF, made on first use: `users["officer"]` signs the officer up and in.

    The same interface as the `users` fixture, but a test pays only for the people it
    names (password hashing and sign-in dominate a test's set-up). Shared by the pathway
    test files, which each used to carry a copy."""

    def __init__(self, runtime, client):
        super().__init__()
        self.runtime, self.client = runtime, client

    def account(self, name: str) -> Person:
        """Sign `name` up without signing in (for sign-in tests)."""
        return add_user(self.runtime, name, *STAFF[name])

    def __missing__(self, name: str) -> Person:
        person = self.account(name)
        person.client = self.client
        sign_in_again(person)
        self[name] = person
        return person


# --- the browser: one Chromium for the whole session ------------------------------------
# Here, not in a test module: a fixture imported into a second module is a second fixture,
# and a second sync Playwright in one process fails ("Sync API inside the asyncio loop").

CHROMIUM = "/usr/bin/chromium"  # Debian's package (.ci/run installs it); never a download
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    # Like PostgreSQL in conftest: without Chromium these are skipped on a developer's
    # machine, and an error in CI (.ci/run installs it and sets the variable).
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: `apt-get install chromium` (.ci/run does)"
        if os.environ.get("REFERRAL_ENGINE_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def mailbox():
    """A real SMTP server on loopback (tests/smtpbox.py) for a test's mail to reach."""
    from smtpbox import Mailbox

    box = Mailbox()
    box.start()
    yield box
    box.stop()
