"""Engine throughput: cases taken through six MASH steps, one transaction a step.

Side by side, on the same disk in one run: the engine with its full audit (SQLite WAL,
synchronous FULL) against raw sqlite3 doing one UPDATE and one INSERT per step with the
same durability. Prints steps per second and the ratio; asserts nothing.

    .venv/bin/python bench/engine_steps.py [--cases 300]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

# The lawful basis and recipient each information request and answer records.
ASKED = {"lawful_basis": "safeguarding", "recipient": "Partner agency leads"}
ANSWERED = {"lawful_basis": "safeguarding", "recipient": "MASH duty desk"}

STEPS = [
    ("officer", "screen", {"rag": "amber", "rationale": "bench"}),
    ("officer", "request_checks", {"agencies": ["police", "health"], **ASKED}),
    ("officer", "record_check",
     {"agency": "police", "summary": "known", "risk_found": False, **ANSWERED}),
    ("officer", "record_check",
     {"agency": "health", "summary": "none", "risk_found": False, **ANSWERED}),
    ("officer", "complete_checks", {}),
    ("manager", "decide", {"outcome": "early_help", "onward": [], "rationale": "bench",
                           "feedback_to_referrer": "Early help offered"}),
]  # fmt: skip


def bench_engine(workdir: Path, cases: int) -> float:
    from referral_engine.migrate import upgrade
    from referral_engine.runtime import Runtime
    from referral_engine.settings import Settings

    url = f"sqlite:///{workdir / 'engine.db'}"
    upgrade(url)
    settings = Settings(
        database_url=url, secret_key="b" * 40, audit_key="a" * 40, password_hasher="argon2-fast"
    )
    rt = Runtime.build(settings)
    rt.start()
    actors = {}
    with rt.db.transaction() as s:
        for name, role in (("referrer", "practitioner"), ("officer", "mash_officer"),
                           ("manager", "mash_manager")):  # fmt: skip
            user = rt.accounts.add_user(
                s, username=name, password="bench password 123", roles=[role],
                agency="Bench", agency_kind="education",
            )  # fmt: skip
            actors[name] = rt.accounts.actor_for_user(s, user.id, source="api", request_id=None)
    body = {"subject": {"given_name": "Bench", "family_name": "Case",
                        "date_of_birth": "2012-01-01"},
            "concerns": ["neglect"], "summary": "bench", "consent": "given"}  # fmt: skip
    ids = [rt.referrals.create(actors["referrer"], body)["case_id"] for _ in range(cases)]
    start = time.perf_counter()
    for case_id in ids:
        version = 1
        for who, event, data in STEPS:
            version = rt.engine.fire(case_id, event, actors[who], data, version).version
    elapsed = time.perf_counter() - start
    assert rt.verify_audit().ok
    rt.stop()
    return cases * len(STEPS) / elapsed


def bench_raw(workdir: Path, cases: int) -> float:
    conn = sqlite3.connect(workdir / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE c (id INTEGER PRIMARY KEY, state TEXT, version INTEGER)")
    conn.execute("CREATE TABLE h (id INTEGER PRIMARY KEY, case_id INTEGER, event TEXT, data TEXT)")
    conn.executemany("INSERT INTO c VALUES (?, 'received', 1)", [(i,) for i in range(cases)])
    start = time.perf_counter()
    for i in range(cases):
        for _, event, data in STEPS:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE c SET state=?, version=version+1 WHERE id=?", (event, i))
            conn.execute(
                "INSERT INTO h (case_id, event, data) VALUES (?,?,?)", (i, event, json.dumps(data))
            )
            conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return cases * len(STEPS) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent.parent / "var") as tmp:
        raw = bench_raw(Path(tmp), args.cases)
        engine = bench_engine(Path(tmp), args.cases)
    print(f"{'':28}{'steps/s':>10}")
    print(f"{'raw sqlite3 (UPDATE+INSERT)':28}{raw:10.0f}")
    print(f"{'engine, full audit':28}{engine:10.0f}")
    print(f"engine / raw sqlite3 = {engine / raw:.2f}")


if __name__ == "__main__":
    main()
