"""The partnership's policies (policies/*.yaml): roles, deadlines, vocabularies, DASH."""

from referral_engine.policies.dash import DashPolicy
from referral_engine.policies.dash import assess as assess_dash
from referral_engine.policies.identity import IdentityPolicy, load_identity
from referral_engine.policies.policy import Grant, Policy, Sla, load_policy

__all__ = [
    "DashPolicy",
    "Grant",
    "IdentityPolicy",
    "Policy",
    "Sla",
    "assess_dash",
    "load_identity",
    "load_policy",
]
