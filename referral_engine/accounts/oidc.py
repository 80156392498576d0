"""The identity provider, as an OpenID Connect client sees it (Authlib does the protocol).

Discovery (`/.well-known/openid-configuration`), the authorisation request with PKCE
(S256), state and nonce, the code exchange, and the ID token's validation: its signature
against the provider's published keys (JWKS, fetched again once when a token names a key
not yet seen, as providers rotate them), and its issuer, audience, expiry, issue time and
nonce. Only asymmetric algorithms are accepted: the product's own HS256 tokens are
python-jose's business (tokens.py) and an ID token signed with the client secret, or
not at all, is refused.

Microsoft Entra's multi-tenant metadata names its issuer as a template
(`https://login.microsoftonline.com/{tenantid}/v2.0`); each token's issuer is that
template filled with the token's own `tid`, which is what is checked.

Every refusal is a `SignInRefused` with a reason code from a closed list (for the audit
log) and a message for the person signing in.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
from authlib.common.urls import add_params_to_uri
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import (
    ClaimError,
    ExpiredTokenError,
    InvalidKeyIdError,
    JoseError,
)
from joserfc.jwk import KeySet

from referral_engine.errors import Unauthorised

# Signature algorithms an ID token may use: asymmetric only.
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
ENTRA_TENANT_TEMPLATE = "{tenantid}"
# Clocks of the provider and of this server may differ by this much.
LEEWAY_SECONDS = 60
METADATA_TTL_SECONDS = 3600
# A token naming an unknown key fetches the keys again, but not more often than this.
JWKS_REFRESH_SECONDS = 60

# Why a sign-in through the provider was refused: the audit log's closed vocabulary.
REASONS = (
    "provider_unreachable",  # discovery, keys or token endpoint did not answer
    "provider_refused",  # the provider sent the person back with an error
    "state",  # callback not started here, from another browser, expired or used
    "token_exchange",  # the code was not exchanged for tokens
    "signature",  # the ID token's signature does not verify with the provider's keys
    "issuer",
    "audience",
    "expired",
    "nonce",
    "claims",  # another claim is missing or not valid
    "tenant",  # the organisation is not in identity.yaml
    "no_role",  # no value of roles/groups is mapped
    "disabled",
)


class SignInRefused(Unauthorised):
    """A sign-in refused: `reason` for the audit log, the message for the person."""

    def __init__(self, reason: str, message: str):
        assert reason in REASONS, reason
        super().__init__(message)
        self.reason = reason


UNREACHABLE = (
    "Your organisation's sign-in service could not be reached. Try again in a few minutes; "
    "if it keeps happening, tell your IT service desk."
)
NOT_VALID = (
    "The sign-in could not be completed: the identity provider's answer was not valid. "
    "Please start again."
)


@dataclass(frozen=True)
class ProviderConfig:
    issuer: str
    client_id: str
    client_secret: str | None
    scopes: str = "openid profile email"
    timeout: float = 10.0


def expected_issuer(metadata_issuer: str, claims: dict[str, Any]) -> str:
    """The issuer this token must name: the metadata's, with Entra's `{tenantid}` filled
    from the token's `tid` (multi-tenant apps)."""
    if ENTRA_TENANT_TEMPLATE in metadata_issuer:
        tid = claims.get("tid")
        if not isinstance(tid, str) or not tid or "/" in tid:
            return metadata_issuer  # cannot match a real issuer: refused as "issuer"
        return metadata_issuer.replace(ENTRA_TENANT_TEMPLATE, tid)
    return metadata_issuer


def identity_key(issuer: str, claims: dict[str, Any]) -> tuple[str, str]:
    """Who this person is, as stored: (issuer, subject). On Entra (a token with `tid` and
    `oid`) the tenant and the object id, which stay the same across applications and
    issuer URLs; elsewhere the issuer and `sub`. Never an email or a username, which
    can be changed or reused."""
    tid, oid = claims.get("tid"), claims.get("oid")
    if isinstance(tid, str) and tid and isinstance(oid, str) and oid:
        return f"tid:{tid}", oid
    return issuer, str(claims["sub"])


