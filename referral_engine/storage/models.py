"""The tables. Alembic migrations in alembic/ create them; these classes describe them.

Case state is written only by the engine (`engine/`); audit tables only by `audit/`, and the
database refuses UPDATE and DELETE on those (triggers in the first migration).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from referral_engine.storage.columns import JSONDoc, UTCDateTime, utcnow


def _ts(**kw: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kw)


def _json(**kw: Any) -> Any:
    return Field(sa_type=JSONDoc, **kw)


class Agency(SQLModel, table=True):
    __tablename__ = "agency"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    kind: str = Field(max_length=40)
    # Who receives what this agency owns (a MARAC action, a listing); see notifications.
    contact_user_id: int | None = None


class User(SQLModel, table=True):
    __tablename__ = "app_user"
    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=100, unique=True)
    display_name: str = Field(max_length=200)
    email: str | None = Field(default=None, max_length=320)
    password_hash: str = Field(max_length=500)
    agency_id: int | None = Field(default=None, foreign_key="agency.id")
    disabled: bool = False
    created_at: datetime = _ts(default_factory=utcnow)
    # Carried in every token; raising it (password reset, disabling) ends every session.
    session_generation: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class UserRole(SQLModel, table=True):
    __tablename__ = "user_role"
    user_id: int = Field(foreign_key="app_user.id", primary_key=True)
    role: str = Field(max_length=60, primary_key=True)


class LoginFailure(SQLModel, table=True):
    __tablename__ = "login_failure"
    __table_args__ = (sa.Index("ix_login_failure_username_at", "username", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=100)
    at: datetime = _ts(default_factory=utcnow)


class RevokedToken(SQLModel, table=True):
    __tablename__ = "revoked_token"
    jti: str = Field(primary_key=True, max_length=64)
    expires_at: datetime = _ts()


class RoleRequest(SQLModel, table=True):
    """A role that reads case content, asked for by an administrator and waiting for a
    second person (a holder of `access:grant:approve`, never the one who asked) to approve
    or refuse it. The user holds the role only once it is approved."""

    __tablename__ = "role_request"
    __table_args__ = (sa.Index("ix_role_request_open", "decided_at", "user_id"),)
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id")
    role: str = Field(max_length=60)
    requested_by_id: int = Field(foreign_key="app_user.id")
    requested_at: datetime = _ts(default_factory=utcnow)
    decided_by_id: int | None = None
    decided_at: datetime | None = _ts(default=None)
    # "approved" | "refused" | "withdrawn" (superseded by another change of roles)
    outcome: str | None = Field(default=None, max_length=20)


class PasswordLink(SQLModel, table=True):
    """A one-time link for a user to set their own password (a new account or a reset).
    Only the SHA-256 of its secret is kept; it works once, until `expires_at`."""

    __tablename__ = "password_link"
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    secret_hash: str = Field(max_length=64, unique=True)
    purpose: str = Field(max_length=20)  # "new" | "reset"
    created_at: datetime = _ts(default_factory=utcnow)
    expires_at: datetime = _ts()
    used_at: datetime | None = _ts(default=None)


class AccessGrant(SQLModel, table=True):
    """A record opened with a reason ("break-glass"): time-boxed, and reviewed later by a
    supervisor of that pathway."""

    __tablename__ = "access_grant"
    __table_args__ = (
        sa.Index("ix_access_grant_user_expires", "user_id", "expires_at"),
        sa.Index("ix_access_grant_review", "reviewed_at", "granted_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id")
    case_id: int = Field(foreign_key="cases.id")
    pathway: str = Field(max_length=60)
    reason: str = Field(sa_type=sa.Text)
    granted_at: datetime = _ts(default_factory=utcnow)
    expires_at: datetime = _ts()
    reviewed_at: datetime | None = _ts(default=None)
    reviewed_by_id: int | None = None
    review_note: str | None = Field(default=None, sa_type=sa.Text)


class WorkflowVersion(SQLModel, table=True):
    """Each workflow definition a case has ever run on, kept so it can keep running."""

    __tablename__ = "workflow_version"
    version: str = Field(primary_key=True, max_length=64)
    pathway: str = Field(max_length=60, index=True)
    source: str = Field(sa_type=sa.Text)
    loaded_at: datetime = _ts(default_factory=utcnow)


class Person(SQLModel, table=True):
    __tablename__ = "person"
    __table_args__ = (
        sa.Index("ix_person_match", "date_of_birth", "family_phonetic"),
        sa.Index("ix_person_name", "family_key", "given_key"),
    )
    id: int | None = Field(default=None, primary_key=True)
    given_name: str | None = Field(default=None, max_length=200)
    family_name: str | None = Field(default=None, max_length=200)
    given_key: str | None = Field(default=None, max_length=200)
    family_key: str | None = Field(default=None, max_length=200)
    family_phonetic: str | None = Field(default=None, max_length=60)
    date_of_birth: date | None = None
    estimated_age: int | None = None
    gender: str | None = Field(default=None, max_length=60)
    created_at: datetime = _ts(default_factory=utcnow)
    # Set while this record is merged into another (undone by clearing it).
    merged_into_id: int | None = Field(default=None, index=True)


class PersonMerge(SQLModel, table=True):
    """A MASH manager's merge of two person records, kept so that it can be undone."""

    __tablename__ = "person_merge"
    id: int | None = Field(default=None, primary_key=True)
    from_person_id: int = Field(index=True)
    into_person_id: int = Field(index=True)
    reason: str = Field(sa_type=sa.Text)
    moved_cases: list = _json(default_factory=list)
    moved_referrals: list = _json(default_factory=list)
    merged_at: datetime = _ts(default_factory=utcnow)
    merged_by_id: int | None = None
    undone_at: datetime | None = _ts(default=None)
    undone_by_id: int | None = None


