"""A real OpenID Provider on loopback for the sign-in tests: PyPI's `oidc-provider-mock`
(Flask + Authlib, the same code that runs as `python -m oidc_provider_mock`), served by
werkzeug in a thread of the test session. Its issuer is `http://127.0.0.1:<port>`; it
accepts any client id and secret and offers each predefined user as a button.

The provider puts a user's claims into their ID token after its own, so a user whose
claims say `iss`, `aud`, `exp` or `nonce` gets a token with that wrong value, signed
with the provider's own published key: the refusals are of genuine provider tokens.
What the provider cannot do (sign with a key it does not publish, answer with an ID
token from an earlier sign-in) a test asks of `TokenAnswer`, a WSGI layer in front of
the token endpoint that replaces the `id_token` of the next answer.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import requests
import werkzeug.serving
from oidc_provider_mock import User, app

# Each request would be logged to stderr otherwise.
logging.getLogger("werkzeug").setLevel(logging.WARNING)

COUNCIL, POLICE, NHS = "council-tenant-id", "police-tenant-id", "nhs-tenant-id"
CLIENT_ID, CLIENT_SECRET = "referral-engine-tests", "test-client-secret-0123456789"


def _person(sub: str, tid: str | None, roles: list[str], **extra) -> User:
    claims = {"name": sub.replace("-", " ").title(), "email": f"{sub}@example.org",
              "preferred_username": f"{sub}@example.org", "roles": roles, **extra}  # fmt: skip
    if tid is not None:
        claims["tid"] = tid
    return User(sub=sub, claims=claims)


HOUR = 3600
USERS = [
    _person("council-officer", COUNCIL, ["MASH.Officer"]),
    _person("council-manager", COUNCIL, ["MASH.Manager", "Some.Other.Role"]),
    # Entra-shaped: tenant and object id, the object id different from `sub`.
    _person("police-prevent", POLICE, ["Prevent.Officer"], oid="6f1c-oid-of-police-prevent"),
    # Roles through group membership instead of app roles.
    _person("nhs-practitioner", NHS, [], groups=["Referral.Practitioner"]),
    _person("no-role", COUNCIL, ["Not.Mapped"]),
    _person("unmapped-tenant", "some-other-tenant", ["MASH.Officer"]),
    _person("no-tenant", None, ["MASH.Officer"]),
    _person("wrong-issuer", COUNCIL, ["MASH.Officer"], iss="https://login.evil.example"),
    _person("wrong-audience", COUNCIL, ["MASH.Officer"], aud="another-application"),
    _person(
        "expired",
        COUNCIL,
        ["MASH.Officer"],
        exp=int(time.time()) - 2 * HOUR,
        iat=int(time.time()) - 3 * HOUR,
    ),
    _person("bad-nonce", COUNCIL, ["MASH.Officer"], nonce="not-the-nonce-sent"),
]


@dataclass
class TokenAnswer:
    """In front of the provider: every token endpoint answer is kept (`answers`), and
    `replace_id_token`, when set, rewrites the next one's `id_token` (then clears)."""

    wrapped: Callable
    answers: list[dict] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)
    replace_id_token: Callable[[dict], str] | None = None

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != "/oauth2/token":
            return self.wrapped(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        posted = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(posted)
        self.requests.append({k: v[0] for k, v in parse_qs(posted.decode()).items()})
        captured: dict = {}

        def keep(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda _: None

        body = b"".join(self.wrapped(environ, keep))
        if captured["status"].startswith("200"):
            answer = json.loads(body)
            self.answers.append(dict(answer))
            if self.replace_id_token is not None:
                answer["id_token"] = self.replace_id_token(answer)
                self.replace_id_token = None
            body = json.dumps(answer).encode()
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        start_response(captured["status"], [*headers, ("Content-Length", str(len(body)))])
        return [body]


@dataclass
class RunningProvider:
    issuer: str
    tokens: TokenAnswer

    def sign_in_as(self, authorization_url: str, sub: str) -> str:
        """What a person does on the provider's page: choose `sub`. Returns the URL the
        provider sends the browser back to (the callback, with code and state)."""
        page = requests.get(authorization_url, timeout=10)
        assert page.status_code == 200, page.text
        answer = requests.post(
            authorization_url, data={"sub": sub}, allow_redirects=False, timeout=10
        )
        assert answer.status_code == 302, answer.text
        return answer.headers["Location"]


@contextmanager
def running_provider() -> Iterator[RunningProvider]:
    tokens = TokenAnswer(app(user_claims=USERS, require_nonce=True))
    server = werkzeug.serving.make_server("127.0.0.1", 0, tokens, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.daemon = True
    thread.start()
    try:
        yield RunningProvider(f"http://127.0.0.1:{server.server_port}", tokens)
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


def set_claims(provider: RunningProvider, sub: str, claims: dict) -> None:
    """Change what the provider says of `sub` from now on (its own PUT /users/<sub>)."""
    r = requests.put(f"{provider.issuer}/users/{sub}", json=claims, timeout=10)
    assert r.status_code == 204, r.text


def callback_query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
