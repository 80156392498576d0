"""Atomic lockout (issue 19): 40 sign-ins on one account at once, 37 wrong and 3 right,
over real HTTP to a real uvicorn, on SQLite and PostgreSQL. Before the fix every one of
them was checked against the lock before any failure was written, so 20-40 guesses got
through; now each attempt is counted before its password is hashed, in the transaction
that checks the lock, so at most `max_failures` wrong guesses are ever checked.

The account's password is hashed at production cost (argon2 defaults), as an attacker
would meet it: a cheap hash would let the requests finish one by one and hide the race.
"""

from __future__ import annotations

import http.client
import random
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from conftest import PASSWORD, add_user, make_settings

from referral_engine.storage.models import LoginFailure


@pytest.fixture
def settings(db_url):
    return make_settings(db_url, password_hasher="argon2")


def test_forty_parallel_sign_ins_get_429s_and_at_most_five_guesses(runtime, live):
    add_user(runtime, "target", ["practitioner"], "Northgate Academy", "education")
    limit = runtime.policy.rules.sign_in.max_failures
    guesses = [f"wrong guess number {i}" for i in range(37)] + [PASSWORD] * 3
    random.Random(19).shuffle(guesses)
    start = threading.Barrier(len(guesses))
    host, port = urllib.parse.urlsplit(live).netloc.split(":")

    def attempt(password: str) -> tuple[int, str | None]:
        body = urllib.parse.urlencode({"username": "target", "password": password})
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        conn.connect()
        start.wait()  # all 40 connected, then all sent at once
        conn.request("POST", "/api/auth/token", body,
                     {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        r = conn.getresponse()
        r.read()
        conn.close()
        return r.status, r.getheader("retry-after")

    with ThreadPoolExecutor(len(guesses)) as pool:
        answers = list(pool.map(attempt, guesses))
    codes = [status for status, _ in answers]
    assert set(codes) <= {200, 401, 429}, codes
    wrong_checked = sum(
        1 for code, p in zip(codes, guesses, strict=True) if p != PASSWORD and code == 401
    )
    assert wrong_checked <= limit, codes
    assert codes.count(429) >= len(guesses) - limit - 3, codes
    assert all(int(after) > 0 for code, after in answers if code == 429)
    with runtime.db.reading() as s:
        failures = s.execute(
            sa.select(sa.func.count()).where(LoginFailure.username == "target")
        ).scalar()
    assert failures == wrong_checked <= limit
