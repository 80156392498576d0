"""Sessions that never lose work (issue 19), in real Chromium against a real uvicorn.

A short idle timeout by setting (10 minutes, warned 5 before), the product's clock moved
on: the referral form is typed into, the session ends, "Send referral" goes to the
sign-in page with a message saying why, and after signing in the form has every typed
value back (web/static/drafts.js). "Stay signed in" renews a session before it ends; no
renewal outlives the absolute lifetime.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import PASSWORD, make_settings

from referral_engine.errors import Unauthorised


@pytest.fixture
def settings(db_url):
    return make_settings(
        db_url, token_ttl_minutes=10, session_warning_minutes=5, session_max_hours=0.5
    )


def test_no_renewal_outlives_the_absolute_lifetime(runtime, staff, clock):
    """Half an hour by setting: renewing every 9 minutes works until then, not after."""
    token, actor, ttl = runtime.accounts.sign_in("teacher", PASSWORD, source="web", request_id=None)
    assert ttl == 600
    lives = []
    for _ in range(3):  # at 9, 18 and 27 minutes
        clock.advance(timedelta(minutes=9))
        token, ttl = runtime.accounts.renew(token, actor)
        lives.append(ttl)
    assert lives == [600, 600, 180]  # the last one ends at the half hour, not later
    clock.advance(timedelta(minutes=2, seconds=30))
    with pytest.raises(Unauthorised, match="longest lifetime"):
        runtime.accounts.renew(token, actor)
    clock.advance(timedelta(seconds=31))
    with pytest.raises(Unauthorised):
        runtime.accounts.actor_from_token(token, source="web", request_id=None)
