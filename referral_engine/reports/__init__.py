"""The partnership's measures and the exports built on the same reads."""

from referral_engine.reports.exports import Export, Exports
from referral_engine.reports.kpis import Reports

__all__ = ["Export", "Exports", "Reports"]
