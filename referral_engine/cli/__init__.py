"""The `referral-engine` command line (DESIGN.md: the public interface)."""

from referral_engine.cli.main import main

__all__ = ["main"]