class Meeting(SQLModel, table=True):
    """A MARAC or Channel panel meeting, with room for a number of cases."""

    __tablename__ = "meeting"
    __table_args__ = (sa.Index("ix_meeting_pathway_date", "pathway", "date"),)
    id: int | None = Field(default=None, primary_key=True)
    pathway: str = Field(max_length=60)
    date: date
    capacity: int
    created_at: datetime = _ts(default_factory=utcnow)
    created_by_id: int | None = None


class MeetingCase(SQLModel, table=True):
    __tablename__ = "meeting_case"
    meeting_id: int = Field(foreign_key="meeting.id", primary_key=True)
    case_id: int = Field(foreign_key="cases.id", primary_key=True, index=True)
    listed_at: datetime = _ts(default_factory=utcnow)


class Referral(SQLModel, table=True):
    __tablename__ = "referral"
    __table_args__ = (
        sa.UniqueConstraint("referrer_id", "idempotency_key", name="uq_referral_idempotency"),
    )
    id: int | None = Field(default=None, primary_key=True)
    reference: str = Field(max_length=40, unique=True)
    # None for a referral the system makes (a child in a MARAC household).
    referrer_id: int | None = Field(default=None, foreign_key="app_user.id", index=True)
    agency_id: int | None = Field(default=None, foreign_key="agency.id")
    agency_kind: str | None = Field(default=None, max_length=40)
    pathway: str = Field(max_length=60)
    # None once a Duty to Notify record has been made anonymous.
    person_id: int | None = Field(default=None, foreign_key="person.id", index=True)
    case_id: int | None = Field(default=None, index=True)
    subject: dict = _json()
    concerns: list = _json()
    summary: str = Field(sa_type=sa.Text)
    immediate_danger: bool = False
    consent: str = Field(max_length=20)
    consent_reason: str | None = Field(default=None, sa_type=sa.Text)
    details: dict = _json(default_factory=dict)
    received_at: datetime = _ts(default_factory=utcnow, index=True)
    idempotency_key: str | None = Field(default=None, max_length=200)
    request_hash: str | None = Field(default=None, max_length=64)
    is_child: bool = False
    repeat_of_referral_id: int | None = None
    possible_matches: list = _json(default_factory=list)
    outcome: str | None = Field(default=None, max_length=60)
    outcome_at: datetime | None = _ts(default=None)
    feedback_to_referrer: str | None = Field(default=None, sa_type=sa.Text)


_NO_DUE = sa.text("(due_at IS NULL)")


class Case(SQLModel, table=True):
    __tablename__ = "cases"
    __table_args__ = (
        # The queue's order (priority, dated before undated, due time, id), so a page is
        # read in order from an index, never sorted from the whole table (0006).
        sa.Index("ix_cases_queue", "pathway", "state", "priority", _NO_DUE, "due_at", "id"),
        sa.Index("ix_cases_open_queue", "closed", "priority", _NO_DUE, "due_at", "id"),
        sa.Index("ix_cases_pathway_queue", "pathway", "closed", "priority", _NO_DUE, "due_at",
                 "id"),
    )  # fmt: skip
    id: int | None = Field(default=None, primary_key=True)
    pathway: str = Field(max_length=60)
    state: str = Field(max_length=60)
    version: int = 1
    workflow_version: str = Field(max_length=64)
    person_id: int | None = Field(default=None, foreign_key="person.id", index=True)
    referral_id: int | None = Field(default=None, foreign_key="referral.id")
    parent_case_id: int | None = Field(default=None, index=True)
    agency_id: int | None = Field(default=None)
    rag: str | None = Field(default=None, max_length=10)
    # 0 for red, 1 otherwise: the queue orders on it before the due time.
    priority: int = 1
    due_at: datetime | None = _ts(default=None)
    closed: bool = False
    assigned_to_id: int | None = Field(default=None, index=True)
    allocated_to_id: int | None = Field(default=None, index=True)
    attributes: dict = _json(default_factory=dict)
    opened_at: datetime = _ts(default_factory=utcnow)
    updated_at: datetime = _ts(default_factory=utcnow)
    closed_at: datetime | None = _ts(default=None)


