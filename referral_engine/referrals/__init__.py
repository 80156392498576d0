"""Receiving a referral: validated, matched, opened on its pathway."""

from referral_engine.referrals.receive import ReferralIn, Referrals

__all__ = ["ReferralIn", "Referrals"]
