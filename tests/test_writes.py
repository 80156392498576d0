"""Writing requests enter the thread pool a few at a time (web/writes.py)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from referral_engine.db import Database
from web.writes import run_writing


def test_no_more_writers_run_at_once_than_the_database_takes(db_url):
    db = Database(db_url)
    running, most, lock = 0, 0, threading.Lock()

    def work(n: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return n * 2

    async def main() -> list[int]:
        return await asyncio.gather(*(run_writing(db, work, n) for n in range(12)))

    assert asyncio.run(main()) == [n * 2 for n in range(12)]
    assert most == db.writers_at_once
    assert db.writers_at_once == (2 if db.is_sqlite else db.engine.pool.size())


def test_an_error_in_the_work_reaches_the_caller_and_frees_its_place(db_url):
    db = Database(db_url)

    def fail() -> None:
        raise ValueError("refused")

    async def main() -> int:
        for _ in range(db.writers_at_once + 1):
            with pytest.raises(ValueError, match="refused"):
                await run_writing(db, fail)
        return await run_writing(db, lambda: 7)

    assert asyncio.run(main()) == 7


def test_each_event_loop_has_its_own_gate(db_url):
    """A semaphore that made a task wait is bound to that loop; a new test client or a
    restarted server runs a new loop, which must get a gate of its own, not fail."""
    db = Database(db_url)

    async def busy() -> list[None]:
        return await asyncio.gather(
            *(run_writing(db, time.sleep, 0.01) for _ in range(db.writers_at_once + 2))
        )

    for _ in range(2):
        assert len(asyncio.run(busy())) == db.writers_at_once + 2
