"""Signing in through the organisation's identity provider in a real Chromium: the
sign-in page's button, the provider's own page (oidc-provider-mock on loopback), back
to the product signed in, and signed out at both ends. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from conftest import oidc_settings
from playwright.sync_api import expect
from test_browser import LiveServer

from referral_engine.clock import FixedClock

pytestmark = pytest.mark.browser


@pytest.fixture
def clock() -> FixedClock:
    # The provider stamps its tokens with the wall clock, so this server's clock is now.
    return FixedClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def settings(db_url, oidc_provider):
    return oidc_settings(db_url, oidc_provider)


def test_sign_in_and_out_through_the_provider(app, chromium, oidc_provider):
    with LiveServer(app) as server:
        context = chromium.new_context(base_url=server.url, locale="en-GB")
        context.set_default_timeout(10_000)
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(f"{page.url}: {e}"))
        try:
            page.goto("/queue")
            expect(page).to_have_url(f"{server.url}/login?next=/queue")
            page.get_by_role("link", name="Sign in with your organisation's account").click()
            # The provider's own page: choose who to be.
            expect(page).to_have_url(
                re.compile(re.escape(f"{oidc_provider.issuer}/oauth2/authorize?"))
            )
            page.get_by_role("button", name="council-officer", exact=True).click()
            # Back at the page first asked for, signed in as the provider said.
            expect(page).to_have_url(f"{server.url}/queue")
            expect(page.get_by_role("button", name="Sign out")).to_be_visible()
            expect(page.get_by_text("Council Officer").first).to_be_visible()

            page.get_by_role("button", name="Sign out").click()
            # At the provider, to end the session there too, then back to sign-in.
            page.get_by_role("button", name="End session").click()
            expect(page).to_have_url(f"{server.url}/login")
            expect(
                page.get_by_role("link", name="Sign in with your organisation's account")
            ).to_be_visible()
            page.goto("/queue")
            expect(page).to_have_url(f"{server.url}/login?next=/queue")
        finally:
            context.close()
    assert not problems, "\n".join(problems)
