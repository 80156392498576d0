"""Writing requests enter the thread pool a few at a time, the rest wait on the loop.

A route that writes runs its whole work (who the caller is, the change, the answer) in
one thread-pool call, behind a semaphore sized by `Database.writers_at_once`. Waiting
on the event loop costs nothing; waiting in a thread for SQLite's one write lock costs
GIL handovers on every statement the writing thread runs (bench/README.md, fourth
round). The semaphore belongs to the running loop: a test client or server that starts
a new loop gets its own.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from referral_engine.storage import Database

T = TypeVar("T")

_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


async def run_writing(db: Database, fn: Callable[..., T], *args: Any) -> T:
    gates = _gates.setdefault(asyncio.get_running_loop(), {})
    gate = gates.get(db.url)
    if gate is None:
        gate = gates[db.url] = asyncio.Semaphore(db.writers_at_once)
    async with gate:
        return await run_in_threadpool(fn, *args)
