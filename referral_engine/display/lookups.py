"""The names behind ids a record stores: a username's name, a meeting's date.

A history entry keeps `user: idva` and `meeting_id: 1`, as the engine needs them; a
person reads "Morgan Blake (IDVA)" and "MARAC meeting on 3 December 2026". Neither is
case content (a user's name is on every page they sign; a meeting's date is on the
meetings page), so these reads are not the restricted case query's. Each `Names` is
meant for one request or one export, and remembers what it has looked up.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from referral_engine.display.dates import day_text
from referral_engine.storage.db import Database
from referral_engine.storage.models import Agency, Meeting, User


class Names:
    def __init__(self, db: Database, pathway_labels: dict[str, str] | None = None):
        self.db = db
        self.pathway_labels = pathway_labels or {}
        self._users: dict[str, str | None] = {}
        self._meetings: dict[int, str | None] = {}

    def user(self, username: str) -> str | None:
        if username not in self._users:
            with self.db.reading() as s:
                self._users[username] = s.execute(
                    sa.select(User.display_name).where(User.username == username)
                ).scalar()
        return self._users[username]

    def user_by_id(self, user_id: int | None) -> str | None:
        if user_id is None:
            return None
        key = f"#{user_id}"
        if key not in self._users:
            with self.db.reading() as s:
                self._users[key] = s.execute(
                    sa.select(User.display_name).where(User.id == user_id)
                ).scalar()
        return self._users[key]

    def agency(self, agency_id: int | None) -> str | None:
        """An agency's name (a referral keeps the agency it came from by id)."""
        if agency_id is None:
            return None
        with self.db.reading() as s:
            return s.execute(sa.select(Agency.name).where(Agency.id == agency_id)).scalar()

    def meeting(self, meeting_id: Any) -> str | None:
        try:
            key = int(meeting_id)
        except (TypeError, ValueError):
            return None
        if key not in self._meetings:
            with self.db.reading() as s:
                row = s.execute(
                    sa.select(Meeting.pathway, Meeting.date).where(Meeting.id == key)
                ).first()
            self._meetings[key] = (
                f"{self.pathway_labels.get(row.pathway, row.pathway)} meeting on "
                f"{day_text(row.date)}"
                if row
                else None
            )
        return self._meetings[key]
