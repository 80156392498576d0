"""Schema migrations (Alembic), run from the CLI: `referral-engine db upgrade`.

`upgrade` reports what it did (the revision before, the one after, the migrations
applied), so the command can tell an operator whether an empty database was set up, an
old one brought forward, or nothing needed doing.
"""

from __future__ import annotations

from dataclasses import dataclass

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from referral_engine.settings import PROJECT_ROOT
from referral_engine.storage.db import make_engine, normalise_url


@dataclass(frozen=True)
class Upgrade:
    """What one `upgrade` did: `before` is None for a database with no schema yet."""

    before: str | None
    after: str | None
    applied: tuple[str, ...]  # each migration's revision and title, oldest first

    @property
    def changed(self) -> bool:
        return bool(self.applied)

    def describe(self) -> str:
        """One or more lines for a person at a terminal."""
        if not self.applied:
            return f"database is already up to date (revision {self.after}); nothing to do"
        start = "an empty database" if self.before is None else f"revision {self.before}"
        count = len(self.applied)
        lines = [
            f"upgraded {start} to revision {self.after}: "
            f"{count} migration{'s' if count != 1 else ''} applied"
        ]
        lines += [f"  {item}" for item in self.applied]
        lines.append("database is up to date")
        return "\n".join(lines)


def alembic_config(url: str) -> Config:
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def current_revision(url: str) -> str | None:
    """The database's schema revision, or None when it has none (an empty database)."""
    engine = make_engine(url)  # as the migrations do: a new SQLite file's folder is made
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> Upgrade:
    cfg = alembic_config(url)
    script = ScriptDirectory.from_config(cfg)
    before = current_revision(url)
    command.upgrade(cfg, revision)
    after = current_revision(url)
    steps = [] if before == after else list(script.iterate_revisions(after, before))
    applied = tuple(f"{s.revision} {s.doc}" for s in reversed(steps))
    return Upgrade(before=before, after=after, applied=applied)
