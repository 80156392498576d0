"""`audit verify` speed: rows per second over a long chain.

Builds a chain of N audit rows straight into a migrated SQLite database with the
product's own functions (canonical JSON bodies like the engine's, `link_hash`, keyed
checkpoints every `checkpoint_every` rows), then times `audit.verify` (what
`referral-engine audit verify` runs after sealing) over all of it: in worker processes
as the product does (one per usable core) and, interleaved with it, in one process
(`workers=1`), twice each; the best run of each counts, since the first pays for reading
the file into the page cache. CPU seconds include the worker processes'. Asserts nothing.

    .venv/bin/python bench/audit_verify.py [--full] [--rows N] [--workers N]

1,000,000 rows by default, 10,000,000 with --full (as `bench/run.py --full`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import tempfile
import time
from pathlib import Path

KEY = b"k" * 40
EVERY = 1000
BATCH = 100_000
AT = "2026-11-25 10:00:00.000000"


def body_maker():
    """seq -> the canonical JSON body of a `case:view` row, as `audit.canonical` makes
    it, by filling a template (json.dumps for every row was most of the build time).
    The template is checked against `canonical` before use."""
    from referral_engine.audit.log import canonical

    def doc(seq: int) -> dict:
        return {"uuid": f"{seq:032x}", "at": "2026-11-25T10:00:00+00:00",
                "actor": {"id": 7, "username": "mash.officer", "source": "api"},
                "request_id": None, "action": "api:case:view", "target": f"case:{seq % 9973}",
                "outcome": "allowed", "case_id": seq % 9973, "person_id": None,
                "summary": {"pathway": "mash"}}  # fmt: skip

    marked = canonical(doc(0x7E57)).replace(b"%", b"%%")
    template = (
        marked.replace(b'"0000000000000000000000000000' + b'7e57"', b'"%032x"')
        .replace(b'"case:%d"' % (0x7E57 % 9973), b'"case:%d"')
        .replace(b'"case_id":%d' % (0x7E57 % 9973), b'"case_id":%d')
    )

    def make(seq: int) -> bytes:
        return template % (seq % 9973, seq % 9973, seq)

    for seq in (1, 9972, 9973, 123_456_789):
        assert make(seq) == canonical(doc(seq)), "the template drifted from canonical()"
    return make


def build(path: Path, rows: int) -> float:
    """Write `rows` linked audit rows; returns the seconds it took.

    A throwaway file, so no journal and no fsync while loading, and the event table's
    secondary indexes are built once at the end rather than row by row (the same
    indexes, from their own CREATE statements); the file is left in WAL mode as the
    product runs it."""
    from referral_engine.audit.log import GENESIS, _checkpoint_row, link_hash
    from referral_engine.storage.migrate import upgrade

    upgrade(f"sqlite:///{path}")
    start = time.perf_counter()
    make = body_maker()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")  # 1 GB: the indexes stay in memory
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_event' "
        "AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    head = GENESIS
    for first in range(1, rows + 1, BATCH):
        events, links, cps = [], [], []
        for seq in range(first, min(first + BATCH, rows + 1)):
            body = make(seq)
            events.append((seq, AT, 7, "api:case:view", "allowed", seq % 9973, body))
            prev, head = head, link_hash(head, body)
            links.append((seq, seq, prev, head))
            if seq % EVERY == 0:
                cp = _checkpoint_row(KEY, seq, head, EVERY)
                cps.append((cp["seq"], cp["next_seq"], cp["hash"], cp["mac"], AT))
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO audit_event (id, at, actor_id, action, outcome, case_id, body) "
            "VALUES (?,?,?,?,?,?,?)",
            events,
        )
        conn.executemany(
            "INSERT INTO audit_chain (seq, audit_id, prev_hash, hash) VALUES (?,?,?,?)", links
        )
        conn.executemany(
            "INSERT INTO audit_checkpoint (seq, next_seq, hash, mac, at) VALUES (?,?,?,?,?)",
            cps,
        )
        conn.execute("COMMIT")
    for _, sql in indexes:
        conn.execute(sql)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return time.perf_counter() - start


def _cpu() -> float:
    """This process's CPU seconds and those of its finished children (the workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(path: Path, workers: int | None = None, runs: int = 2) -> dict:
    import sqlalchemy as sa

    from referral_engine.audit.log import MAX_WORKERS, _usable_cores, verify

    parallel = workers or min(_usable_cores(), MAX_WORKERS)
    engine = sa.create_engine(f"sqlite:///{path}")
    best: dict[int, tuple[float, float]] = {}
    rows = None
    for _ in range(runs):
        for n in dict.fromkeys((parallel, 1)):  # interleaved: load falls on both alike
            start, start_cpu = time.perf_counter(), _cpu()
            result = verify(engine, KEY, EVERY, workers=n)
            secs, cpu = time.perf_counter() - start, _cpu() - start_cpu
            assert result.ok, result.reason
            rows = result.rows
            was = best.get(n, (secs, cpu))
            best[n] = (min(was[0], secs), min(was[1], cpu))
    engine.dispose()
    assert rows is not None

    def figures(n: int) -> dict:
        secs, cpu = best[n]
        return {
            "workers": n,
            "seconds": round(secs, 2),
            "rows_per_s": round(rows / secs),
            # Per second of CPU (workers included): less at the mercy of other users.
            "rows_per_cpu_s": round(rows / cpu),
        }

    out = {"rows": rows, "ok": True, **figures(parallel)}
    out["one_process"] = figures(1)
    out["speedup"] = round(best[1][0] / best[parallel][0], 2)
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return out


def run(rows: int, workdir: Path | None = None, workers: int | None = None) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / "audit.db"
        built = build(path, rows)
        out = measure(path, workers)
        out["build_seconds"] = round(built, 1)
        out["db_mb"] = round(path.stat().st_size / 2**20)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="10,000,000 rows")
    parser.add_argument("--rows", type=int, help="rows to build (default 1,000,000)")
    parser.add_argument("--workers", type=int, help="worker processes (default: the product's)")
    args = parser.parse_args()
    rows = args.rows or (10_000_000 if args.full else 1_000_000)
    var = Path(__file__).resolve().parent.parent / "var"
    var.mkdir(exist_ok=True)
    print(json.dumps(run(rows, var, args.workers), indent=2))


if __name__ == "__main__":
    main()
