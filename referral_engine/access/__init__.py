"""Who may do what, and see which cases: actors, permissions, need-to-know.

Code asks for a permission (`access.can(actor, "mash:case:decide", case)`), never for a role.
"""

from referral_engine.access.rules import SYSTEM, Access, Actor

__all__ = ["SYSTEM", "Access", "Actor"]
