"""Reads at regional scale: the MASH queue, a case page and the person match.

For each size (10k, 100k; 1M with --full) a fresh SQLite database is migrated and loaded
with `referral-engine demo --scale N` in a child process (its wall time and peak RSS are
the load figures), then the reads run in this process through the product's own calls,
each one audited as in real use:

- the MASH queue as a MASH manager sees it (first page of 50, open cases, most urgent
  first, with its total), and a page further down;
- a case page (`Cases.view`, a random MASH case);
- the person match a referral runs (`intake.identify`: by name and date of birth, and by
  name alone), in a transaction that is rolled back.

The cost should follow the page size, not the table: compare the sizes' p95.

    .venv/bin/python bench/scale.py [--sizes 10000,100000] [--reads 200]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from figures import percentiles_ms

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "REFERRAL_ENGINE_DEMO": "1",
        "REFERRAL_ENGINE_PASSWORD_HASHER": "argon2-fast",
    }


def load(url: str, n: int) -> dict:
    """Migrate and load demo data plus `n` synthetic cases in a child; time and peak RSS."""
    env = _env(url)
    subprocess.run([BIN / "referral-engine", "db", "upgrade"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    start = time.perf_counter()
    child = subprocess.Popen(
        [BIN / "referral-engine", "demo", "--quiet", "--scale", str(n)], env=env
    )
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"demo --scale {n} failed ({child.returncode})")
    secs = time.perf_counter() - start
    return {
        "seconds": round(secs, 1),
        "cases_per_s": round(n / secs),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
    }


def reads(url: str, count: int, seed: int = 7) -> dict:
    import sqlalchemy as sa

    from referral_engine.engine import intake
    from referral_engine.ops.demo import FAMILY, GIVEN
    from referral_engine.runtime import Runtime
    from referral_engine.settings import Settings
    from referral_engine.storage.models import Case

    os.environ.update(_env(url))
    rt = Runtime.build(Settings())
    rng = random.Random(seed)
    with rt.db.reading() as s:
        uid = s.execute(sa.text("SELECT id FROM app_user WHERE username='mash.manager'")).scalar()
        manager = rt.accounts.actor_for_user(s, uid, source="api", request_id=None)
        mash = s.execute(
            sa.select(Case.id).where(Case.pathway == "mash").order_by(sa.func.random()).limit(count)
        ).scalars().all()  # fmt: skip
    subjects = [
        {"given_name": rng.choice(GIVEN), "family_name": rng.choice(FAMILY),
         "date_of_birth": (date(1950, 1, 1) + timedelta(days=rng.randrange(27000))).isoformat()}
        for _ in range(count)
    ]  # fmt: skip

    def identify(subject: dict) -> None:
        with rt.db.transaction() as s:
            intake.identify(s, subject)
            s.rollback()

    calls = {
        "mash_queue": lambda i: rt.cases.queue(manager, pathway="mash", limit=50),
        "mash_queue_page_20": lambda i: rt.cases.queue(
            manager, pathway="mash", limit=50, offset=50 * 19
        ),
        "case_page": lambda i: rt.cases.view(manager, mash[i % len(mash)]),
        "person_match_name_dob": lambda i: identify(subjects[i]),
        "person_match_name": lambda i: identify(
            {k: v for k, v in subjects[i].items() if k != "date_of_birth"}
        ),
    }
    samples: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    # Interleaved, so a burst of load from elsewhere falls on every kind of read alike.
    for i in range(count):
        for name, call in calls.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            call(i)
            samples[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    from referral_engine.storage.db import dispose_all

    dispose_all()
    # CPU ms: this process's own CPU per read (the wall time also holds the commit's
    # fsync of the read's audit row, and waiting for a core on a shared machine).
    return {
        name: {**percentiles_ms(s, 2), "cpu_p50_ms": round(statistics.median(cpu[name]) * 1e3, 2)}
        for name, s in samples.items()
    }


def run(sizes: list[int], count: int, workdir: Path | None = None) -> dict:
    out = {}
    for n in sizes:
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            url = f"sqlite:///{Path(tmp) / 'scale.db'}"
            loaded = load(url, n)
            loaded["db_mb"] = round((Path(tmp) / "scale.db").stat().st_size / 2**20)
            out[str(n)] = {"load": loaded, "reads": reads(url, count)}
            print(f"scale {n}: {json.dumps(out[str(n)])}", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--reads", type=int, default=200)
    args = parser.parse_args()
    var = ROOT / "var"
    var.mkdir(exist_ok=True)
    sizes = [int(x) for x in args.sizes.split(",")]
    print(json.dumps(run(sizes, args.reads, var), indent=2))


if __name__ == "__main__":
    main()
