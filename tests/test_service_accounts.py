"""Service accounts for partner systems: made by the command line with a key printed
once and stored hashed, used as `Authorization: Bearer <key>` with exactly its role's
and agency's reach, every use audited, revocable. On SQLite and PostgreSQL."""

from __future__ import annotations

import json

import sqlalchemy as sa
from conftest import referral_body

from referral_engine.storage.models import AuditEvent, ServiceAccount


def add(cli, *args: str) -> str:
    r = cli("service-accounts", "add", *args)
    assert r.returncode == 0, r.stderr
    [key] = [line for line in r.stdout.splitlines() if line.startswith("rek_")]
    return key


def secret_of(key: str) -> str:
    """The secret part of `rek_<16 hex>_<secret>` (the secret may hold `_` itself)."""
    return key[len("rek_") + 16 + 1 :]


def rows(runtime, action: str) -> list[dict]:
    with runtime.db.reading() as s:
        bodies = s.execute(
            sa.select(AuditEvent.body).where(AuditEvent.action == action).order_by(AuditEvent.id)
        ).scalars()
        return [json.loads(b) for b in bodies]


def everything_stored(runtime) -> str:
    with runtime.db.reading() as s:
        accounts = s.execute(sa.select(ServiceAccount.key_id, ServiceAccount.key_hash)).all()
        audit = [bytes(b).decode() for b in s.execute(sa.select(AuditEvent.body)).scalars()]
    return json.dumps([list(a) for a in accounts]) + " ".join(audit)


def test_a_partner_system_refers_with_its_key(cli, client, runtime, staff):
    key = add(cli, "police-niche", "--role", "practitioner", "--agency", "City Police")
    headers = {"Authorization": f"Bearer {key}"}
    me = client.get("/api/me", headers=headers).json()
    assert me["roles"] == ["practitioner"]
    assert (me["agency"], me["agency_kind"]) == ("City Police", "police")
    made = client.post("/api/referrals", json=referral_body(), headers=headers)
    assert made.status_code == 201, made.text
    # Its own referral's status, as any practitioner sees it ...
    assert client.get(f"/api/referrals/{made.json()['id']}", headers=headers).status_code == 200
    # ... and nothing a practitioner may not see: the MASH case is not named to it.
    case = client.get(f"/api/cases/{made.json()['case_id']}", headers=headers)
    assert case.status_code in (403, 404)
    # Police practitioners may refer straight into MARAC (policy), so it may too.
    assert client.get("/api/cases", headers=headers).status_code in (200, 403)
    # Every use audited, by key id; the key itself is stored nowhere.
    uses = rows(runtime, "api:auth:api_key")
    assert len(uses) >= 4 and all(u["outcome"] == "allowed" for u in uses)
    assert uses[0]["actor"]["username"] == "svc.police-niche"
    assert key not in everything_stored(runtime)
    assert secret_of(key) not in everything_stored(runtime)


def test_list_never_shows_the_key_and_revoke_stops_it(cli, client, runtime):
    key = add(cli, "nhs-ehr", "--role", "practitioner", "--agency", "City NHS Trust",
              "--agency-kind", "health")  # fmt: skip
    listed = cli("service-accounts", "list")
    assert listed.returncode == 0 and "nhs-ehr" in listed.stdout and "active" in listed.stdout
    assert key not in listed.stdout and secret_of(key) not in listed.stdout
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/me", headers=headers).status_code == 200
    r = cli("service-accounts", "revoke", "nhs-ehr")
    assert r.returncode == 0, r.stderr
    refused = client.get("/api/me", headers=headers)
    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "revoked" in cli("service-accounts", "list").stdout
    assert rows(runtime, "api:auth:api_key")[-1]["summary"] == {"reason": "revoked"}
    assert rows(runtime, "cli:service_account:revoke")


def test_a_wrong_or_made_up_key_is_refused_and_audited(cli, client, runtime):
    key = add(cli, "probation", "--role", "practitioner", "--agency", "Probation Service",
              "--agency-kind", "probation")  # fmt: skip
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    for bad in (wrong, "rek_0123456789abcdef_" + "x" * 43, "rek_nonsense"):
        r = client.get("/api/me", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401
    refusals = [r for r in rows(runtime, "api:auth:api_key") if r["outcome"] == "refused"]
    assert [r["summary"]["reason"] for r in refusals] == ["unknown key"] * 3
    assert wrong not in everything_stored(runtime)


def test_a_key_is_not_a_browser_session(cli, client):
    key = add(cli, "housing-crm", "--role", "practitioner", "--agency", "City Housing",
              "--agency-kind", "housing")  # fmt: skip
    client.cookies.set("re_session", key)
    assert client.get("/referrals/new", follow_redirects=False).status_code == 303


def test_bad_input_names_the_field(cli):
    r = cli("service-accounts", "add", "Police Niche!", "--role", "admin", "--agency", "New Org")
    assert r.returncode == 1
    assert "name: use 2-60 lower-case letters" in r.stderr
    assert "role: a service account cannot hold the admin role" in r.stderr
    r = cli("service-accounts", "add", "ok-name", "--role", "wizard", "--agency", "X")
    assert "role: unknown role 'wizard'" in r.stderr
    r = cli("service-accounts", "add", "ok-name", "--role", "practitioner", "--agency", "New Org")
    assert "agency_kind: New Org is a new agency: give its kind" in r.stderr
    add(cli, "dupe", "--role", "practitioner", "--agency", "New Org", "--agency-kind", "other")
    r = cli("service-accounts", "add", "dupe", "--role", "practitioner", "--agency", "New Org")
    assert "name: dupe is already taken" in r.stderr
    r = cli("service-accounts", "revoke", "nobody")
    assert r.returncode == 1 and "no service account is called 'nobody'" in r.stderr
