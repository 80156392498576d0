"""What every command works with: the runtime built from settings, and the operator as an actor.

Its own module so that the everyday commands (main.py) and the operations commands (ops.py)
share it without importing each other.
"""

from __future__ import annotations

import getpass
import os

from referral_engine.access.rules import Actor


def cli_actor(runtime) -> Actor:
    who = getpass.getuser() if hasattr(os, "getuid") else "operator"
    return runtime.access.actor(
        user_id=None, username=f"cli:{who}", display_name=f"Command line ({who})",
        roles=[], source="cli",
    )  # fmt: skip


def build_runtime():
    from referral_engine.runtime import Runtime

    runtime = Runtime.build()
    runtime.engine.register_versions()
    return runtime
