"""Sign-in through a real OpenID Provider (tests/oidc_provider.py) on loopback, over real
HTTP: the app's own callback exchanges the code at the provider's token endpoint and
checks the ID token against the provider's published keys. On SQLite and PostgreSQL.

Every refusal is a genuine answer of the provider (a user whose claims carry a wrong
issuer, audience, expiry or nonce gets a token signed with the provider's key) or, where
a provider would never sign it, a token made here and handed to the real callback in
place of the provider's (`TokenAnswer.replace_id_token`).
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from conftest import PASSWORD, add_user, oidc_settings
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey
from oidc_provider import CLIENT_ID, CLIENT_SECRET, set_claims

from referral_engine.clock import FixedClock
from referral_engine.storage.models import AuditEvent, ExternalIdentity, User, UserRole


@pytest.fixture
def clock() -> FixedClock:
    # The provider stamps its tokens with the wall clock, so this server's clock is now.
    return FixedClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def settings(db_url, oidc_provider):
    return oidc_settings(db_url, oidc_provider)


def start(client, next_url: str = "/") -> str:
    """GET /login/oidc: the provider's authorisation URL (the cookie kept by `client`)."""
    r = client.get(f"/login/oidc?next={next_url}", follow_redirects=False)
    assert r.status_code == 303, r.text
    return r.headers["location"]


def sign_in(client, provider, sub: str, next_url: str = "/"):
    """The whole journey: to the provider, choose `sub`, back to the callback."""
    back = provider.sign_in_as(start(client, next_url), sub)
    parts = urlsplit(back)
    assert parts.path == "/login/oidc/callback"
    return client.get(f"{parts.path}?{parts.query}", follow_redirects=False), back


def audit_rows(runtime, action: str) -> list[dict]:
    import json

    with runtime.db.reading() as s:
        bodies = s.execute(
            sa.select(AuditEvent.body).where(AuditEvent.action == action).order_by(AuditEvent.id)
        ).scalars()
        return [json.loads(b) for b in bodies]


def refusal_reasons(runtime) -> list[str]:
    return [
        r["summary"]["reason"]
        for r in audit_rows(runtime, "web:auth:sign_in")
        if r["outcome"] == "refused"
    ]


def me(client):
    return client.get(
        "/api/me", headers={"Authorization": f"Bearer {client.cookies['re_session']}"}
    )


# --- signing in ----------------------------------------------------------------------------


def test_sign_in_provisions_the_user_and_issues_the_products_session(
    client, runtime, oidc_provider
):
    assert 'href="/login/oidc?next=' in client.get("/login").text
    r, _ = sign_in(client, oidc_provider, "council-officer", "/queue")
    assert r.status_code == 303 and r.headers["location"] == "/queue"
    who = me(client).json()
    assert who["roles"] == ["mash_officer"]
    assert (who["agency"], who["agency_kind"]) == ("City Council MASH", "local_authority")
    assert who["display_name"] == "Council Officer"
    # The session is the product's own token: the queue page opens with it.
    assert client.get("/queue").status_code == 200
    with runtime.db.reading() as s:
        link = s.execute(sa.select(ExternalIdentity)).scalar_one()
    assert (link.issuer, link.subject) == (oidc_provider.issuer, "council-officer")
    [row] = audit_rows(runtime, "web:auth:sign_in")
    assert row["outcome"] == "allowed" and row["summary"]["method"] == "oidc"
    assert row["summary"]["provisioned"] is True

    # Signing in again is the same person, not a second account.
    client.cookies.clear()
    sign_in(client, oidc_provider, "council-officer")
    assert me(client).json()["id"] == who["id"]
    with runtime.db.reading() as s:
        assert s.execute(sa.select(sa.func.count()).select_from(User)).scalar() == 1


def test_pkce_s256_state_and_nonce_are_sent(client, oidc_provider):
    first, second = (parse_qs(urlsplit(start(client)).query) for _ in range(2))
    assert first["code_challenge_method"] == ["S256"]
    for name in ("state", "nonce", "code_challenge"):
        assert len(first[name][0]) >= 32
        assert first[name] != second[name]  # fresh for every sign-in


def test_entra_users_are_keyed_on_tenant_and_object_id(client, runtime, oidc_provider):
    sign_in(client, oidc_provider, "police-prevent")
    with runtime.db.reading() as s:
        link = s.execute(sa.select(ExternalIdentity)).scalar_one()
    assert (link.issuer, link.subject) == ("tid:police-tenant-id", "6f1c-oid-of-police-prevent")
    assert me(client).json()["agency_kind"] == "police"


def test_group_claims_map_to_roles(client, oidc_provider):
    sign_in(client, oidc_provider, "nhs-practitioner")
    who = me(client).json()
    assert who["roles"] == ["practitioner"] and who["agency"] == "City NHS Trust"


