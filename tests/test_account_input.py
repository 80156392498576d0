"""Bad input to accounts (issue 19): common and over-long passwords, control characters
in names, agencies and emails, and the mail sender going on past a row it cannot send.

Each is refused with the field and the reason in words, on the page, through the
service and on the command line, never as a 500 or a traceback.
"""

from __future__ import annotations

import io

import pytest
import sqlalchemy as sa
from conftest import make_settings, password_link, set_password_page
from hypothesis import given
from hypothesis import strategies as st

from referral_engine.accounts import passwords
from referral_engine.errors import InvalidData
from referral_engine.storage.models import Outbox, User

MIN = 12


def reasons(password: str, username: str = "jane.doe") -> list[tuple[str, str]]:
    try:
        passwords.check_password_rules(password, username, MIN)
    except InvalidData as exc:
        return [(e.field, e.reason) for e in exc.errors]
    return []


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("password1234", "one of the most common passwords"),
        ("Password1234!", "one of the most common passwords"),
        ("qwertyuiop12", "one of the most common passwords"),
        ("Summer2026!!", "one of the most common passwords"),
        ("aaaaaaaaaaaa", "too few different characters"),
        ("abababababab", "too few different characters"),
        ("x" * 257, "at most 256 characters"),
        ("é" * 4097, "at most 256 characters"),  # 8,194 bytes: passlib's limit is 4,096
    ],
)
def test_common_repetitive_and_over_long_passwords_are_refused(password, reason):
    got = reasons(password)
    assert len(got) == 1 and got[0][0] == "password" and reason in got[0][1], got


def test_the_common_list_is_bundled_and_ordinary_phrases_pass():
    assert len(passwords.common_passwords()) > 19_000
    for fine in (
        "correct horse battery staple",
        "a perfectly long passphrase",
        "xwvu" + "yz9#" * 63,
    ):
        assert reasons(fine) == [], fine


@given(st.text(min_size=passwords.MAX_LENGTH + 1, max_size=passwords.MAX_LENGTH + 50))
def test_any_password_over_the_maximum_is_refused_for_its_length(password):
    assert reasons(password) == [("password", f"must be at most {passwords.MAX_LENGTH} characters")]


@given(
    st.text(min_size=1, max_size=30), st.sampled_from(["\r", "\n", "\x00", "\t", "\x1b", "\u2028"])
)
def test_control_characters_are_found_anywhere(text, control):
    assert passwords.has_control(text[: len(text) // 2] + control + text[len(text) // 2 :])


def test_an_over_long_password_on_the_set_password_page_is_a_clear_422(runtime, app, staff):
    from starlette.testclient import TestClient

    runtime.accounts.create_user(
        staff["admin"].actor, username="jane.doe", roles=["practitioner"], agency="Eastfield",
        agency_kind="education", display_name="Jane Doe", email="jane@example.org",
    )  # fmt: skip
    with TestClient(app, base_url="http://testserver") as browser:
        r = set_password_page(browser, password_link(runtime, "jane.doe"), "p" * 5000)
        assert r.status_code == 422 and "must be at most 256 characters" in r.text
        token = browser.post(
            "/api/auth/token", data={"username": "jane.doe", "password": "p" * 5000}
        )
        assert token.status_code == 401, token.text


def test_an_over_long_password_on_the_command_line_is_an_error_not_a_traceback(cli, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("p" * 5000 + "\n"))
    r = cli("users", "add", "longpw", "--role", "practitioner", "--password-stdin")
    assert r.returncode != 0
    assert "at most 256 characters" in r.stderr and "Traceback" not in r.stderr
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery staple\n"))
    r = cli("users", "add", "crlf", "--role", "practitioner", "--display-name", "Jo\r\nBcc: x",
            "--password-stdin")  # fmt: skip
    assert r.returncode != 0 and "display_name" in r.stderr and "control characters" in r.stderr


@pytest.mark.parametrize(
    ("field", "value"),
    [("display_name", "Jane\r\nBcc: all@example.org"), ("agency", "Eastfield\nPrimary"),
     ("email", "jane@example.org\r\nBcc: all@example.org"), ("display_name", "Jane\x00Doe")],
)  # fmt: skip
def test_control_characters_are_refused_in_names_agencies_and_emails(runtime, staff, field, value):
    fields = dict(
        username="jane.doe", roles=["practitioner"], agency="Eastfield",
        agency_kind="education", display_name="Jane Doe", email="jane@example.org",
    )  # fmt: skip
    fields[field] = value
    with pytest.raises(InvalidData) as exc:
        runtime.accounts.create_user(staff["admin"].actor, **fields)
    assert [e.field for e in exc.value.errors] == [field]
    with pytest.raises(InvalidData) as exc:
        runtime.accounts.set_agency(
            staff["admin"].actor, staff["teacher"].user_id, "A\r\nB", "education"
        )
    assert [e.field for e in exc.value.errors] == ["agency"]


@pytest.fixture
def settings(db_url, mailbox):
    return make_settings(
        db_url, smtp_host="127.0.0.1", smtp_port=mailbox.port, smtp_starttls=False,
        smtp_from="Referral Engine <noreply@council.example>",
    )  # fmt: skip


def test_the_sender_marks_a_row_it_cannot_send_failed_and_goes_on(runtime, staff, mailbox):
    """A display name with a line break, stored before names were checked, cannot go in a
    To: header. Before: the claim transaction rolled back on it, every run, and nothing
    behind it was ever sent. Now: that row is failed with its reason, the rest are sent."""
    bad, good = staff["teacher"].user_id, staff["officer"].user_id
    with runtime.db.transaction() as s:
        s.execute(
            sa.update(User)
            .where(User.id == bad)
            .values(display_name="Bad\r\nBcc: all@example.org", email="bad@example.org")
        )
        s.execute(sa.update(User).where(User.id == good).values(email="officer@example.org"))
        for n, uid in enumerate((bad, good)):
            s.add(
                Outbox(kind="case_assigned", recipient_user_id=uid, dedupe_key=f"t{n}", payload={})
            )
    got = runtime.sender.deliver()
    assert (got.sent, got.failed) == (1, 1)
    with runtime.db.reading() as s:
        rows = {r.recipient_user_id: r for r in s.execute(sa.select(Outbox)).scalars()}
    assert rows[bad].status == "failed" and "linefeed or carriage return" in rows[bad].last_error
    assert rows[good].status == "sent"
    assert [m["To"] for m in mailbox.messages] == ["Officer <officer@example.org>"]
    again = runtime.sender.deliver()  # later runs neither fail nor resend
    assert (again.sent, again.failed) == (0, 0)
