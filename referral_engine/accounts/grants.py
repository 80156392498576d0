"""Which roles an administrator may grant alone, and which wait for a second person.

An administrator manages accounts and reads no case content (DOMAIN.md). If they could
give any account any role, they could give one they control `auditor` and read every
case. So a role is granted at once only when every permission it carries (following
`includes`) is on the short list below, none of which shows case content; any other role
(auditor, Prevent and Channel roles, MASH staff, the approver role itself) becomes a
pending `RoleRequest` that a holder of `access:grant:approve` approves or refuses, never
the person who asked and never for themselves. An allow-list rather than a deny-list: a
permission added to policies/ later needs approval until someone decides otherwise here.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from referral_engine.policies.policy import Policy

APPROVE = "access:grant:approve"

# Permissions that show no case content, so an administrator may grant roles made of them.
WITHOUT_CASE_CONTENT = (
    "workflow:definition:view",  # the pathway definitions (YAML), no cases
    "referral:referral:create",  # make a referral ...
    "*:referral:create",  # ... straight into a pathway
    "referral:own:view",  # the status and outcome of one's own referrals only
    "admin:user:manage",  # accounts and agencies
    "audit:chain:verify",  # whether the audit chain is intact, not its rows
)


def _within(grant: str, allowed: str) -> bool:
    """Whether a grant pattern (maybe holding "*") asks for no more than `allowed`."""
    have, limit = grant.split(":"), allowed.split(":")
    return len(have) == len(limit) and all(
        fnmatchcase(h, a) for h, a in zip(have, limit, strict=True)
    )


def needs_approval(policy: Policy, role: str) -> bool:
    """True if granting `role` needs a second person (see the module docstring)."""
    return any(
        not any(_within(g.permission, allowed) for allowed in WITHOUT_CASE_CONTENT)
        for g in policy.grants_for([role])
    )
