"""Engine throughput: cases taken through six MASH steps, one transaction a step.

Side by side, on the same disk in one run, with the same durability (SQLite WAL,
synchronous FULL, one committed transaction per step):

- the engine, through `Engine.fire` with its full audit (hash-chained row per step);
- raw `sqlite3` doing one UPDATE and one INSERT per step (the floor: what any engine on
  this disk must pay);
- SpiffWorkflow 3 running the same six steps as BPMN user tasks, the way a team would
  persist it: load the case's serialised workflow, complete the task, serialise it back
  (its own `BpmnWorkflowSerializer`), UPDATE the row and INSERT a history row.

The three run interleaved in chunks of cases, so load from other users of the machine
falls on all of them alike. Prints steps per second and the ratios; asserts nothing.

    .venv/bin/python bench/engine_steps.py [--cases 300] [--profile]
"""

from __future__ import annotations

import argparse
import itertools
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

BPMN_TASKS = ["screen", "request_checks", "record_police", "record_health", "complete", "decide"]


PASSWORD = "bench password 123"
REFERRAL = {"subject": {"given_name": "Bench", "family_name": "Case",
                        "date_of_birth": "2012-01-01"},
            "concerns": ["neglect"], "summary": "bench", "consent": "given"}  # fmt: skip


def add_people(rt) -> dict:
    """The referrer, MASH officer and MASH manager every bench uses, as actors."""
    actors = {}
    with rt.db.transaction() as s:
        for name, role in (("referrer", "practitioner"), ("officer", "mash_officer"),
                           ("manager", "mash_manager")):  # fmt: skip
            user = rt.accounts.add_user(
                s, username=name, password=PASSWORD, roles=[role], agency="Bench",
                agency_kind="education",
            )  # fmt: skip
            actors[name] = rt.accounts.actor_for_user(s, user.id, source="api", request_id=None)
    return actors


def open_cases(rt, referrer, n: int) -> list[int]:
    """`n` MASH cases, each from a referral, as the referral form opens them."""
    return [rt.referrals.create(referrer, REFERRAL)["case_id"] for _ in range(n)]