class CaseHistory(SQLModel, table=True):
    __tablename__ = "case_history"
    __table_args__ = (sa.UniqueConstraint("case_id", "version", name="uq_history_case_version"),)
    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="cases.id")
    version: int
    event: str = Field(max_length=60)
    from_state: str | None = Field(default=None, max_length=60)
    to_state: str = Field(max_length=60)
    actor_id: int | None = None
    actor_name: str = Field(max_length=200)
    at: datetime = _ts(default_factory=utcnow)
    data: dict = _json(default_factory=dict)


class Deadline(SQLModel, table=True):
    __tablename__ = "deadline"
    __table_args__ = (sa.Index("ix_deadline_due", "status", "due_at"),)
    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="cases.id", index=True)
    name: str = Field(max_length=60)
    label: str = Field(max_length=200)
    due_at: datetime = _ts()
    set_at: datetime = _ts(default_factory=utcnow)
    # open -> met, or open -> breached -> met (late, with late_reason); timers
    # open -> fired; reminders open -> reminded; any open one -> cancelled when the case closes
    status: str = Field(default="open", max_length=20)
    on_due: str = Field(default="escalate", max_length=80)
    met_at: datetime | None = _ts(default=None)
    breached_at: datetime | None = _ts(default=None)
    # While the pathway clock is paused (waiting on a third party): since when.
    paused_at: datetime | None = _ts(default=None)
    late_reason: str | None = Field(default=None, sa_type=sa.Text)
    # When the "due soon" warning went out (policies/rules.yaml due_soon_hours).
    warned_at: datetime | None = _ts(default=None)


