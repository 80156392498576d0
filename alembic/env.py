"""Alembic environment: one schema for SQLite and PostgreSQL, from referral_engine.storage.models."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from referral_engine.settings import get_settings
from referral_engine.storage.db import make_engine, normalise_url

config = context.config
target_metadata = SQLModel.metadata


def url() -> str:
    return normalise_url(config.get_main_option("sqlalchemy.url") or get_settings().database_url)


def run_offline() -> None:
    context.configure(url=url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(url())
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
