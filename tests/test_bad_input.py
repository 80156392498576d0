"""Bad input. Schemathesis generates requests for every operation in /openapi.json, valid
and invalid, sent over real HTTP to uvicorn as a user holding every role. No answer may be
a server error, every error must be an RFC 9457 problem (application/problem+json), and
every answer must be one the document describes (its status, media type and schema).

Bounded and deterministic (derandomised, a few examples per operation and mode), so it
stays quick and a failure reproduces. Also: numbers past what the database holds, and a
broken workflow or policy file, which stops the server and every command at start-up
naming file, line and field (tests/test_definitions.py covers each kind of mistake).
Oversized bodies: tests/test_api.py (413 problem, with and without Content-Length).
"""

from __future__ import annotations

import shutil
from collections import Counter
from typing import Any

import pytest
import requests
import schemathesis
from conftest import AUDIT_KEY, PASSWORD, SECRET, add_user, referral_body
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from referral_engine.cli.main import main
from referral_engine.settings import PROJECT_ROOT, get_settings

EXAMPLES = 4
CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]
STATUSES: Counter[int] = Counter()


def check(case: Any, response: Any, failures: list[str]) -> None:
    STATUSES[response.status_code] += 1
    where = f"{case.method} {case.formatted_path} {case.query or ''} {str(case.body)[:200]}"
    try:  # the answer is one the document describes: its status, media type and body
        case.validate_response(response, checks=CONFORMANCE)
    except FailureGroup as failed:
        failures.append(f"{response.status_code} not as documented for {where}: {failed}"[:600])
    if response.status_code >= 500:
        failures.append(f"{response.status_code} for {where}: {response.text[:300]}")
    elif response.status_code >= 400:
        kind = (response.headers.get("content-type") or [""])[0]
        if not kind.startswith("application/problem+json"):
            failures.append(f"{response.status_code} as {kind!r} for {where}")
            return
        problem = response.json()
        if problem.get("status") != response.status_code or not problem.get("title"):
            failures.append(f"malformed problem for {where}: {problem}")


def fuzz(
    strategy: Any, base: str, session: Any, headers: dict, failures: list[str], negative: bool
) -> int:
    """Send EXAMPLES generated cases; returns how many were sent."""
    sent = 0

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
        phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    def run(case: Any) -> None:
        nonlocal sent
        sent += 1
        response = case.call(
            base_url=base, session=session, headers={**(case.headers or {}), **headers},
            timeout=60,
        )  # fmt: skip
        check(case, response, failures)

    try:
        run()
    except Unsatisfiable:
        assert negative, "valid requests can always be generated"  # nothing to make invalid
    return sent


def test_generated_requests_get_no_server_error_and_only_problem_errors(
    runtime, client, users, live
):
    everyone = add_user(runtime, "everyone", sorted(runtime.policy.roles), "City MASH",
                        "children_social_care")  # fmt: skip
    made = users["teacher"].post("/api/referrals", json=referral_body())
    assert made.status_code == 201, made.text
    ids = {"case_id": made.json()["case_id"], "referral_id": made.json()["id"]}
    schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
    operations = sorted(
        (result.ok() for result in schema.get_all_operations()),
        key=lambda op: op.path == "/api/auth/logout",  # logging out last
    )
    assert len(operations) >= 20
    failures: list[str] = []
    STATUSES.clear()
    session = requests.Session()
    calls = 0

    for op in operations:
        token = client.post(
            "/api/auth/token", data={"username": everyone.username, "password": PASSWORD}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        pinned = {k: v for k, v in ids.items() if f"{{{k}}}" in op.path}
        strategies = [(op.as_strategy(GenerationMode.POSITIVE), False),
                      (op.as_strategy(GenerationMode.NEGATIVE), True)]  # fmt: skip
        if pinned:  # and valid bodies against a real case or referral
            strategies.append(
                (op.as_strategy(GenerationMode.POSITIVE, path_parameters=pinned), False)
            )
        for strategy, negative in strategies:
            calls += fuzz(strategy, live, session, headers, failures, negative)
    session.close()
    assert calls >= len(operations) * 2
    assert not failures, "\n".join(failures[:20])
    # the wide user got real answers, and invalid input was refused, not ignored
    assert STATUSES[200] >= len(operations) and STATUSES[422] >= 10, STATUSES
    print(dict(STATUSES))
    assert runtime.verify_audit().ok


def test_ids_and_versions_past_what_the_database_holds_are_refused_not_crashed(users):
    """Found by the generator on PostgreSQL: an id past 2^31 was a 500."""
    officer = users["officer"]
    made = users["teacher"].post("/api/referrals", json=referral_body()).json()
    for big in (2**31, 2**63, 2**70):
        for r in (
            officer.get(f"/api/cases/{big}"),
            officer.get(f"/api/cases/{big}/history"),
            officer.post(f"/api/cases/{big}/events", json={"event": "screen", "data": {},
                                                           "expected_version": 1}),
            officer.post(f"/api/cases/{made['case_id']}/events",
                         json={"event": "screen", "expected_version": big,
                               "data": {"rag": "red", "rationale": "x"}}),
            officer.get(f"/api/people/{big}"),
            users["teacher"].get(f"/api/referrals/{big}"),
        ):  # fmt: skip
            assert r.status_code in (404, 409, 422), (r.request.url, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
    assert officer.get(f"/api/cases/{made['case_id']}").json()["version"] == 1


# --- bad definitions at start-up -------------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "file", "old", "new", "field"),
    [
        ("workflows", "mash.yaml", "    to: screening\n", "    to: screening: now\n", "(syntax)"),
        ("policies", "sla.yaml", "    hours: 4\n", "    hours: -4\n", "mash_decision_red.hours"),
        ("policies", "retention.yaml", "    declined: {years: 2}", "    declined_: {years: 2}",
         "retention.marac.declined_"),
    ],
)  # fmt: skip
def test_the_server_and_every_command_refuse_to_start_on_a_bad_file(
    monkeypatch, capsys, tmp_path, folder, file, old, new, field
):
    """No database is reached: the definitions are loaded first."""
    broken = tmp_path / "broken" / folder
    shutil.copytree(PROJECT_ROOT / folder, broken)
    text = (broken / file).read_text(encoding="utf-8")
    assert text.count(old) == 1
    text = text.replace(old, new)
    (broken / file).write_text(text, encoding="utf-8")
    line = text[: text.index(new.strip())].count("\n") + 1
    monkeypatch.setenv(f"REFERRAL_ENGINE_{folder.upper()}_DIR", str(broken))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'never.db'}")
    monkeypatch.setenv("REFERRAL_ENGINE_SECRET_KEY", SECRET)
    monkeypatch.setenv("REFERRAL_ENGINE_AUDIT_KEY", AUDIT_KEY)
    try:
        for command in (["serve", "--port", "9"], ["tick"], ["retention", "apply"]):
            get_settings.cache_clear()
            code = main(command)
            err = capsys.readouterr().err
            assert code == 2, (command, err)
            assert f"{broken / file}:{line}:" in err, err
            assert field in err and "Traceback" not in err
    finally:
        get_settings.cache_clear()
    assert not (tmp_path / "never.db").exists()
