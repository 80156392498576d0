"""Sign-in rules that need no database or provider: identity.yaml's validation, the
mapping of claims to roles, whom an ID token is about, and the settings' refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from referral_engine.accounts.oidc import expected_issuer, identity_key, metadata_names_issuer
from referral_engine.errors import DefinitionError
from referral_engine.policies import load_identity, load_policy
from referral_engine.settings import ConfigurationError, Settings

POLICIES = Path(__file__).resolve().parents[1] / "policies"
POLICY = load_policy(POLICIES)
IDENTITY = load_identity(POLICIES, POLICY)


def _with_identity(tmp_path: Path, text: str) -> Path:
    directory = tmp_path / "policies"
    shutil.copytree(POLICIES, directory)
    (directory / "identity.yaml").write_text(text)
    return directory


@pytest.mark.parametrize(
    ("text", "line", "field", "reason"),
    [
        ("tenants:\n  t1:\n    agency: A\n    agency_kind: spaceship\n", 4,
         "tenants.t1.agency_kind", "unknown agency kind 'spaceship'"),
        ("roles:\n  MASH.Officer: [mash_officer]\n  X: [mash_officer, wizard]\n", 3,
         "roles.X.1", "unknown role 'wizard'"),
        ("roles:\n  X: []\n", 2, "roles.X", "at least one role"),
        ("tenants:\n  t1:\n    agency: A\n    agency_kind: police\n    colour: blue\n", 5,
         "tenants.t1.colour", "Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_identity_policy_errors_name_file_line_and_field(tmp_path, text, line, field, reason):
    directory = _with_identity(tmp_path, text)
    with pytest.raises(DefinitionError) as caught:
        load_identity(directory, POLICY)
    err = caught.value
    assert err.path.endswith("identity.yaml")
    assert (err.line, err.field) == (line, field)
    assert reason in err.reason


def test_no_identity_file_means_nobody_signs_in_through_a_provider(tmp_path):
    directory = tmp_path / "policies"
    shutil.copytree(POLICIES, directory)
    (directory / "identity.yaml").unlink()
    identity = load_identity(directory, POLICY)
    assert identity.tenants == {} and identity.roles_for({"roles": ["MASH.Officer"]}) == []


claim_values = st.lists(
    st.one_of(st.sampled_from(sorted(IDENTITY.role_map)), st.text(max_size=12)), max_size=6
)


@given(
    roles=st.one_of(claim_values, st.text(max_size=12), st.none(), st.integers()),
    groups=st.one_of(claim_values, st.none()),
)
def test_roles_come_only_from_mapped_claim_values(roles, groups):
    claims = {"roles": roles, "groups": groups}
    got = IDENTITY.roles_for(claims)
    given_values = {v for c in (roles, groups) if isinstance(c, list) for v in c}
    expected = {r for v, mapped in IDENTITY.role_map.items() if v in given_values for r in mapped}
    assert set(got) == expected and len(got) == len(set(got))
    assert all(r in POLICY.roles for r in got)


def test_entra_multi_tenant_issuer_is_filled_from_the_tokens_tenant():
    template = "https://login.microsoftonline.com/{tenantid}/v2.0"
    assert expected_issuer(template, {"tid": "abc"}) == "https://login.microsoftonline.com/abc/v2.0"
    # A token without a tenant (or a tenant that is a path) can never match an issuer.
    assert expected_issuer(template, {}) == template
    assert expected_issuer(template, {"tid": "x/../y"}) == template
    assert expected_issuer("https://idp.example", {"tid": "abc"}) == "https://idp.example"


def test_discovery_must_name_the_issuer_it_was_fetched_for():
    template = "https://login.microsoftonline.com/{tenantid}/v2.0"
    assert metadata_names_issuer("https://idp.example/", "https://idp.example")
    assert not metadata_names_issuer("https://evil.example", "https://idp.example")
    assert metadata_names_issuer(template, "https://login.microsoftonline.com/organizations/v2.0")
    assert metadata_names_issuer(template, "https://login.microsoftonline.com/common/v2.0")
    assert not metadata_names_issuer(template, "https://login.evil.example/organizations/v2.0")


@given(sub=st.text(min_size=1, max_size=30), email=st.emails())
def test_identity_is_issuer_and_subject_never_the_email(sub, email):
    key = identity_key("https://idp.example", {"sub": sub, "email": email})
    assert key == ("https://idp.example", sub)
    entra = identity_key("https://x", {"sub": sub, "tid": "t", "oid": "o", "email": email})
    assert entra == ("tid:t", "o")


def _settings(**values) -> Settings:
    base = {"secret_key": "s" * 40, "audit_key": "a" * 40, "demo": False}
    return Settings(**{**base, **values})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"oidc_issuer": "http://127.0.0.1:9000", "oidc_client_id": "c",
          "oidc_client_secret": "x"}, "must be an https URL"),
        ({"oidc_issuer": "http://idp.example", "oidc_client_id": "c",
          "oidc_client_secret": "x", "oidc_allow_http": True}, "must be an https URL"),
        ({"oidc_issuer": "https://idp.example", "oidc_client_secret": "x"},
         "OIDC_CLIENT_ID is not set"),
        ({"oidc_issuer": "https://idp.example", "oidc_client_id": "c"},
         "OIDC_CLIENT_SECRET is not set"),
        ({"local_passwords": False}, "nobody could sign in"),
    ],
)  # fmt: skip
def test_unsafe_sign_in_settings_stop_start_up(values, message):
    with pytest.raises(ConfigurationError, match=message):
        _settings(**values).require_secrets()


def test_loopback_http_issuer_only_when_allowed():
    _settings(oidc_issuer="http://127.0.0.1:9000", oidc_client_id="c", oidc_client_secret="x",
              oidc_allow_http=True).require_secrets()  # fmt: skip
    _settings(oidc_issuer="https://idp.example", oidc_client_id="c", oidc_client_secret="x",
              local_passwords=False).require_secrets()  # fmt: skip
