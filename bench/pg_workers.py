"""PostgreSQL: engine events per second with 1, 4 and 8 concurrent workers.

Each worker is a process of its own with its own Runtime (as `serve` processes are),
firing the six MASH steps on cases no other worker touches, one transaction a step, with
the full audit. The audit sequencer runs alongside in the parent, linking the chain off
the hot path as `serve` does; at the end the whole chain is verified. The server is
REFERRAL_ENGINE_BENCH_PG_URL (default: the dev server on 127.0.0.1:54329); the bench
creates and drops a database of its own there. Asserts nothing.

    .venv/bin/python bench/pg_workers.py [--cases-per-worker 30] [--workers 1,4,8]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from engine_steps import STEPS, add_people, open_cases  # noqa: E402

SERVER = os.environ.get(
    "REFERRAL_ENGINE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:54329/postgres"
)


def _settings(url: str):
    from referral_engine.settings import Settings

    return Settings(database_url=url, secret_key="s" * 40, audit_key="a" * 40,
                    password_hasher="argon2-fast")  # fmt: skip


def _admin(sql: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(
        SERVER.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as conn:
        conn.execute(sa.text(sql))
    engine.dispose()


def prepare(url: str, cases: int) -> tuple[list[int], dict[str, int]]:
    from referral_engine.runtime import Runtime
    from referral_engine.storage.db import dispose_all
    from referral_engine.storage.migrate import upgrade

    upgrade(url)
    rt = Runtime.build(_settings(url))
    rt.engine.register_versions()
    actors = add_people(rt)
    users = {name: a.user_id for name, a in actors.items()}
    ids = open_cases(rt, actors["referrer"], cases)
    rt.audit.run_sequencer(rt.db.engine)
    dispose_all()
    return ids, users


def _worker(url: str, users: dict[str, int], ids: list[int], barrier, out) -> None:
    from referral_engine.runtime import Runtime

    rt = Runtime.build(_settings(url))
    with rt.db.reading() as s:
        actors = {
            name: rt.accounts.actor_for_user(s, uid, source="api", request_id=None)
            for name, uid in users.items()
        }

    def walk(case_id: int) -> None:
        version = 1
        for who, event, data in STEPS:
            version = rt.engine.fire(case_id, event, actors[who], data, version).version

    # One case untimed first: a fresh process compiles its statements and fills its pool
    # on its first fire, which would otherwise count against runs with more workers.
    walk(ids[0])
    barrier.wait()
    start = time.perf_counter()
    for case_id in ids[1:]:
        walk(case_id)
    out.put(time.perf_counter() - start)


class WaitSampler(threading.Thread):
    """What the bench's sessions wait on, sampled from pg_stat_activity every 20 ms: if
    writers queued on one lock (a chain head, say) it would show as `Lock` waits."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        import sqlalchemy as sa

        self.engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        self.database = url.rsplit("/", 1)[1]
        self.stop = threading.Event()
        self.counts: dict[str, int] = {}

    def run(self) -> None:
        import sqlalchemy as sa

        query = sa.text(
            "SELECT coalesce(wait_event_type, 'CPU') || ':' || coalesce(wait_event, '-') "
            "FROM pg_stat_activity WHERE datname = :db AND state = 'active' "
            "AND pid <> pg_backend_pid()"
        )
        with self.engine.connect() as conn:
            while not self.stop.wait(0.02):
                for (what,) in conn.execute(query, {"db": self.database}):
                    self.counts[what] = self.counts.get(what, 0) + 1
                conn.rollback()
        self.engine.dispose()


def measure(url: str, users: dict[str, int], ids: list[int], workers: int) -> dict:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(workers + 1), ctx.Queue()
    share = len(ids) // workers
    procs = [
        ctx.Process(
            target=_worker, args=(url, users, ids[i * share : (i + 1) * share], barrier, out)
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    sampler = WaitSampler(url)
    sampler.start()
    barrier.wait()
    start = time.perf_counter()
    times = [out.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    total = sum(sampler.counts.values()) or 1
    for p in procs:
        p.join()
    steps = (share - 1) * workers * len(STEPS)  # each worker's first case is its warm-up
    return {
        "workers": workers,
        "steps": steps,
        "seconds": round(wall, 2),
        "events_per_s": round(steps / wall, 1),
        "slowest_worker_s": round(max(times), 2),
        # Share of sampled active sessions by what they waited on (CPU: not waiting).
        "waits": {k: round(v / total, 3) for k, v in sorted(sampler.counts.items(),
                                                            key=lambda kv: -kv[1])[:6]},
    }  # fmt: skip


def run(cases_per_worker: int = 30, workers: tuple[int, ...] = (1, 4, 8)) -> dict:
    from referral_engine.runtime import Runtime

    name = f"bench_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    url = SERVER.rsplit("/", 1)[0] + "/" + name
    try:
        # Each run gets its own cases: every count of workers fires the same number each
        # (plus one warm-up case a worker).
        per_run = (cases_per_worker + 1) * max(workers)
        ids, users = prepare(url, per_run * len(workers))
        rt = Runtime.build(_settings(url))
        stop = threading.Event()

        def sequence() -> None:  # the sequencer `serve` runs, once a second
            while not stop.wait(1.0):
                rt.audit.run_sequencer(rt.db.engine)

        sequencer = threading.Thread(target=sequence, daemon=True)
        sequencer.start()
        results = []
        for i, w in enumerate(workers):
            results.append(measure(url, users, ids[i * per_run : (i + 1) * per_run], w))
            print(f"pg {w} workers: {results[-1]}", file=sys.stderr)
        stop.set()
        sequencer.join()
        verified = rt.verify_audit()
        from referral_engine.storage.db import dispose_all

        dispose_all()
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    by = {r["workers"]: r for r in results}
    out = {"runs": results, "audit_verified": verified.ok, "audit_rows": verified.rows}
    if 1 in by and max(workers) in by:
        out["scaling_1_to_max"] = round(by[max(workers)]["events_per_s"] / by[1]["events_per_s"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases-per-worker", type=int, default=30)
    parser.add_argument("--workers", default="1,4,8")
    args = parser.parse_args()
    workers = tuple(int(w) for w in args.workers.split(","))
    print(json.dumps(run(args.cases_per_worker, workers), indent=2))


if __name__ == "__main__":
    main()
