"""What one outbox row says to its recipient: subject, text and HTML bodies, a link.

Need-to-know is decided here, once, for email and in-app alike. A referrer is told the
reference and the outcome and nothing else: not the reasoning, not what other agencies
said, not the subject's details. Staff notices name the case by number and pathway and
link to it; the case page then applies the usual access rules. Subject lines are fixed
text per kind and never carry data from the row, so no personal data can reach a mail
server's logs or a lock screen through them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlmodel import Session

from referral_engine.clock import LONDON
from referral_engine.policies.policy import Policy
from referral_engine.storage.models import (
    Case,
    Outbox,
    Referral,
    User,
)

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent / "templates"

# kind -> (subject, template). Subjects are constants on purpose (see the module doc).
KINDS: dict[str, tuple[str, str]] = {
    "referral_received": ("Your referral has been received", "referral_received"),
    "referral_outcome": ("An outcome has been recorded for your referral", "referral_outcome"),
    "deadline_near": ("A case deadline is due soon", "deadline"),
    "deadline_breached": ("A case deadline has been missed", "deadline"),
    "deadline_reminder": ("A case review or reminder is due", "deadline"),
    "case_assigned": ("A case has been assigned to you", "case_assigned"),
    "case_allocated": ("A case has been allocated to you", "case_assigned"),
    "marac_listed": ("A case has been listed at MARAC", "marac_listed"),
    "marac_referral": ("A new MARAC referral is waiting for you", "marac_referral"),
    "marac_action": ("Your agency owns a new MARAC action", "marac_action"),
    "password_link": ("Set your Referral Engine password", "password_link"),
}
GENERIC = ("A case needs your attention", "generic")


@dataclass(frozen=True)
class Notice:
    subject: str
    text: str
    html: str
    link: str


def _when(value: str | datetime | None, fmt: str = "%-d %B %Y, %H:%M") -> str:
    if not value:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(LONDON).strftime(fmt)


def _day(value: str | None) -> str:
    return date.fromisoformat(value[:10]).strftime("%-d %B %Y") if value else ""


def _label(value: str | None) -> str:
    return (value or "").replace("_", " ").capitalize()


class Renderer:
    def __init__(self, policy: Policy, pathway_labels: dict[str, str], base_url: str):
        self.policy = policy
        self.pathway_labels = pathway_labels
        self.base_url = base_url.rstrip("/")
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.env.filters.update(when=_when, day=_day, label=_label)

    @staticmethod
    def subject_for(kind: str) -> str:
        return KINDS.get(kind, GENERIC)[0]

    def context(self, s: Session, row: Outbox) -> dict[str, Any]:
        """Only what the kind's recipient may know; templates see nothing else."""
        user = s.get(User, row.recipient_user_id) if row.recipient_user_id else None
        p = row.payload or {}
        ctx: dict[str, Any] = {
            "kind": row.kind,
            "name": user.display_name if user else "",
            "link": self.base_url + "/",
        }
        if row.kind in ("referral_received", "referral_outcome"):
            referral = s.get(Referral, row.referral_id) if row.referral_id else None
            ctx["reference"] = referral.reference if referral else p.get("reference", "")
            if row.referral_id:
                ctx["link"] = f"{self.base_url}/referrals/{row.referral_id}"
            if row.kind == "referral_outcome":
                outcome = p.get("outcome") or ""
                labels = self.policy.reference.mash_outcomes
                ctx["outcome"] = labels.get(outcome) or _label(outcome)
            return ctx
        if row.kind == "password_link":
            # The one-time link to set one's own password (accounts/links.py); it goes to
            # the account's own address and nowhere else.
            ctx["link"] = f"{self.base_url}/account/password?token={p.get('secret', '')}"
            ctx["purpose"] = p.get("purpose", "new")
            return ctx
        case = s.get(Case, row.case_id) if row.case_id else None
        ctx.update(
            case_id=row.case_id,
            pathway=self.pathway_labels.get(case.pathway, case.pathway) if case else "",
            link=f"{self.base_url}/cases/{row.case_id}" if row.case_id else ctx["link"],
            deadline=p.get("label") or _label(p.get("deadline")),
            due_at=p.get("due_at"),
            meeting_date=(case.attributes or {}).get("meeting_date") if case else None,
            action_id=p.get("action_id"),
            action=p.get("description"),
            action_due=p.get("due"),
            owner=self.policy.reference.agency_kinds.get(p.get("owner_agency") or "", ""),
        )
        return ctx

    def render(self, s: Session, row: Outbox, *, in_app: bool = False) -> Notice:
        """`in_app`: the text without the letter's greeting and footer."""
        subject, name = KINDS.get(row.kind, GENERIC)
        try:
            ctx = self.context(s, row) | {"in_app": in_app}
            text = self.env.get_template(f"{name}.txt").render(ctx)
            html = self.env.get_template(f"{name}.html").render(ctx, subject=subject)
        except Exception:
            # A row the templates cannot render (an unexpected payload) still tells its
            # recipient something, and never blocks the rows queued behind it.
            log.exception("notification %s (%s) fell back to the generic text", row.id, row.kind)
            subject, link = (
                GENERIC[0],
                self.base_url + (f"/cases/{row.case_id}" if row.case_id else "/"),
            )
            ctx = {
                "kind": row.kind,
                "name": "",
                "link": link,
                "case_id": row.case_id,
                "pathway": "",
                "in_app": in_app,
            }
            text = self.env.get_template("generic.txt").render(ctx)
            html = self.env.get_template("generic.html").render(ctx, subject=subject)
        return Notice(subject=subject, text=text.strip() + "\n", html=html, link=ctx["link"])
