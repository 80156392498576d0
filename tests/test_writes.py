"""Writers: requests enter the thread pool a few at a time (web/writes.py), and the SQLite
writer keeps its connection between turns (`Database.writing`)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from referral_engine.storage.db import Database
from web.writes import run_writing


def run_loop(coro):
    """`asyncio.run` on a thread of its own: the browser tests' Playwright leaves an event
    loop running on the main thread of the worker that ran them."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


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

    assert run_loop(main()) == [n * 2 for n in range(12)]
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

    assert run_loop(main()) == 7


def test_each_event_loop_has_its_own_gate(db_url):
    """A semaphore that made a task wait is bound to that loop; a new test client or a
    restarted server runs a new loop, which must get a gate of its own, not fail."""
    db = Database(db_url)

    async def busy() -> list[None]:
        return await asyncio.gather(
            *(run_writing(db, time.sleep, 0.01) for _ in range(db.writers_at_once + 2))
        )

    for _ in range(2):
        assert len(run_loop(busy())) == db.writers_at_once + 2


def test_the_sqlite_writer_keeps_one_connection_and_a_failure_leaves_nothing(tmp_path):
    """`Database.writing` on SQLite reuses one connection between turns; a turn that
    fails is rolled back on it, and the next turn starts clean on the same connection."""
    import sqlalchemy as sa

    from referral_engine.storage import db as dbmod

    db = Database(f"sqlite:///{tmp_path / 'kept.db'}")
    with db.writing() as conn:
        conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
        first = conn
    with pytest.raises(ValueError), db.writing() as conn:
        assert conn is first
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        raise ValueError("refused")
    with db.writing() as conn:
        assert conn is first and conn.in_transaction()
        conn.exec_driver_sql("INSERT INTO t VALUES (2)")
    with db.read_connection() as conn:
        assert [r[0] for r in conn.execute(sa.text("SELECT n FROM t"))] == [2]
    # Disposing of the engine (tests, the CLI) closes it; the next writer opens another.
    db.engine.dispose()
    assert first.closed and db.engine not in dbmod._kept
    with db.writing() as conn:
        assert conn is not first
        conn.exec_driver_sql("INSERT INTO t VALUES (3)")
    with db.read_connection() as conn:
        assert [r[0] for r in conn.execute(sa.text("SELECT n FROM t ORDER BY n"))] == [2, 3]
    db.engine.dispose()