def test_never_joined_to_a_local_account_by_email_or_username(client, runtime, oidc_provider):
    local = add_user(runtime, "council-officer@example.org", ["admin"], "Council IT",
                     "local_authority")  # fmt: skip
    sign_in(client, oidc_provider, "council-officer")
    who = me(client).json()
    assert who["id"] != local.user_id
    assert who["username"] == "council-officer@example.org-2"
    assert who["roles"] == ["mash_officer"]
    with runtime.db.reading() as s:
        roles = s.execute(
            sa.select(UserRole.role).where(UserRole.user_id == local.user_id)
        ).scalars()
        assert list(roles) == ["admin"]


def test_roles_follow_the_provider_at_each_sign_in(client, runtime, oidc_provider):
    sign_in(client, oidc_provider, "council-manager")
    assert me(client).json()["roles"] == ["mash_manager"]
    claims = {"tid": "council-tenant-id", "roles": ["MASH.Officer"], "name": "Council Manager"}
    try:
        set_claims(oidc_provider, "council-manager", claims)
        client.cookies.clear()
        sign_in(client, oidc_provider, "council-manager")
        assert me(client).json()["roles"] == ["mash_officer"]
        set_claims(oidc_provider, "council-manager", {**claims, "roles": []})
        client.cookies.clear()
        r, _ = sign_in(client, oidc_provider, "council-manager")
        assert r.status_code == 403 and "re_session" not in client.cookies
    finally:
        set_claims(oidc_provider, "council-manager", {
            "tid": "council-tenant-id", "roles": ["MASH.Manager", "Some.Other.Role"],
            "name": "Council Manager", "email": "council-manager@example.org",
            "preferred_username": "council-manager@example.org",
        })  # fmt: skip


def test_a_disabled_account_cannot_sign_in_through_the_provider(client, runtime, oidc_provider):
    sign_in(client, oidc_provider, "council-officer")
    with runtime.db.transaction() as s:
        s.execute(sa.update(User).values(disabled=True))
    client.cookies.clear()
    r, _ = sign_in(client, oidc_provider, "council-officer")
    assert r.status_code == 403 and "disabled" in r.text
    assert refusal_reasons(runtime) == ["disabled"]


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sub", "reason", "status"),
    [
        ("wrong-issuer", "issuer", 401),
        ("wrong-audience", "audience", 401),
        ("expired", "expired", 401),
        ("bad-nonce", "nonce", 401),
        ("unmapped-tenant", "tenant", 403),
        ("no-tenant", "tenant", 403),
        ("no-role", "no_role", 403),
    ],
)
def test_refused(client, runtime, oidc_provider, sub, reason, status):
    r, _ = sign_in(client, oidc_provider, sub)
    assert r.status_code == status
    assert "re_session" not in client.cookies
    assert refusal_reasons(runtime) == [reason]
    with runtime.db.reading() as s:
        assert s.execute(sa.select(sa.func.count()).select_from(User)).scalar() == 0
    # The audit row holds the reason code, never what the provider said of the person.
    [row] = audit_rows(runtime, "web:auth:sign_in")
    assert f"{sub}@example.org" not in str(row)
    assert sub.replace("-", " ").title() not in str(row)


def test_no_role_says_whom_to_ask(client, oidc_provider):
    r, _ = sign_in(client, oidc_provider, "no-role")
    assert "no role in Referral Engine" in r.text
    assert "the City Council IT service desk" in r.text


def test_replayed_callback_is_refused(client, runtime, oidc_provider):
    r, back = sign_in(client, oidc_provider, "council-officer")
    assert r.status_code == 303
    first_session = client.cookies["re_session"]
    parts = urlsplit(back)
    again = client.get(f"{parts.path}?{parts.query}", follow_redirects=False)
    assert again.status_code == 401
    assert "expired or was already used" in again.text
    assert client.cookies.get("re_session") == first_session  # no second session issued
    assert refusal_reasons(runtime) == ["state"]


def test_callback_in_another_browser_is_refused(app, client, runtime, oidc_provider):
    from starlette.testclient import TestClient

    back = oidc_provider.sign_in_as(start(client), "council-officer")
    parts = urlsplit(back)
    with TestClient(app, base_url="http://testserver") as other:
        r = other.get(f"{parts.path}?{parts.query}", follow_redirects=False)
        assert r.status_code == 401 and "re_session" not in other.cookies
    # ... and that sign-in is spent, even for the browser that started it.
    r = client.get(f"{parts.path}?{parts.query}", follow_redirects=False)
    assert r.status_code == 401
    assert refusal_reasons(runtime) == ["state", "state"]


