"""Running the product: the scheduler (`tick`), retention, subject access, demo data."""

from referral_engine.ops.retention import Retention, load_retention
from referral_engine.ops.sar import SubjectAccess
from referral_engine.ops.scheduler import Scheduler, TickResult

__all__ = ["Retention", "Scheduler", "SubjectAccess", "TickResult", "load_retention"]
