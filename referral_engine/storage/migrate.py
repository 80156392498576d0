"""Schema migrations (Alembic), run from the CLI: `referral-engine db upgrade`."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from referral_engine.settings import PROJECT_ROOT
from referral_engine.storage.db import normalise_url


def alembic_config(url: str) -> Config:
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)
