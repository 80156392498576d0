"""Every page each demo role can reach reads as people write, and none of them fails.

The demo data set (`referral-engine demo`) is loaded once per backend; then, for each
demo account, the crawl signs in through /login (the ASGI app through httpx, as a
browser would but without one), follows every same-site link it finds, and fails on:

- any answer of 500 or more;
- visible text that looks like a value straight out of the program: an ISO date or
  timestamp, a Python list or dict, `True` / `False` / `None`, or a snake_case code
  that has a label (in policies/reference.yaml or a workflow's YAML).

Visible text means text nodes outside <script>, <style> and <template>; attribute values
(a form's `value="2026-05-14"`, a `data-due` for the script) are for the program. Text in
<code>, <pre> and <svg> is a name shown as the program's on purpose (an audit action
an auditor searches by, a pathway definition's state names beside their labels).
"""

from __future__ import annotations

import re
from collections import deque
from html.parser import HTMLParser
from urllib.parse import urldefrag, urlsplit

import pytest
from starlette.testclient import TestClient

from referral_engine.ops.demo import DEMO_PASSWORD, DEMO_USERS, load_demo

# Pages whose GET changes something, or that only download a file.
SKIP = ("/logout", "/static/", "/api/", "/openapi.json", "/docs", "/redoc")
# Enough for every page the demo holds, not unbounded if a page links to endless pages.
MAX_PAGES_PER_ROLE = 250
# Demo accounts whose names begin with a title or belong to a team: greeted by name.
GREETINGS = {"gp": "Ayo", "police": "Dana", "iom.officer": "Casey",
             "prevent.officer": "Robin", "auditor": "Internal Audit"}  # fmt: skip

HIDDEN = ("script", "style", "template", "code", "pre", "svg")
ISO = re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2})?")
PYTHON_REPR = re.compile(r"\[\s*'|'\s*\]|\{\s*'|':\s|\bTrue\b|\bFalse\b|\bNone\b")
SNAKE = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")


class _Page(HTMLParser):
    """The visible text and the links of one page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.links: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in HIDDEN:
            self._hidden += 1
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.links.append(href)

    def handle_endtag(self, tag):
        if tag in HIDDEN and self._hidden:
            self._hidden -= 1

    def handle_data(self, data):
        if not self._hidden and data.strip():
            self.text.append(data.strip())


def codes_with_labels(runtime) -> set[str]:
    """Every snake_case code a person should see only by its label."""
    codes: set[str] = set(runtime.policy.reference.labels())
    for wf in runtime.workflows.current.values():
        labels = wf.labels
        codes |= set(labels.events) | set(labels.states) | set(labels.attributes)
        for fields in labels.fields.values():
            codes |= set(fields)
    codes |= set(runtime.policy.roles)
    return {c for c in codes if "_" in c}


def faults(text: str, codes: set[str]) -> list[str]:
    """What in one piece of visible text reads as program output, not as people write."""
    found = [m.group(0) for m in ISO.finditer(text)]
    found += [m.group(0) for m in PYTHON_REPR.finditer(text)]
    found += [m.group(0) for m in SNAKE.finditer(text) if m.group(0) in codes]
    return found


def test_faults_finds_what_the_crawl_looks_for():
    codes = {"lawful_basis", "crime_and_disorder_s115"}
    assert faults("At: 2026-12-02T04:13:59.514695+00:00", codes)
    assert faults("Date of birth 1996-05-14", codes)
    assert faults("Factors: ['grievance', 'identity']", codes)
    assert faults("Risk found: True", codes)
    assert faults("Lawful basis: crime_and_disorder_s115", codes)
    assert not faults("2 December 2026, 4:13pm · Risk found: Yes", codes)
    assert not faults("Crime and Disorder Act 1998 s115", codes)
    assert not faults("free_text_that_has_no_label", codes)


def _crawl(client: TestClient, codes: set[str]) -> tuple[int, list[str]]:
    seen: set[str] = {"/"}
    todo = deque(["/"])
    problems: list[str] = []
    while todo and len(seen) <= MAX_PAGES_PER_ROLE:
        url = todo.popleft()
        r = client.get(url, follow_redirects=True)
        if r.status_code >= 500:
            problems.append(f"{url}: {r.status_code}")
            continue

        if "text/html" not in r.headers.get("content-type", ""):
            continue
        page = _Page()
        page.feed(r.text)
        for text in page.text:
            for fault in faults(text, codes):
                problems.append(f"{url}: {fault!r} in {text[:120]!r}")
        for href in page.links:
            href, _ = urldefrag(href)
            parts = urlsplit(href)
            if parts.scheme or parts.netloc or not href.startswith("/"):
                continue
            if href.startswith(SKIP) or href in seen:
                continue
            seen.add(href)
            todo.append(href)
    return len(seen), problems


# On SQLite only: what a page says does not depend on the database, and the demo load
# and crawl take a minute on PostgreSQL on the 2-core CI machine (nine seconds here).
ON_SQLITE = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


@pytest.fixture
def demo(runtime):
    load_demo(runtime, quiet=True)
    return runtime


@ON_SQLITE
def test_every_page_each_demo_role_reaches_reads_as_people_write(demo, app):
    codes = codes_with_labels(demo)
    problems: list[str] = []
    for user in DEMO_USERS:
        with TestClient(app, base_url="http://testserver") as c:
            page = c.get("/login")
            token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
            r = c.post(
                "/login",
                data={"username": user["username"], "password": DEMO_PASSWORD,
                      "csrf": token, "next": "/"},
                follow_redirects=False,
            )  # fmt: skip
            assert r.status_code == 303, (user["username"], r.text[:300])
            home = c.get("/").text
            if user["username"] in GREETINGS:
                assert f"Good to see you, {GREETINGS[user['username']]}<" in home, user
            if user["username"] == "idva":
                # a meeting's agenda links only what its reader may open (not person pages)
                agenda = c.get("/meetings/1").text
                assert "Allocated to you" in agenda and 'href="/people/' not in agenda
            pages, found = _crawl(c, codes)
            assert pages > 3, f"{user['username']} reached only {pages} pages"
            problems += [f"{user['username']} {p}" for p in dict.fromkeys(found)]
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)
