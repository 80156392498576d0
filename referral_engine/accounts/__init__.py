"""Accounts: users, sign-in (passwords with lockout, or the identity provider), and the
tokens that carry a session."""

from referral_engine.accounts.oidc import SignInRefused
from referral_engine.accounts.second_factor import SecondFactorNeeded, format_key
from referral_engine.accounts.tokens import Claims
from referral_engine.accounts.tokens import read as read_token
from referral_engine.accounts.users import Accounts

__all__ = [
    "Accounts",
    "Claims",
    "SecondFactorNeeded",
    "SignInRefused",
    "format_key",
    "read_token",
]