def _same_issuer(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def metadata_names_issuer(named: str, configured: str) -> bool:
    """Whether discovery metadata fetched for `configured` names it as its issuer
    (Discovery 4.3), allowing Entra's multi-tenant endpoints (`organizations`, `common`),
    whose metadata names the `{tenantid}` template instead."""
    if _same_issuer(named, configured):
        return True
    if ENTRA_TENANT_TEMPLATE not in named:
        return False
    return any(
        _same_issuer(named.replace(ENTRA_TENANT_TEMPLATE, alias), configured)
        for alias in ("organizations", "common")
    )


class Provider:
    """One OpenID Provider: metadata and keys fetched when first needed and cached."""

    def __init__(self, config: ProviderConfig):
        self.config = config
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = 0.0

    # --- metadata and keys ---------------------------------------------------------------

    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = requests.get(url, timeout=self.config.timeout)
            response.raise_for_status()
            data = response.json()
        except (requests.RequestException, ValueError):
            raise SignInRefused("provider_unreachable", UNREACHABLE) from None
        if not isinstance(data, dict):
            raise SignInRefused("provider_unreachable", UNREACHABLE)
        return data

    def metadata(self) -> dict[str, Any]:
        with self._lock:
            fresh = time.monotonic() - self._metadata_at < METADATA_TTL_SECONDS
            if self._metadata is not None and fresh:
                return self._metadata
        url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        data = self._get_json(url)
        # OpenID Connect Discovery 4.3: the metadata must name the issuer it was fetched
        # for, or a provider could pass itself off as another.
        named = str(data.get("issuer") or "")
        if not metadata_names_issuer(named, self.config.issuer):
            raise SignInRefused("provider_unreachable", UNREACHABLE)
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(data.get(key), str):
                raise SignInRefused("provider_unreachable", UNREACHABLE)
        with self._lock:
            self._metadata, self._metadata_at = data, time.monotonic()
        return data

    def keys(self, *, refresh: bool = False) -> KeySet:
        with self._lock:
            if self._keys is not None and not refresh:
                return self._keys
            if refresh and time.monotonic() - self._keys_at < JWKS_REFRESH_SECONDS:
                return self._keys  # type: ignore[return-value]
        data = self._get_json(self.metadata()["jwks_uri"])
        try:
            keys = KeySet.import_key_set(data)  # type: ignore[arg-type]
        except (JoseError, ValueError, KeyError, TypeError):
            raise SignInRefused("provider_unreachable", UNREACHABLE) from None
        with self._lock:
            self._keys, self._keys_at = keys, time.monotonic()
        return keys

    def _algorithms(self) -> list[str]:
        offered = self.metadata().get("id_token_signing_alg_values_supported") or ["RS256"]
        return [a for a in offered if a in ASYMMETRIC] or ["RS256"]

    # --- the flow --------------------------------------------------------------------------

    def _session(self, redirect_uri: str) -> OAuth2Session:
        methods = self.metadata().get("token_endpoint_auth_methods_supported") or []
        method = (
            "client_secret_post"
            if "client_secret_basic" not in methods and "client_secret_post" in methods
            else "client_secret_basic"
        )
        if not self.config.client_secret:
            method = "none"
        return OAuth2Session(
            client_id=self.config.client_id,
            client_secret=self.config.client_secret,
            scope=self.config.scopes,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method=method,
        )

    def authorization_url(
        self, redirect_uri: str, *, state: str, nonce: str, code_verifier: str
    ) -> str:
        with self._session(redirect_uri) as session:
            url, _ = session.create_authorization_url(
                self.metadata()["authorization_endpoint"],
                state=state,
                code_verifier=code_verifier,
                nonce=nonce,
            )
        return url

    def exchange(self, code: str, redirect_uri: str, code_verifier: str) -> dict[str, Any]:
        """The token endpoint's answer for this code (with the PKCE verifier)."""
        with self._session(redirect_uri) as session:
            try:
                token = session.fetch_token(
                    self.metadata()["token_endpoint"],
                    code=code,
                    code_verifier=code_verifier,
                    timeout=self.config.timeout,
                )
            except requests.RequestException:
                raise SignInRefused("provider_unreachable", UNREACHABLE) from None
            except (OAuth2Error, ValueError):
                raise SignInRefused("token_exchange", NOT_VALID) from None
        if not isinstance(token.get("id_token"), str):
            raise SignInRefused("token_exchange", NOT_VALID)
        return dict(token)

    def validate(
        self, id_token: str, *, nonce: str, now: datetime, access_token: str | None = None
    ) -> dict[str, Any]:
        """The claims of a genuine ID token meant for this client and this sign-in."""
        algorithms = self._algorithms()
        try:
            try:
                decoded = jwt.decode(id_token, self.keys(), algorithms=algorithms)
            except InvalidKeyIdError:
                decoded = jwt.decode(id_token, self.keys(refresh=True), algorithms=algorithms)
        except (JoseError, ValueError):
            raise SignInRefused("signature", NOT_VALID) from None
        claims = dict(decoded.claims)
        issuer = expected_issuer(self.metadata()["issuer"], claims)
        id_claims = CodeIDToken(
            claims,
            decoded.header,
            {
                "iss": {"essential": True, "value": issuer},
                "aud": {"essential": True, "value": self.config.client_id},
                "sub": {"essential": True},
            },
            {"nonce": nonce, "client_id": self.config.client_id, "access_token": access_token},
        )
        try:
            id_claims.validate(now=int(now.timestamp()), leeway=LEEWAY_SECONDS)
        except ExpiredTokenError:
            raise SignInRefused("expired", NOT_VALID) from None
        except ClaimError as exc:
            reason = {"iss": "issuer", "aud": "audience", "azp": "audience",
                      "nonce": "nonce", "exp": "expired"}.get(exc.claim, "claims")  # fmt: skip
            raise SignInRefused(reason, NOT_VALID) from None
        # A nonce is always sent, so one must always come back (Authlib checks it only
        # when the token has one: `validate_nonce` compares when present).
        if claims.get("nonce") != nonce:
            raise SignInRefused("nonce", NOT_VALID)
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise SignInRefused("claims", NOT_VALID)
        return claims

    def logout_url(self, post_logout_redirect_uri: str) -> str | None:
        """Where to send the browser to sign out at the provider too (RP-initiated logout),
        or None when the provider has no end_session_endpoint (or cannot be reached:
        the product's own session is ended anyway)."""
        try:
            endpoint = self.metadata().get("end_session_endpoint")
        except SignInRefused:
            return None
        if not isinstance(endpoint, str) or not endpoint:
            return None
        return add_params_to_uri(
            endpoint,
            [
                ("client_id", self.config.client_id),
                ("post_logout_redirect_uri", post_logout_redirect_uri),
            ],
        )
