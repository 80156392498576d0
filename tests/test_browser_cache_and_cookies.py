"""What the browser may keep (issue 19): pages and API answers with personal data are
`no-store`; signing out tells the browser to drop its cache (but not the storage holding
a form's draft); session cookies are Secure outside demo mode, and in demo mode behind a
proxy only when that proxy is trusted (REFERRAL_ENGINE_TRUSTED_PROXIES).
"""

from __future__ import annotations

import http.client
import re
import threading
import time
import urllib.parse

import pytest
import uvicorn
from conftest import PASSWORD, csrf_of, free_port, make_settings, sign_in_page
from starlette.testclient import TestClient


def test_pages_and_api_answers_are_never_stored_and_sign_out_clears_the_cache(
    runtime, refer, browser_for, users, app
):
    case_id = refer()["case_id"]
    officer = browser_for("officer")
    for url in (f"/cases/{case_id}", "/queue", "/", "/referrals/new", "/nonexistent"):
        r = officer.get(url)
        assert r.headers["cache-control"] == "no-store", url
    assert users["officer"].get(f"/api/cases/{case_id}").headers["cache-control"] == "no-store"
    with TestClient(app, base_url="http://testserver") as anon:
        assert anon.get("/login").headers["cache-control"] == "no-store"
        assert "no-store" not in anon.get("/static/app.css").headers.get("cache-control", "")
    page = officer.get("/logout")
    out = officer.post("/logout", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["clear-site-data"] == '"cache"'
    api_out = users["manager"].post("/api/auth/logout")
    assert api_out.status_code == 204 and api_out.headers["clear-site-data"] == '"cache"'


def _session_cookie(headers: list[tuple[str, str]]) -> str:
    found = [v for k, v in headers if k.lower() == "set-cookie" and v.startswith("re_session=")]
    assert found, headers
    return found[0]


def test_outside_demo_mode_the_session_cookie_is_secure(db_url, runtime, staff):
    from web.app import create_app

    runtime.settings = make_settings(db_url, secure_cookies=None)  # the product's default
    app = create_app(settings=runtime.settings, runtime=runtime)
    with TestClient(app, base_url="http://testserver") as plain:
        # Even a request that arrived as plain http gets a Secure cookie: a browser then
        # never sends it back over http, so a stripped-TLS hop cannot carry it.
        cookie = plain.get("/login").headers["set-cookie"]
        assert cookie.startswith("re_login_csrf=") and "; secure" in cookie.lower()
    with TestClient(app, base_url="https://testserver") as browser:
        r = sign_in_page(browser, "officer")
        assert r.status_code == 303
        assert "; secure" in _session_cookie(list(r.headers.multi_items())).lower()


def _serve(app, proxy_options: dict):
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **proxy_options)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    return server, thread, port


def _sign_in_behind_proxy(port: int) -> str:
    """Sign in as a TLS proxy on loopback would forward it; returns the session cookie."""
    proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/login", headers=proxy)
    r = conn.getresponse()
    page = r.read().decode()
    csrf_cookie = re.search(r"re_login_csrf=([^;]+)", r.getheader("set-cookie")).group(1)
    body = urllib.parse.urlencode(
        {"username": "officer", "password": PASSWORD, "csrf": csrf_of(page), "next": "/"}
    )
    conn.request("POST", "/login", body, {
        **proxy, "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": f"re_login_csrf={csrf_cookie}",
    })  # fmt: skip
    r = conn.getresponse()
    r.read()
    assert r.status == 303, r.status
    conn.close()
    return _session_cookie(r.getheaders())


@pytest.mark.parametrize(
    ("trusted", "secure"), [("127.0.0.1", True), ("", False), ("10.9.9.9", False)]
)
def test_in_demo_mode_a_cookie_is_secure_only_behind_a_trusted_proxy(
    db_url, runtime, staff, trusted, secure
):
    """The product's own uvicorn options (Settings.proxy_options, used by `serve`): with
    the proxy trusted its X-Forwarded-Proto counts; untrusted, or no proxy configured, the
    header is ignored and the request is plain http."""
    from web.app import create_app

    demo = make_settings(db_url, demo=True, secure_cookies=None, trusted_proxies=trusted)
    app = create_app(settings=demo, runtime=runtime)
    runtime.settings = demo  # pages read the runtime's settings
    server, thread, port = _serve(app, demo.proxy_options())
    try:
        cookie = _sign_in_behind_proxy(port)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
    assert ("; secure" in cookie.lower()) is secure, cookie
