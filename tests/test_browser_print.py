"""Printing, in Debian's Chromium (issue 18): what comes out of Chromium's own PDF print
of a page, read back with pypdf. Every page prints without its navigation, forms or
buttons; the printable case summary carries the OFFICIAL-SENSITIVE marking at the top
and foot of every printed page, with the case's reference.

The browser, the server and the seeded cases are tests/test_browser.py's.
"""

from __future__ import annotations

import io

import pytest
from playwright.sync_api import Page, expect
from pypdf import PdfReader
from test_browser import chromium, seed_cases, site  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser
MARKING = "OFFICIAL-SENSITIVE"
# What a screen offers and paper cannot: none of it may be drawn in print.
INTERACTIVE = "nav, form, button, input, select, textarea, details.event-form"


def pdf_pages(pdf: bytes) -> list[str]:
    """The text of each page of a PDF, as pypdf extracts it."""
    return [page.extract_text() or "" for page in PdfReader(io.BytesIO(pdf)).pages]


def drawn(page: Page, selector: str) -> list[str]:
    """The elements matching `selector` that are drawn (not display:none or hidden)."""
    return page.evaluate(
        """(selector) => [...document.querySelectorAll(selector)]
             .filter(e => e.checkVisibility({visibilityProperty: true}))
             .map(e => e.outerHTML.slice(0, 80))""",
        selector,
    )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_pages_print_without_navigation_forms_or_buttons(site, runtime, staff, refer, fire):  # noqa: F811
    ids = seed_cases(runtime, staff, refer, fire)
    officer = site.as_user("officer")
    officer.goto(f"/cases/{ids['mash']}")
    assert drawn(officer, INTERACTIVE), "the case page on screen has forms and navigation"
    officer.emulate_media(media="print")
    assert drawn(officer, INTERACTIVE) == []
    expect(officer.get_by_role("heading", name="What you can do now")).to_be_hidden()
    text = "\n".join(pdf_pages(officer.pdf(format="A4")))
    assert "Jo Bloggs" in text and "Often hungry" in text  # the record prints
    for screen_only in (
        "Sign out",
        "Skip to main content",
        "What you can do now",
        "Notifications",
        "Why checks are not needed",
        "Note (optional)",
    ):
        assert screen_only not in text, screen_only
    officer.goto("/queue")
    assert drawn(officer, INTERACTIVE) == []  # still print media: the queue prints bare too


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_printable_case_summary_is_marked_on_every_page(site, runtime, staff, refer, fire):  # noqa: F811
    ids = seed_cases(runtime, staff, refer, fire)
    manager = site.as_user("manager")
    manager.goto(f"/cases/{ids['mash']}")
    reference = manager.locator("p.caption").inner_text().rsplit("·", 1)[-1].strip()
    assert reference.startswith("RE-")
    manager.get_by_role("link", name="Printable summary").click()
    expect(manager.get_by_role("heading", level=1)).to_have_text("Case summary: Jo Bloggs")
    site.shot(manager, "case-summary-screen")

    # A6 paper, so the summary runs to several pages: each must carry the marking twice.
    pages = pdf_pages(manager.pdf(width="105mm", height="148mm"))
    assert len(pages) >= 2, pages
    for number, text in enumerate(pages, start=1):
        assert text.count(MARKING) >= 2, f"page {number} of {len(pages)}: {text!r}"
    whole = "\n".join(pages)
    assert reference in whole
    assert "Case summary: Jo Bloggs" in whole
    assert "Printed by Manager" in whole
    for screen_only in ("Sign out", "Back to the case", "Printable summary"):
        assert screen_only not in whole, screen_only
    manager.emulate_media(media="print")
    assert drawn(manager, INTERACTIVE) == []
    site.shot(manager, "case-summary-print")

    # Read through the audited service as a print, not a screen view.
    from sqlmodel import select

    from referral_engine.storage.models import AuditEvent

    with runtime.db.reading() as s:
        actions = set(s.exec(select(AuditEvent.action).where(AuditEvent.case_id == ids["mash"])))
    assert "print:case:view" in actions


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_no_one_prints_a_case_they_may_not_see(site, runtime, staff, refer, fire):  # noqa: F811
    ids = seed_cases(runtime, staff, refer, fire)
    teacher = site.as_user("teacher")
    answer = teacher.goto(f"/cases/{ids['mash']}/print")
    assert answer.status == 404
    assert "Jo Bloggs" not in teacher.content()
