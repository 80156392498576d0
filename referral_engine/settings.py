"""Settings from the environment, in one place.

Outside demo mode the secrets must come from the environment: a server that silently
fell back to a built-in key would let anyone who has read this repository mint tokens
or rewrite the audit chain.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Demo-only secrets: published on purpose, refused outside demo mode.
DEMO_SECRET_KEY = "demo-secret-key-not-for-production-use-0123456789abcdef"  # noqa: S105
DEMO_AUDIT_KEY = "demo-audit-key-not-for-production-use-0123456789abcdef"
MIN_SECRET_LENGTH = 32


class ConfigurationError(RuntimeError):
    """The environment does not describe a safe way to run."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REFERRAL_ENGINE_", extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{PROJECT_ROOT / 'var' / 'referral_engine.db'}",
        validation_alias="DATABASE_URL",
    )
    secret_key: str | None = None
    audit_key: str | None = None
    demo: bool = False
    # The idle timeout: a token (and a browser session) lasts this long unless renewed
    # ("Stay signed in" on a page, warned `session_warning_minutes` before it ends) ...
    token_ttl_minutes: float = 30
    session_warning_minutes: float = 5
    # ... and never beyond this long after signing in with a password (absolute lifetime).
    session_max_hours: float = 10
    # How long a one-time link to set one's own password works (new accounts, resets).
    password_link_hours: float = 24
    # "argon2" in production; "argon2-fast" makes tests quick without changing the scheme.
    password_hasher: str = "argon2"  # noqa: S105 - a scheme name, not a secret
    workflows_dir: Path = PROJECT_ROOT / "workflows"
    policies_dir: Path = PROJECT_ROOT / "policies"
    # How often a PostgreSQL server's background sequencer links pending audit rows.
    audit_seal_interval_seconds: float = 1.0
    # A file (ideally on another host, or WORM storage) that `serve`, `tick` and
    # `db upgrade` append each new signed audit head to; `audit verify --head` reads it.
    audit_head_log: Path | None = None
    # How often a running server seals the chain and keeps a new head while writes
    # happen (0: only at start and shutdown).
    audit_head_interval_seconds: float = 5.0
    max_body_bytes: int = 1_000_000
    # Email (notifications): no host means email is not sent (in-app notices still are).
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "Referral Engine <referral-engine@localhost>"
    smtp_timeout_seconds: float = 30.0
    # A CA bundle to trust for STARTTLS (an internal relay's CA); default: the system's.
    smtp_ca_file: Path | None = None
    # Delivery: tries before a notice is marked failed; the first retry waits this long,
    # each later one twice as long; a claimed row is retried if unmarked after the lease.
    notify_max_attempts: int = 6
    notify_backoff_seconds: float = 60.0
    notify_lease_seconds: float = 300.0
    # How often `serve` drains the outbox in the background.
    notify_interval_seconds: float = 15.0
    # Links in emails point here.
    base_url: str = "http://127.0.0.1:8000"
    # OpenID Connect sign-in (accounts/oidc.py): offered on /login when an issuer is set.
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    # A plain-http issuer, only on a loopback address: for the test suite's provider.
    oidc_allow_http: bool = False
    # The callback URL registered at the provider; default: this server's own URL for
    # /login/oidc/callback as the request reached it. Set it behind a proxy.
    oidc_redirect_uri: str | None = None
    oidc_scopes: str = "openid profile email"
    oidc_timeout_seconds: float = 10.0
    # Off: /login offers only the provider and the API refuses passwords.
    local_passwords: bool = True
    # A password sign-in of the roles in identity.yaml's second_factor_roles (admin,
    # auditor) also needs a TOTP code. Off only in the test suite, whose fixtures sign
    # those roles in with a password alone (tests/test_second_factor.py turns it on).
    second_factor: bool = True
    # The reverse proxy (or proxies) that terminate TLS, as uvicorn's forwarded-allow-ips
    # takes them ("10.0.0.5", "10.0.0.0/24,10.0.1.7"): only their X-Forwarded-Proto and
    # X-Forwarded-For are believed. Empty: no proxy headers are read at all.
    trusted_proxies: str = ""
    # Session cookies marked Secure (sent over HTTPS only). None: on outside demo mode,
    # and in demo mode whenever the request arrived over HTTPS (directly or through a
    # trusted proxy). Set false only to run without TLS on a closed network or in tests.
    secure_cookies: bool | None = None

    def effective_secret_key(self) -> str:
        return self._secret("secret_key", self.secret_key, DEMO_SECRET_KEY)

    def effective_audit_key(self) -> bytes:
        return self._secret("audit_key", self.audit_key, DEMO_AUDIT_KEY).encode()

    def _secret(self, name: str, value: str | None, demo_value: str) -> str:
        env = f"REFERRAL_ENGINE_{name.upper()}"
        if value:
            if len(value) < MIN_SECRET_LENGTH:
                raise ConfigurationError(f"{env} must be at least {MIN_SECRET_LENGTH} characters")
            if value == demo_value and not self.demo:
                raise ConfigurationError(f"{env} is the published demo value; set a real secret")
            return value
        if self.demo:
            return demo_value
        raise ConfigurationError(
            f"{env} is not set. Set it to a random string of {MIN_SECRET_LENGTH}+ characters, "
            "or set REFERRAL_ENGINE_DEMO=1 to run the demo with built-in secrets."
        )

    def require_secrets(self) -> None:
        """Fail early (at start-up) rather than on the first request."""
        self.effective_secret_key()
        self.effective_audit_key()
        self.check_sign_in()

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer)

    def check_sign_in(self) -> None:
        """The sign-in settings describe a safe way to run: an https issuer (plain http only
        on loopback, and only when allowed), a client id and, outside demo mode, a secret;
        and some way to sign in at all."""
        if not self.oidc_enabled:
            if not self.local_passwords:
                raise ConfigurationError(
                    "REFERRAL_ENGINE_LOCAL_PASSWORDS is off but no REFERRAL_ENGINE_OIDC_ISSUER "
                    "is set: nobody could sign in"
                )
            return
        issuer = urlsplit(self.oidc_issuer or "")
        if issuer.scheme != "https":
            loopback = issuer.hostname in {"127.0.0.1", "::1", "localhost"}
            if not (issuer.scheme == "http" and loopback and self.oidc_allow_http):
                raise ConfigurationError(
                    "REFERRAL_ENGINE_OIDC_ISSUER must be an https URL (plain http only on a "
                    "loopback address with REFERRAL_ENGINE_OIDC_ALLOW_HTTP=1, for tests)"
                )
        if not self.oidc_client_id:
            raise ConfigurationError(
                "REFERRAL_ENGINE_OIDC_CLIENT_ID is not set: the application (client) ID "
                "registered at the identity provider"
            )
        if not self.oidc_client_secret and not self.demo:
            raise ConfigurationError(
                "REFERRAL_ENGINE_OIDC_CLIENT_SECRET is not set: the client secret registered "
                "at the identity provider"
            )

    def proxy_options(self) -> dict[str, object]:
        """uvicorn's options for reading the client's scheme and address from a proxy."""
        if not self.trusted_proxies.strip():
            return {"proxy_headers": False}
        return {"proxy_headers": True, "forwarded_allow_ips": self.trusted_proxies.strip()}

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
