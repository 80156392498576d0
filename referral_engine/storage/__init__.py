"""Storage: database engines and transactions (SQLite and PostgreSQL), tables, migrations."""

from referral_engine.storage.db import Database, Statement, as_connection, orm_session
from referral_engine.storage.migrate import Upgrade, upgrade

__all__ = ["Database", "Statement", "Upgrade", "as_connection", "orm_session", "upgrade"]
