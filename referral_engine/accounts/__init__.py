"""Accounts: users, sign-in with lockout, passwords, and the tokens that carry a session."""

from referral_engine.accounts.tokens import Claims
from referral_engine.accounts.tokens import read as read_token
from referral_engine.accounts.users import Accounts

__all__ = ["Accounts", "Claims", "read_token"]
