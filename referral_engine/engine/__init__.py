"""The one path for change (`Engine.fire`) and the opening of cases (intake)."""

from referral_engine.engine.engine import Engine, Fired

__all__ = ["Engine", "Fired"]
