"""Email over SMTP with the standard library (smtplib and email: maintained with Python).

One connection per batch of messages. Each message carries a Message-ID derived from its
outbox row, so if a worker dies between the server accepting a message and the row being
marked sent, the retry carries the same Message-ID and a receiving system can drop it.
"""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formataddr, parseaddr

from referral_engine.notifications.render import Notice
from referral_engine.settings import Settings


class PermanentFailure(Exception):
    """The server refused this message or its recipient for good: retrying cannot help."""


def message_id(row_id: int, dedupe_key: str, sender: str) -> str:
    domain = parseaddr(sender)[1].rpartition("@")[2] or "referral-engine.invalid"
    digest = hashlib.sha256(dedupe_key.encode()).hexdigest()[:16]
    return f"<outbox.{row_id}.{digest}@{domain}>"


def build(notice: Notice, *, to: str, to_name: str, sender: str, msg_id: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = notice.subject
    msg["From"] = sender
    msg["To"] = formataddr((to_name, to))
    msg["Message-ID"] = msg_id
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(notice.text)
    msg.add_alternative(notice.html, subtype="html")
    return msg


class Mailer:
    """Opens an SMTP session as configured (STARTTLS and sign-in when set)."""

    def __init__(self, settings: Settings):
        self.settings = settings

    @property
    def configured(self) -> bool:
        return bool(self.settings.smtp_host)

    def open(self) -> smtplib.SMTP:
        st = self.settings
        smtp = smtplib.SMTP(st.smtp_host or "", st.smtp_port, timeout=st.smtp_timeout_seconds)
        try:
            smtp.ehlo()
            if st.smtp_starttls:
                # Certificate and host name are verified: a relay that cannot prove
                # who it is never receives a message.
                ca = str(st.smtp_ca_file) if st.smtp_ca_file else None
                smtp.starttls(context=ssl.create_default_context(cafile=ca))
                smtp.ehlo()
            if st.smtp_user:
                smtp.login(st.smtp_user, st.smtp_password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    @staticmethod
    def send(smtp: smtplib.SMTP, msg: EmailMessage) -> None:
        try:
            smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if all(code >= 500 for code in codes):
                raise PermanentFailure(f"recipient refused: {exc.recipients}") from exc
            raise
        except smtplib.SMTPDataError as exc:
            # The message itself refused for good (e.g. as spam). A 5xx refusing the
            # sender (530 sign-in or TLS needed) is a set-up fault: retried until fixed.
            if exc.smtp_code >= 500:
                raise PermanentFailure(f"{exc.smtp_code} {exc.smtp_error!r}") from exc
            raise