class Outbox(SQLModel, table=True):
    """Notifications waiting to be sent; written in the transaction that caused them."""

    __tablename__ = "outbox"
    __table_args__ = (
        sa.Index("ix_outbox_status", "status", "next_attempt_at"),
        sa.Index("ix_outbox_inbox", "recipient_user_id", "read_at", "id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = _ts(default_factory=utcnow)
    kind: str = Field(max_length=60)
    recipient_user_id: int | None = Field(default=None, index=True)
    case_id: int | None = None
    referral_id: int | None = None
    payload: dict = _json(default_factory=dict)
    # One notification per reason: a re-run of `tick` cannot notify twice.
    dedupe_key: str = Field(max_length=200, unique=True)
    # Email delivery: pending -> sending (claimed; `next_attempt_at` is then the lease's
    # end) -> sent | failed | skipped (no address). In-app state is `read_at` alone.
    # `next_attempt_at` None: send as soon as possible.
    status: str = Field(default="pending", max_length=20)
    claimed_by: str | None = Field(default=None, max_length=64)
    attempts: int = 0
    next_attempt_at: datetime | None = _ts(default=None)
    sent_at: datetime | None = _ts(default=None)
    read_at: datetime | None = _ts(default=None)
    last_error: str | None = Field(default=None, sa_type=sa.Text)


class AuditEvent(SQLModel, table=True):
    """One audited access decision. `body` is the canonical JSON, exactly as hashed."""

    __tablename__ = "audit_event"
    __table_args__ = (sa.Index("ix_audit_actor_at", "actor_id", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(index=True)
    actor_id: int | None = None
    action: str = Field(max_length=100)
    outcome: str = Field(max_length=10)
    case_id: int | None = Field(default=None, index=True)
    person_id: int | None = Field(default=None, index=True)
    body: bytes = Field(sa_type=sa.LargeBinary)


class AuditPending(SQLModel, table=True):
    """Audit rows written but not yet linked into the chain (the sequencer's queue)."""

    __tablename__ = "audit_pending"
    audit_id: int = Field(primary_key=True)


class AuditChain(SQLModel, table=True):
    __tablename__ = "audit_chain"
    seq: int = Field(primary_key=True)
    audit_id: int = Field(unique=True)
    prev_hash: bytes = Field(sa_type=sa.LargeBinary)
    hash: bytes = Field(sa_type=sa.LargeBinary)
    # On the last link of each sequencer batch: HMAC under the audit key (chainproof.link_mac).
    mac: bytes | None = Field(default=None, sa_type=sa.LargeBinary)


class AuditCheckpoint(SQLModel, table=True):
    __tablename__ = "audit_checkpoint"
    seq: int = Field(primary_key=True)
    # The position by which the next checkpoint must exist (covered by the MAC).
    next_seq: int
    hash: bytes = Field(sa_type=sa.LargeBinary)
    mac: bytes = Field(sa_type=sa.LargeBinary)
    at: datetime = _ts(default_factory=utcnow)


AUDIT_TABLES = ("audit_event", "audit_chain", "audit_checkpoint")


class LegalHold(SQLModel, table=True):
    """A case whose personal data must outlive its retention period (litigation, an
    inquiry, a serious case review): `retention apply` erases nothing of it while a hold
    is in force. Released holds are kept, so who held what, and why, stays on record."""

    __tablename__ = "legal_hold"
    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="cases.id", index=True)
    reason: str = Field(sa_type=sa.Text)
    placed_at: datetime = _ts(default_factory=utcnow)
    placed_by: str = Field(max_length=200)
    released_at: datetime | None = _ts(default=None)
    released_by: str | None = Field(default=None, max_length=200)
    release_reason: str | None = Field(default=None, sa_type=sa.Text)


class Erasure(SQLModel, table=True):
    """The tombstone of a case whose personal data was erased at the end of its retention
    period: what was erased, when, by whom and under which rule. The case, its history and
    its audit rows stay (with the personal data gone), so the audit chain still verifies."""

    __tablename__ = "erasure"
    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="cases.id", unique=True)
    pathway: str = Field(max_length=60)
    closed_state: str = Field(max_length=60)
    closed_at: datetime | None = _ts(default=None)
    rule: str = Field(max_length=200)
    person_id: int | None = Field(default=None, index=True)
    person_erased: bool = False
    # "table.column" -> how many values were erased
    erased: dict = _json(default_factory=dict)
    erased_at: datetime = _ts(default_factory=utcnow)
    erased_by: str = Field(max_length=200)


class ExternalIdentity(SQLModel, table=True):
    """A user signed in through the identity provider, keyed on who the provider says
    they are (issuer + subject; on Entra, tenant + object id), never on an email."""

    __tablename__ = "external_identity"
    __table_args__ = (sa.UniqueConstraint("issuer", "subject", name="uq_external_identity"),)
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    issuer: str = Field(max_length=500)
    subject: str = Field(max_length=255)
    tenant: str | None = Field(default=None, max_length=100)
    created_at: datetime = _ts(default_factory=utcnow)
    last_sign_in_at: datetime | None = _ts(default=None)


class PendingSignIn(SQLModel, table=True):
    """A sign-in sent to the provider and not yet back: its state (hashed), the nonce and
    PKCE verifier it must come back with, and the browser it must come back to. Deleted
    when it comes back, so a callback or an ID token works once."""

    __tablename__ = "pending_sign_in"
    state_hash: str = Field(primary_key=True, max_length=64)
    browser_hash: str = Field(max_length=64)
    nonce: str = Field(max_length=128)
    code_verifier: str = Field(max_length=128)
    next_url: str = Field(max_length=500)
    expires_at: datetime = _ts(index=True)


class SecondFactor(SQLModel, table=True):
    """A user's TOTP key (sealed with the secret key), confirmed once they typed a code
    from it; the last time step used, so a code works once."""

    __tablename__ = "second_factor"
    user_id: int = Field(foreign_key="app_user.id", primary_key=True)
    sealed_key: str = Field(sa_type=sa.Text)
    confirmed_at: datetime | None = _ts(default=None)
    last_step: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class RecoveryCode(SQLModel, table=True):
    """A one-time code to sign in without the authenticator, stored hashed."""

    __tablename__ = "recovery_code"
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    code_hash: str = Field(max_length=64)
    used_at: datetime | None = _ts(default=None)


class ServiceAccount(SQLModel, table=True):
    """A partner system's API key: acts as its own user (role and agency), the key stored
    hashed and named by a public id, revocable."""

    __tablename__ = "service_account"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    user_id: int = Field(foreign_key="app_user.id", unique=True)
    key_id: str = Field(max_length=32, unique=True)
    key_hash: str = Field(max_length=64)
    created_at: datetime = _ts(default_factory=utcnow)
    revoked_at: datetime | None = _ts(default=None)
