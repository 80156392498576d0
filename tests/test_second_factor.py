"""A second factor (TOTP) for administrators and auditors signing in with a password: set
up on the sign-in page from a typed key, recovery codes shown once and stored hashed,
checked on the page and on the API; a code works once and wrong codes lock the account
as wrong passwords do. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
import sqlalchemy as sa
from conftest import PASSWORD, add_user, csrf_of, make_settings, sign_in_page
from hypothesis import assume, given
from hypothesis import strategies as st

from referral_engine.accounts.second_factor import STEP_SECONDS, matching_step, normalise
from referral_engine.storage.models import AuditEvent, RecoveryCode, SecondFactor


@pytest.fixture
def settings(db_url):
    return make_settings(db_url, second_factor=True)


@pytest.fixture
def admin(runtime):
    return add_user(runtime, "admin", ["admin"], "Council IT", "local_authority")


def token(client, username: str, otp: str | None = None):
    data = {"username": username, "password": PASSWORD}
    if otp is not None:
        data["otp"] = otp
    return client.post("/api/auth/token", data=data)


def enrol(client, clock) -> tuple[str, list[str]]:
    """Sign in on the page, type the shown key into an 'app' (pyotp), confirm."""
    r = sign_in_page(client, "admin")
    assert r.status_code == 303 and r.headers["location"].startswith("/login/enrol")
    page = client.get(r.headers["location"])
    key = re.search(r'data-testid="totp-key">([A-Z2-7 ]+)<', page.text).group(1).replace(" ", "")
    code = pyotp.TOTP(key).at(clock.now())
    done = client.post("/login/enrol", data={"code": code, "csrf": csrf_of(page.text), "next": "/"})
    assert done.status_code == 200, done.text
    codes = re.findall(r"<code>([A-Z2-9]{5}-[A-Z2-9]{5})</code>", done.text)
    return key, codes


def test_a_password_alone_does_not_sign_in_an_administrator(client, admin):
    r = token(client, "admin")
    assert r.status_code == 401
    assert "second factor" in r.json()["detail"] and "/login" in r.json()["detail"]
    # Someone without those roles signs in as before.
    add_user(client.app.state.runtime, "teacher", ["practitioner"], "School", "education")
    assert token(client, "teacher").status_code == 200


def test_enrol_on_the_page_then_sign_in_on_page_and_api(client, runtime, clock, admin):
    key, codes = enrol(client, clock)
    assert len(codes) == 10 and len(set(codes)) == 10
    # Signed in by the enrolment itself.
    assert client.get("/admin/users").status_code == 200
    # Nothing readable is stored: the key sealed, the recovery codes hashed.
    with runtime.db.reading() as s:
        sealed = s.execute(sa.select(SecondFactor.sealed_key)).scalar_one()
        hashes = list(s.execute(sa.select(RecoveryCode.code_hash)).scalars())
        bodies = " ".join(
            bytes(b).decode() for b in s.execute(sa.select(AuditEvent.body)).scalars()
        )
    assert key not in sealed and len(hashes) == 10
    assert not any(c.replace("-", "") in h or c in h for c in codes for h in hashes)
    assert key not in bodies and not any(c in bodies for c in codes)

    clock.advance(timedelta(seconds=30))
    totp = pyotp.TOTP(key)
    assert token(client, "admin", otp=totp.at(clock.now())).status_code == 200
    # The same code again is refused: a code works once.
    assert token(client, "admin", otp=totp.at(clock.now())).status_code == 401
    # On the page: password, then the code.
    client.cookies.clear()
    clock.advance(timedelta(seconds=30))
    r = sign_in_page(client, "admin")
    assert r.status_code == 303 and r.headers["location"].startswith("/login/code")
    page = client.get(r.headers["location"])
    wrong = client.post("/login/code", data={"code": "000000", "csrf": csrf_of(page.text)})
    assert wrong.status_code == 401 and "not right" in wrong.text
    ok = client.post(
        "/login/code",
        data={"code": totp.at(clock.now()), "csrf": csrf_of(page.text), "next": "/admin/users"},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/admin/users"
    assert client.get("/admin/users").status_code == 200


def test_recovery_codes_work_once(client, clock, admin):
    _, codes = enrol(client, clock)
    assert token(client, "admin", otp=codes[0].lower()).status_code == 200
    assert token(client, "admin", otp=codes[0]).status_code == 401
    assert token(client, "admin", otp=codes[1]).status_code == 200


def test_wrong_codes_lock_the_account_like_wrong_passwords(client, clock, admin):
    key, _ = enrol(client, clock)
    for _ in range(5):
        assert token(client, "admin", otp="123456").status_code == 401
    clock.advance(timedelta(seconds=30))
    r = token(client, "admin", otp=pyotp.TOTP(key).at(clock.now()))
    assert r.status_code == 429 and "Retry-After" in r.headers


def test_the_step_between_password_and_code_is_not_a_session(client, admin):
    r = sign_in_page(client, "admin")
    assert r.status_code == 303
    pending = client.cookies.get("re_pending")
    assert pending and "re_session" not in client.cookies
    assert client.get("/api/me", headers={"Authorization": f"Bearer {pending}"}).status_code == 401
    assert client.get("/admin/users", follow_redirects=False).status_code == 303


# --- the code check on its own (no database) ------------------------------------------------

KEY = pyotp.random_base32()


@given(offset=st.integers(-5, 5), last_offset=st.integers(-5, 5), seconds=st.integers(0, 10**9))
def test_a_code_is_accepted_only_near_now_and_after_the_last_one_used(offset, last_offset, seconds):
    now = datetime.fromtimestamp(1_700_000_000 + seconds, tz=UTC)
    current = int(now.timestamp()) // STEP_SECONDS
    code = pyotp.TOTP(KEY).at((current + offset) * STEP_SECONDS)
    got = matching_step(KEY, code, now, current + last_offset)
    if abs(offset) <= 1 and offset > last_offset:
        assert got == current + offset
    elif got is not None:
        # Another step near now may share the code by chance (1 in a million), never
        # one already used.
        assert got > current + last_offset and abs(got - current) <= 1


@given(st.text(max_size=12))
def test_anything_but_six_digits_is_never_a_totp_code(text):
    code = normalise(text)
    assume(not (code.isascii() and code.isdigit() and len(code) == 6))
    assert matching_step(KEY, text, datetime.now(UTC), 0) is None


def test_full_width_digits_are_refused_not_an_error():
    full_width = "".join(chr(0xFF11 + i) for i in range(6))  # "123456" in full-width digits
    assert matching_step(KEY, full_width, datetime.now(UTC), 0) is None