def _durable(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")


# --- the engine ------------------------------------------------------------------------


class EngineRun:
    def __init__(self, workdir: Path, cases: int):
        from referral_engine.runtime import Runtime
        from referral_engine.settings import Settings
        from referral_engine.storage.migrate import upgrade

        url = f"sqlite:///{workdir / 'engine.db'}"
        upgrade(url)
        settings = Settings(
            database_url=url, secret_key="b" * 40, audit_key="a" * 40, password_hasher="argon2-fast"
        )
        self.rt = rt = Runtime.build(settings)
        rt.start()
        self.actors = add_people(rt)
        self.ids = open_cases(rt, self.actors["referrer"], cases)

    def run(self, lo: int, hi: int) -> None:
        fire, actors = self.rt.engine.fire, self.actors
        for case_id in self.ids[lo:hi]:
            version = 1
            for who, event, data in STEPS:
                version = fire(case_id, event, actors[who], data, version).version

    def close(self) -> bool:
        ok = self.rt.verify_audit().ok
        self.rt.stop()
        return ok


# --- raw sqlite3 -----------------------------------------------------------------------


class RawRun:
    def __init__(self, workdir: Path, cases: int):
        self.conn = conn = sqlite3.connect(workdir / "raw.db", isolation_level=None)
        _durable(conn)
        conn.execute("CREATE TABLE c (id INTEGER PRIMARY KEY, state TEXT, version INTEGER)")
        conn.execute(
            "CREATE TABLE h (id INTEGER PRIMARY KEY, case_id INTEGER, event TEXT, data TEXT)"
        )
        conn.executemany("INSERT INTO c VALUES (?, 'received', 1)", [(i,) for i in range(cases)])

    def run(self, lo: int, hi: int) -> None:
        conn = self.conn
        for i in range(lo, hi):
            for _, event, data in STEPS:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("UPDATE c SET state=?, version=version+1 WHERE id=?", (event, i))
                conn.execute(
                    "INSERT INTO h (case_id, event, data) VALUES (?,?,?)",
                    (i, event, json.dumps(data)),
                )
                conn.execute("COMMIT")

    def close(self) -> bool:
        self.conn.close()
        return True


# --- SpiffWorkflow ---------------------------------------------------------------------


def _bpmn() -> str:
    tasks = "".join(f'<bpmn:userTask id="{t}" name="{t}"/>' for t in BPMN_TASKS)
    nodes = ["start", *BPMN_TASKS, "end"]
    flows = "".join(
        f'<bpmn:sequenceFlow id="f{i}" sourceRef="{a}" targetRef="{b}"/>'
        for i, (a, b) in enumerate(itertools.pairwise(nodes))
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" '
        'id="d" targetNamespace="http://bpmn.io/schema/bpmn">'
        '<bpmn:process id="mash" isExecutable="true">'
        f'<bpmn:startEvent id="start"/>{tasks}<bpmn:endEvent id="end"/>{flows}'
        "</bpmn:process></bpmn:definitions>"
    )


class SpiffRun:
    def __init__(self, workdir: Path, cases: int):
        from SpiffWorkflow.bpmn import BpmnWorkflow
        from SpiffWorkflow.bpmn.parser import BpmnParser
        from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
        from SpiffWorkflow.util.task import TaskState

        parser = BpmnParser()
        parser.add_bpmn_str(_bpmn().encode())
        self.spec = parser.get_spec("mash")
        self.serializer = BpmnWorkflowSerializer()
        self.ready, self.Workflow = TaskState.READY, BpmnWorkflow
        self.conn = conn = sqlite3.connect(workdir / "spiff.db", isolation_level=None)
        _durable(conn)
        conn.execute("CREATE TABLE wf (id INTEGER PRIMARY KEY, version INTEGER, body TEXT)")
        conn.execute(
            "CREATE TABLE h (id INTEGER PRIMARY KEY, case_id INTEGER, task TEXT, data TEXT)"
        )
        wf = BpmnWorkflow(self.spec)
        wf.do_engine_steps()
        body = self.serializer.serialize_json(wf)
        conn.executemany("INSERT INTO wf VALUES (?, 1, ?)", [(i, body) for i in range(cases)])

    def run(self, lo: int, hi: int) -> None:
        conn, ser = self.conn, self.serializer
        for i in range(lo, hi):
            for (_, _, data), name in zip(STEPS, BPMN_TASKS, strict=True):
                conn.execute("BEGIN IMMEDIATE")
                body, version = conn.execute(
                    "SELECT body, version FROM wf WHERE id=?", (i,)
                ).fetchone()
                wf = ser.deserialize_json(body)
                task = next(
                    t
                    for t in wf.get_tasks(state=self.ready, manual=True)
                    if t.task_spec.name == name
                )
                task.data.update(data)
                task.run()
                wf.do_engine_steps()
                conn.execute(
                    "UPDATE wf SET body=?, version=? WHERE id=? AND version=?",
                    (ser.serialize_json(wf), version + 1, i, version),
                )
                conn.execute(
                    "INSERT INTO h (case_id, task, data) VALUES (?,?,?)",
                    (i, name, json.dumps(data)),
                )
                conn.execute("COMMIT")

    def close(self) -> bool:
        done = self.conn.execute("SELECT body FROM wf LIMIT 1").fetchone()[0]
        self.conn.close()
        return self.serializer.deserialize_json(done).is_completed()


# --- side by side ----------------------------------------------------------------------


def run(cases: int = 300, chunk: int = 25, workdir: Path | None = None, spiff: bool = True) -> dict:
    """Steps per second for each system, interleaved chunk by chunk."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        runs = {"raw_sqlite3": RawRun(Path(tmp), cases), "engine": EngineRun(Path(tmp), cases)}
        if spiff:
            runs["spiffworkflow"] = SpiffRun(Path(tmp), cases)
        elapsed = dict.fromkeys(runs, 0.0)
        cpu = dict.fromkeys(runs, 0.0)
        for lo in range(0, cases, chunk):
            for name, r in runs.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                r.run(lo, min(lo + chunk, cases))
                elapsed[name] += time.perf_counter() - start
                cpu[name] += time.process_time() - start_cpu
        ok = {name: r.close() for name, r in runs.items()}
    steps = cases * len(STEPS)
    out: dict = {"cases": cases, "steps": steps}
    for name, secs in elapsed.items():
        out[name] = {
            "steps_per_s": round(steps / secs, 1),
            "seconds": round(secs, 3),
            # CPU this process spent per step: what is left once the disk's wait is not.
            "cpu_us_per_step": round(cpu[name] / steps * 1e6),
        }
    out["engine_vs_raw"] = round(elapsed["raw_sqlite3"] / elapsed["engine"], 3)
    if spiff:
        out["engine_vs_spiff"] = round(elapsed["spiffworkflow"] / elapsed["engine"], 2)
    out["checks_ok"] = ok
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--no-spiff", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile the engine alone")
    parser.add_argument("--sort", default="cumulative", help="pstats order for --profile")
    args = parser.parse_args()
    var = Path(__file__).resolve().parent.parent / "var"
    var.mkdir(exist_ok=True)
    if args.profile:
        import cProfile
        import pstats

        with tempfile.TemporaryDirectory(dir=var) as tmp:
            e = EngineRun(Path(tmp), args.cases)
            prof = cProfile.Profile()
            prof.runcall(e.run, 0, args.cases)
            e.close()
        pstats.Stats(prof).sort_stats(args.sort).print_stats(60)
        return
    print(json.dumps(run(args.cases, workdir=var, spiff=not args.no_spiff), indent=2))


if __name__ == "__main__":
    main()
