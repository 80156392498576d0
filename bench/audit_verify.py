"""`audit verify` speed: rows per second over a long chain.

Builds a chain of N audit rows straight into a migrated SQLite database with the
product's own functions (canonical JSON bodies like the engine's, `link_hash`, keyed
checkpoints every `checkpoint_every` rows), then times `audit.verify` (what
`referral-engine audit verify` runs after sealing) over all of it, twice; the best run
counts, since the first pays for reading the file into the page cache. Asserts nothing.

    .venv/bin/python bench/audit_verify.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

KEY = b"k" * 40
EVERY = 1000
BATCH = 50_000


def build(path: Path, rows: int) -> float:
    """Write `rows` linked audit rows; returns the seconds it took."""
    from referral_engine.audit import GENESIS, _checkpoint_row, canonical, link_hash
    from referral_engine.migrate import upgrade

    upgrade(f"sqlite:///{path}")
    start = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    head = GENESIS
    seq = 0
    at = "2026-11-25 10:00:00.000000"
    while seq < rows:
        events, links, cps = [], [], []
        for _ in range(min(BATCH, rows - seq)):
            seq += 1
            body = canonical(
                {"uuid": f"{seq:032x}", "at": "2026-11-25T10:00:00+00:00",
                 "actor": {"id": 7, "username": "mash.officer", "source": "api"},
                 "request_id": None, "action": "api:case:view", "target": f"case:{seq % 9973}",
                 "outcome": "allowed", "case_id": seq % 9973, "person_id": None,
                 "summary": {"pathway": "mash"}}
            )  # fmt: skip
            events.append((seq, at, 7, "api:case:view", "allowed", seq % 9973, body))
            prev, head = head, link_hash(head, body)
            links.append((seq, seq, prev, head))
            if seq % EVERY == 0:
                cp = _checkpoint_row(KEY, seq, head, EVERY)
                cps.append((cp["seq"], cp["next_seq"], cp["hash"], cp["mac"], at))
        conn.execute("BEGIN IMMEDIATE")
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
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - start


def measure(path: Path, runs: int = 2) -> dict:
    import sqlalchemy as sa

    from referral_engine.audit import verify

    engine = sa.create_engine(f"sqlite:///{path}")
    best, best_cpu, result = None, None, None
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = verify(engine, KEY, EVERY)
        secs, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        best = secs if best is None else min(best, secs)
        best_cpu = cpu if best_cpu is None else min(best_cpu, cpu)
    engine.dispose()
    assert result is not None and best is not None
    return {
        "rows": result.rows,
        "ok": result.ok,
        "seconds": round(best, 2),
        "rows_per_s": round(result.rows / best),
        # The same per second of this process's CPU: less at the mercy of other users.
        "rows_per_cpu_s": round(result.rows / best_cpu),
    }


def run(rows: int, workdir: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / "audit.db"
        built = build(path, rows)
        out = measure(path)
        out["build_seconds"] = round(built, 1)
        out["db_mb"] = round(path.stat().st_size / 2**20)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    var = Path(__file__).resolve().parent.parent / "var"
    var.mkdir(exist_ok=True)
    print(json.dumps(run(args.rows, var), indent=2))


if __name__ == "__main__":
    main()
