"""Tokens, sessions, lockout, password rules and secrets (issue 6, "Tokens").

Every way of getting a token the server did not issue, or one it no longer honours, is
refused with 401: `alg: none`, other algorithms (HS512 with the real secret, RS256 with a
made-up key), the right algorithm with a wrong key, an expired token, a signed-out one,
and any token of a user whose password was reset or whose account was disabled since.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from conftest import AUDIT_KEY, PASSWORD, SECRET, password_link, sign_in_page
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt

from referral_engine.errors import InvalidData
from referral_engine.settings import DEMO_SECRET_KEY, ConfigurationError, Settings

NEW_PASSWORD = "a brand new passphrase"


def b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def payload(user_id: int, now, **over: Any) -> dict[str, Any]:
    body = {
        "sub": str(user_id),
        "jti": uuid.uuid4().hex,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=30)).timestamp()),
        "typ": "access",
        "gen": 0,
    }
    body.update(over)
    return body


def me(client, token: str):
    return client.get("/api/me", headers={"Authorization": f"Bearer {token}"})


def refused(r) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["www-authenticate"] == "Bearer"


def rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_only_hs256_tokens_signed_with_the_secret_are_accepted(users, client, clock):
    officer = users["officer"]
    now = clock.now()
    body = payload(officer.user_id, now)
    forged = {
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(body)}.",
        "alg none, signature kept": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(body)}."
        + jwt.encode(body, SECRET, algorithm="HS256").split(".")[2],
        "HS512 with the real secret": jwt.encode(body, SECRET, algorithm="HS512"),
        "HS384 with the real secret": jwt.encode(body, SECRET, algorithm="HS384"),
        "RS256 with a made-up key": jwt.encode(body, rsa_pem().decode(), algorithm="RS256"),
        "HS256 with a wrong key": jwt.encode(body, "x" * 48, algorithm="HS256"),
        "HS256 with the audit key": jwt.encode(body, AUDIT_KEY, algorithm="HS256"),
        "not an access token": jwt.encode({**body, "typ": "refresh"}, SECRET, algorithm="HS256"),
        "no session generation": jwt.encode(
            {k: v for k, v in body.items() if k != "gen"}, SECRET, algorithm="HS256"
        ),
        "expired": jwt.encode(
            payload(officer.user_id, now - timedelta(minutes=31)), SECRET, algorithm="HS256"
        ),
    }
    for name, token in forged.items():
        r = me(client, token)
        assert r.status_code == 401, (name, r.text)
        refused(r)
        # The page session refuses it too: a cookie holding it is no sign-in at all.
        page = client.get(
            "/queue", headers={"Cookie": f"re_session={token}"}, follow_redirects=False
        )
        assert page.status_code == 303 and page.headers["location"].startswith("/login"), name
    # The very same claims, signed as the server signs, are accepted: each forgery is
    # refused for its forgery alone.
    genuine = jwt.encode(body, SECRET, algorithm="HS256")
    assert me(client, genuine).json()["username"] == "officer"


def test_an_expired_or_signed_out_token_is_refused(users, client, clock):
    officer, manager = users["officer"], users["manager"]
    assert officer.get("/api/me").status_code == 200
    assert officer.post("/api/auth/logout").status_code == 204
    refused(officer.get("/api/me"))
    refused(officer.get("/api/cases"))
    # Accepted once (so its signature check is cached), then refused once it expires.
    assert manager.get("/api/me").status_code == 200
    clock.advance(timedelta(minutes=31))
    refused(manager.get("/api/me"))


def test_a_password_reset_or_disabling_ends_every_session(runtime, users, client, app):
    """Sessions signed in before a reset (API tokens and browser cookies alike) end at
    once; signing in with the new password works; disabling ends them too."""
    admin, teacher = users["admin"], users["teacher"]
    second = client.post("/api/auth/token", data={"username": "teacher", "password": PASSWORD})
    second_token = second.json()["access_token"]
    from starlette.testclient import TestClient

    with TestClient(app, base_url="http://testserver") as browser:
        assert sign_in_page(browser, "teacher").status_code == 303
        assert browser.get("/referrals").status_code == 200
        give_email(runtime, teacher.user_id)
        runtime.accounts.reset_password(admin.actor, teacher.user_id)
        runtime.accounts.set_password_with_link(
            password_link(runtime, "teacher"), NEW_PASSWORD, source="web", request_id=None
        )
        for token in (teacher.token, second_token):
            refused(me(client, token))
        page = browser.get("/referrals", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"].startswith("/login")

    fresh = client.post(
        "/api/auth/token", data={"username": "teacher", "password": NEW_PASSWORD}
    ).json()["access_token"]
    assert me(client, fresh).json()["username"] == "teacher"
    refused(client.post("/api/auth/token", data={"username": "teacher", "password": PASSWORD}))
    # Other people's sessions are untouched.
    assert users["officer"].get("/api/me").status_code == 200

    runtime.accounts.set_disabled(admin.actor, teacher.user_id, True)
    refused(me(client, fresh))
    runtime.accounts.set_disabled(admin.actor, teacher.user_id, False)
    # Enabling again does not bring old sessions back.
    refused(me(client, fresh))
    again = client.post("/api/auth/token", data={"username": "teacher", "password": NEW_PASSWORD})
    assert me(client, again.json()["access_token"]).status_code == 200


def give_email(runtime, user_id: int) -> None:
    """Accounts made by the command line have no email; a reset needs one to send to."""
    from referral_engine.storage.models import User

    with runtime.db.transaction() as s:
        s.get(User, user_id).email = f"user{user_id}@example.org"


def test_lockout_counts_page_and_api_failures_alike_and_names_no_account(runtime, users, client):
    """N failures (policies/rules.yaml) lock the username through either door; an unknown
    username locks the same way, so lockout does not reveal which accounts exist."""
    n = runtime.policy.rules.sign_in.max_failures
    for i in range(n):
        if i % 2:
            client.post("/api/auth/token", data={"username": "officer", "password": "wrong" * 3})
        else:
            r = sign_in_page(client, "officer", "wrong" * 3)
            assert r.status_code != 303
    locked = client.post("/api/auth/token", data={"username": "officer", "password": PASSWORD})
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    assert sign_in_page(client, "officer").status_code != 303  # the page is locked too
    for _ in range(n):
        client.post("/api/auth/token", data={"username": "nobody", "password": "wrong" * 3})
    ghost = client.post("/api/auth/token", data={"username": "nobody", "password": "wrong" * 3})
    assert ghost.status_code == 429


WEAK = [
    ("elevenchars", "at least 12 characters"),
    ("newstarter-2026-long", "must not contain the username"),
    ("xx NEWSTARTER xx", "must not contain the username"),
]


def test_password_rules_when_the_user_sets_their_own(runtime, staff):
    """12+ characters and not containing the username, for a new account's first password
    and after a reset; a refused password leaves the link usable."""
    admin = staff["admin"].actor
    new = dict(
        username="newstarter", roles=["practitioner"], agency="Northgate Academy",
        agency_kind="education", display_name="New Starter", email="new@example.org",
    )  # fmt: skip
    made = runtime.accounts.create_user(admin, **new)

    def set_own(password: str) -> str:
        return runtime.accounts.set_password_with_link(
            password_link(runtime, "newstarter"), password, source="web", request_id=None
        )

    for round_ in range(2):
        for password, reason in WEAK:
            with pytest.raises(InvalidData) as exc:
                set_own(password)
            assert [(e.field, reason in e.reason) for e in exc.value.errors] == [("password", True)]
        assert set_own("twelve chars" if round_ == 0 else "another twelve") == "newstarter"
        runtime.accounts.reset_password(admin, made["id"])


# --- secrets come from the environment outside demo mode --------------------------------


SECRET_ENV = ("REFERRAL_ENGINE_SECRET_KEY", "REFERRAL_ENGINE_AUDIT_KEY", "REFERRAL_ENGINE_DEMO")


def test_without_secrets_the_server_refuses_to_start_unless_demo(monkeypatch, tmp_path):
    from web.app import create_app

    for name in SECRET_ENV:
        monkeypatch.delenv(name, raising=False)
    url = f"sqlite:///{tmp_path / 'never.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(ConfigurationError, match="REFERRAL_ENGINE_SECRET_KEY is not set"):
        create_app(settings=Settings())
    monkeypatch.setenv("REFERRAL_ENGINE_SECRET_KEY", SECRET)
    with pytest.raises(ConfigurationError, match="REFERRAL_ENGINE_AUDIT_KEY is not set"):
        Settings().require_secrets()
    monkeypatch.setenv("REFERRAL_ENGINE_AUDIT_KEY", "too short")
    with pytest.raises(ConfigurationError, match="at least 32 characters"):
        Settings().require_secrets()
    monkeypatch.setenv("REFERRAL_ENGINE_AUDIT_KEY", AUDIT_KEY)
    settings = Settings()
    settings.require_secrets()  # both from the environment: starts
    assert settings.effective_secret_key() == SECRET
    assert settings.effective_audit_key() == AUDIT_KEY.encode()

    # The published demo secret is refused outside demo mode, even when set explicitly.
    monkeypatch.setenv("REFERRAL_ENGINE_SECRET_KEY", DEMO_SECRET_KEY)
    with pytest.raises(ConfigurationError, match="published demo value"):
        Settings().require_secrets()

    # Demo mode runs with built-in secrets.
    for name in SECRET_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REFERRAL_ENGINE_DEMO", "1")
    demo = Settings()
    demo.require_secrets()
    assert demo.effective_secret_key() == DEMO_SECRET_KEY