def test_replayed_id_token_is_refused(client, runtime, oidc_provider):
    sign_in(client, oidc_provider, "council-officer")
    old = oidc_provider.tokens.answers[-1]["id_token"]
    client.cookies.clear()
    oidc_provider.tokens.replace_id_token = lambda answer: old
    r, _ = sign_in(client, oidc_provider, "council-officer")
    assert r.status_code == 401 and "re_session" not in client.cookies
    assert refusal_reasons(runtime) == ["nonce"]


def _claims_of(answer: dict) -> dict:
    """The claims of the provider's own ID token in `answer` (read, not verified)."""
    payload = answer["id_token"].split(".")[1]
    import json

    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_id_token_signed_with_a_key_the_provider_does_not_publish(client, runtime, oidc_provider):
    stranger = RSAKey.generate_key(2048, parameters={"kid": "not-published"})

    def forged(answer: dict) -> str:
        return jwt.encode({"alg": "RS256", "kid": "not-published"}, _claims_of(answer), stranger)

    oidc_provider.tokens.replace_id_token = forged
    r, _ = sign_in(client, oidc_provider, "council-officer")
    assert r.status_code == 401 and "re_session" not in client.cookies
    assert refusal_reasons(runtime) == ["signature"]


def test_id_token_signed_with_the_client_secret_is_refused(client, runtime, oidc_provider):
    """Algorithm confusion: HS256 keyed with the (shared) client secret is never trusted."""
    key = OctKey.import_key(CLIENT_SECRET)

    def forged(answer: dict) -> str:
        return jwt.encode({"alg": "HS256"}, _claims_of(answer), key)

    oidc_provider.tokens.replace_id_token = forged
    r, _ = sign_in(client, oidc_provider, "council-officer")
    assert r.status_code == 401
    assert refusal_reasons(runtime) == ["signature"]


def test_provider_sending_back_an_error_is_refused(client, runtime, oidc_provider):
    state = parse_qs(urlsplit(start(client)).query)["state"][0]
    r = client.get(f"/login/oidc/callback?error=access_denied&state={state}")
    assert r.status_code == 401 and "did not sign you in" in r.text
    assert refusal_reasons(runtime) == ["provider_refused"]


# --- signing out -----------------------------------------------------------------------------


def test_sign_out_ends_the_session_and_signs_out_at_the_provider(client, oidc_provider):
    from conftest import csrf_of

    sign_in(client, oidc_provider, "council-officer")
    token = client.cookies["re_session"]
    csrf = csrf_of(client.get("/logout").text)
    r = client.post("/logout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 200 and "re_session" not in client.cookies
    # The page goes on to the provider's end_session_endpoint by itself.
    [href] = re.findall(r'content="0;url=([^"]+)"', r.text)
    target = urlsplit(html.unescape(href))
    assert f"{target.scheme}://{target.netloc}" == oidc_provider.issuer
    assert target.path == "/oauth2/end_session"
    query = parse_qs(target.query)
    assert query["client_id"] == [CLIENT_ID]
    assert query["post_logout_redirect_uri"] == ["http://testserver/login"]
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


# --- local passwords switched off ------------------------------------------------------------


@pytest.fixture
def no_passwords(db_url, oidc_provider, clock):
    from starlette.testclient import TestClient

    from referral_engine.runtime import Runtime
    from web.app import create_app

    settings = oidc_settings(db_url, oidc_provider, local_passwords=False)
    rt = Runtime.build(settings, clock)
    with TestClient(create_app(settings=settings, runtime=rt), base_url="http://testserver") as c:
        yield rt, c


def test_local_passwords_off(no_passwords, oidc_provider):
    rt, client = no_passwords
    add_user(rt, "officer", ["mash_officer"], "City MASH", "children_social_care")
    page = client.get("/login").text
    assert "/login/oidc" in page and 'name="password"' not in page
    r = client.post("/api/auth/token", data={"username": "officer", "password": PASSWORD})
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "local passwords are switched off" in r.json()["detail"]
    r = client.post("/login", data={"username": "officer", "password": PASSWORD})
    assert r.status_code == 403 and "re_session" not in client.cookies
    refused = [
        row["summary"]
        for action in ("api:auth:sign_in", "web:auth:sign_in")
        for row in audit_rows(rt, action)
        if row["outcome"] == "refused"
    ]
    assert [r["passwords"] for r in refused] == ["off", "off"]
    sign_in(client, oidc_provider, "council-officer")
    assert me(client).json()["roles"] == ["mash_officer"]


def test_pkce_verifier_matches_the_challenge(client, oidc_provider):
    url = start(client)
    challenge = parse_qs(urlsplit(url).query)["code_challenge"][0]
    back = oidc_provider.sign_in_as(url, "council-officer")
    parts = urlsplit(back)
    client.get(f"{parts.path}?{parts.query}", follow_redirects=False)
    verifier = oidc_provider.tokens.requests[-1]["code_verifier"]
    digest = hashlib.sha256(verifier.encode()).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == challenge
