"""Working cases: reading them (one case, its history, the queue), meetings, break-glass."""

from referral_engine.casework.breakglass import BreakGlass
from referral_engine.casework.cases import Cases, read_case
from referral_engine.casework.meetings import Meetings

__all__ = ["BreakGlass", "Cases", "Meetings", "read_case"]
