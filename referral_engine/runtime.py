"""Everything the product needs, built once from settings: used by the CLI and the web app."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta

from referral_engine.access.rules import Access
from referral_engine.accounts.federated import FederatedSignIn
from referral_engine.accounts.oidc import Provider, ProviderConfig
from referral_engine.accounts.second_factor import SecondFactors
from referral_engine.accounts.service_accounts import ServiceAccounts
from referral_engine.accounts.users import Accounts
from referral_engine.audit.heads import Head, append_head
from referral_engine.audit.log import AuditLog, Verification, verify
from referral_engine.casework.breakglass import BreakGlass
from referral_engine.casework.cases import Cases
from referral_engine.casework.meetings import Meetings
from referral_engine.clock import Clock
from referral_engine.engine.engine import Engine
from referral_engine.notifications import Outbox
from referral_engine.notifications.delivery import Sender
from referral_engine.notifications.inbox import Inbox
from referral_engine.notifications.render import Renderer
from referral_engine.ops.retention import Retention, load_retention
from referral_engine.ops.scheduler import Scheduler
from referral_engine.pathways.definitions import Workflows
from referral_engine.people.merges import Merges
from referral_engine.policies.identity import load_identity
from referral_engine.policies.policy import Policy, load_policy
from referral_engine.referrals.receive import Referrals
from referral_engine.reports.exports import Exports
from referral_engine.reports.kpis import Reports
from referral_engine.reports.measures import load_measures
from referral_engine.settings import Settings, get_settings
from referral_engine.storage.db import Database
from referral_engine.store.changes import CaseStore

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    policy: Policy
    workflows: Workflows
    access: Access
    clock: Clock
    audit: AuditLog
    outbox: Outbox
    engine: Engine
    accounts: Accounts
    referrals: Referrals
    cases: Cases
    scheduler: Scheduler
    reports: Reports
    meetings: Meetings
    merges: Merges
    sender: Sender
    inbox: Inbox
    exports: Exports
    break_glass: BreakGlass
    retention: Retention | None = None
    # Sign-in through the identity provider (accounts/federated.py); off without an issuer.
    federated: FederatedSignIn | None = None
    # TOTP for the roles that see the most, on password sign-in (accounts/second_factor.py).
    second_factors: SecondFactors | None = None
    # Partner systems' API keys (accounts/service_accounts.py).
    service_accounts: ServiceAccounts | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _sequencer: threading.Thread | None = None
    _deliverer: threading.Thread | None = None
    _header: threading.Thread | None = None
    _kept: tuple[int, int] | None = None  # the chain position of the last head kept

    @classmethod
    def build(cls, settings: Settings | None = None, clock: Clock | None = None) -> Runtime:
        settings = settings or get_settings()
        clock = clock or Clock()
        policy = load_policy(settings.policies_dir)
        workflows = Workflows(settings.workflows_dir, policy)
        # Every definition is loaded and checked before any database is touched: a bad
        # file stops start-up naming its line, and leaves no database file behind.
        retention_policy = load_retention(settings.policies_dir, workflows)
        measures = load_measures(
            settings.policies_dir, workflows, {"mash", *policy.reference.onward_pathways}
        )
        identity = load_identity(settings.policies_dir, policy)
        db = Database(settings.database_url)
        access = Access(policy, workflows.pathways)
        audit = AuditLog(
            settings.effective_audit_key(),
            policy.rules.audit.checkpoint_every,
            link_inline=db.is_sqlite,
            clock=clock,
        )
        outbox = Outbox()
        engine = Engine(db, workflows, access, policy, clock, audit, outbox)
        accounts = Accounts(
            db, access, policy, clock, audit,
            secret=settings.effective_secret_key(), hasher=settings.password_hasher,
            token_ttl=timedelta(minutes=settings.token_ttl_minutes),
            link_ttl=timedelta(hours=settings.password_link_hours),
            max_session=timedelta(hours=settings.session_max_hours),
        )  # fmt: skip
        renderer = Renderer(
            policy, {p: w.definition.label for p, w in workflows.current.items()},
            settings.base_url,
        )  # fmt: skip
        reports = Reports(
            db, access, policy, audit, engine.operations,
            measures,
        )  # fmt: skip
        provider = None
        if settings.oidc_enabled:
            provider = Provider(
                ProviderConfig(
                    issuer=settings.oidc_issuer,  # type: ignore[arg-type]
                    client_id=settings.oidc_client_id or "",
                    client_secret=settings.oidc_client_secret,
                    scopes=settings.oidc_scopes,
                    timeout=settings.oidc_timeout_seconds,
                )
            )
        federated = FederatedSignIn(db, access, audit, clock, accounts, identity, provider)
        second_factors = SecondFactors(
            db, access, audit, clock, accounts, identity.second_factor_roles,
            secret=settings.effective_secret_key(), enabled=settings.second_factor,
        )  # fmt: skip
        cases = Cases(db, engine, access, policy, clock, audit)
        service_accounts = ServiceAccounts(db, access, audit, clock, accounts)
        accounts.api_keys = service_accounts
        return cls(
            settings=settings,
            db=db,
            policy=policy,
            workflows=workflows,
            access=access,
            clock=clock,
            audit=audit,
            outbox=outbox,
            engine=engine,
            accounts=accounts,
            referrals=Referrals(db, engine, access, policy, clock, audit, outbox),
            cases=cases,
            scheduler=Scheduler(db, engine, policy, clock, audit, outbox),
            reports=reports,
            meetings=Meetings(db, access, workflows, clock, audit, engine.operations),
            merges=Merges(db, access, clock, audit, CaseStore(audit), engine.operations),
            sender=Sender(db, clock, settings, renderer),
            inbox=Inbox(db, clock, audit, renderer),
            exports=Exports(db, access, policy, clock, audit, reports, cases, engine.operations),
            break_glass=BreakGlass(db, access, policy, clock, audit, engine.operations),
            retention=Retention(
                db,
                workflows,
                policy,
                retention_policy,
                clock,
                audit,
            ),
            federated=federated,
            second_factors=second_factors,
            service_accounts=service_accounts,
        )

    def start(self) -> None:
        """Register workflow versions; on PostgreSQL, start the audit sequencer. A runtime
        stopped and started again sequences again (tests share one runtime between
        several servers, each starting and stopping it)."""
        self.engine.register_versions()
        self._stop.clear()
        self.keep_head(force=True)  # the first start seals the install's chain
        if self.settings.audit_head_interval_seconds > 0 and self._header is None:
            self._header = threading.Thread(
                target=self._keep_heads_forever, name="audit-heads", daemon=True
            )
            self._header.start()
        if not self.audit.link_inline and self._sequencer is None:
            self._sequencer = threading.Thread(
                target=self._sequence_forever, name="audit-sequencer", daemon=True
            )
            self._sequencer.start()

    def start_delivery(self) -> None:
        """Drain the outbox by email in the background (`serve`; `tick` does it once)."""
        if self._deliverer is None and self.sender.mailer.configured:
            self._deliverer = threading.Thread(
                target=self._deliver_forever, name="outbox-sender", daemon=True
            )
            self._deliverer.start()

    def _deliver_forever(self) -> None:
        while not self._stop.wait(self.settings.notify_interval_seconds):
            try:
                self.sender.deliver()
            except Exception:  # keep delivering after a transient database error
                log.exception("outbox delivery pass failed")

    def stop(self) -> None:
        self._stop.set()
        if self._deliverer is not None:
            self._deliverer.join(timeout=self.settings.smtp_timeout_seconds + 5)
            self._deliverer = None
        if self._sequencer is not None:
            self._sequencer.join(timeout=5)
            self._sequencer = None
        if self._header is not None:
            self._header.join(timeout=5)
            self._header = None
        self.keep_head()  # shutdown seals what the last requests wrote

    def keep_head(self, *, force: bool = False) -> Head | None:
        """Seal the chain and append its signed head to the head log, if it moved since
        the last head this runtime kept (`force`: even if not). Returns the head kept."""
        position = self.audit.position(self.db.engine)
        if not force and position == self._kept:
            return None
        head = self.audit.signed_head(self.db.engine)
        self._kept = self.audit.position(self.db.engine)
        if self.settings.audit_head_log is not None:
            append_head(self.settings.audit_head_log, head)
        return head

    def _keep_heads_forever(self) -> None:
        while not self._stop.wait(self.settings.audit_head_interval_seconds):
            try:
                self.keep_head()
            except Exception:  # keep sealing after a transient database or disk error
                log.exception("audit head pass failed")

    def _sequence_forever(self) -> None:
        interval = self.settings.audit_seal_interval_seconds
        while not self._stop.wait(interval):
            try:
                self.audit.run_sequencer(self.db.engine)
            except Exception:  # keep sequencing after a transient database error
                log.exception("audit sequencer pass failed")

    def verify_audit(
        self, *, deep: bool = False, progress=None, head: Head | None = None
    ) -> Verification:
        """Seal what is pending, then check the whole chain and its checkpoints (and,
        given a kept head, that the chain reaches it and agrees with it)."""
        self.audit.seal(self.db.engine)
        return verify(
            self.db.engine,
            self.audit.key,
            self.audit.checkpoint_every,
            deep=deep,
            progress=progress,
            head=head,
        )
