"""Everything the product needs, built once from settings: used by the CLI and the web app."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta

from referral_engine.access.rules import Access
from referral_engine.accounts.users import Accounts
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
from referral_engine.policies.policy import Policy, load_policy
from referral_engine.referrals.receive import Referrals
from referral_engine.reports.exports import Exports
from referral_engine.reports.kpis import Reports
from referral_engine.settings import Settings, get_settings
from referral_engine.storage.db import Database

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
    _stop: threading.Event = field(default_factory=threading.Event)
    _sequencer: threading.Thread | None = None
    _deliverer: threading.Thread | None = None

    @classmethod
    def build(cls, settings: Settings | None = None, clock: Clock | None = None) -> Runtime:
        settings = settings or get_settings()
        clock = clock or Clock()
        policy = load_policy(settings.policies_dir)
        workflows = Workflows(settings.workflows_dir, policy)
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
        reports = Reports(db, access, policy, audit, engine.refused)
        cases = Cases(db, engine, access, policy, clock, audit)
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
            meetings=Meetings(db, access, workflows, clock, audit, engine.refused),
            merges=Merges(db, access, clock, audit, engine.refused),
            sender=Sender(db, clock, settings, renderer),
            inbox=Inbox(db, clock, audit, renderer),
            exports=Exports(db, access, policy, clock, audit, reports, cases, engine.refused),
            break_glass=BreakGlass(db, access, policy, clock, audit, engine.refused),
            retention=Retention(
                db,
                workflows,
                policy,
                load_retention(settings.policies_dir, workflows),
                clock,
                audit,
            ),
        )

    def start(self) -> None:
        """Register workflow versions; on PostgreSQL, start the audit sequencer. A runtime
        stopped and started again sequences again (tests share one runtime between
        several servers, each starting and stopping it)."""
        self.engine.register_versions()
        self._stop.clear()
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
        if not self.audit.link_inline:
            self.audit.run_sequencer(self.db.engine)

    def _sequence_forever(self) -> None:
        interval = self.settings.audit_seal_interval_seconds
        while not self._stop.wait(interval):
            try:
                self.audit.run_sequencer(self.db.engine)
            except Exception:  # keep sequencing after a transient database error
                log.exception("audit sequencer pass failed")

    def verify_audit(self, *, deep: bool = False, progress=None) -> Verification:
        """Seal what is pending, then check the whole chain and its checkpoints."""
        self.audit.seal(self.db.engine)
        return verify(
            self.db.engine,
            self.audit.key,
            self.audit.checkpoint_every,
            deep=deep,
            progress=progress,
        )
