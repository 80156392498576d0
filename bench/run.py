"""Every benchmark in one run: `make bench` (reduced scale, a few minutes) or
`make bench-full` (a million cases, ten million audit rows).

Prints a table of the figures against their targets and writes bench/results.json.
Benchmarks print figures; nothing here asserts a time. Each section runs its
side-by-side comparison interleaved, so load from other users of the machine falls on
both sides alike: the ratios are the result, the absolute figures are noise.

    .venv/bin/python bench/run.py [--full] [--only engine,http,stall,scale,audit,pg]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import audit_verify  # noqa: E402
import engine_steps  # noqa: E402
import http_events  # noqa: E402
import pg_workers  # noqa: E402
import scale  # noqa: E402
import signin_stall  # noqa: E402

SIZES = {
    False: {"engine_cases": 200, "http_cases": 480, "scale": [10_000, 100_000],
            "scale_reads": 100, "audit_rows": 1_000_000, "pg_cases_per_worker": 15},
    True: {"engine_cases": 1000, "http_cases": 480, "scale": [10_000, 100_000, 1_000_000],
           "scale_reads": 300, "audit_rows": 10_000_000, "pg_cases_per_worker": 60},
}  # fmt: skip


def machine() -> dict:
    load = os.getloadavg()
    mem = next(
        (int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
         if line.startswith("MemTotal:")), None,
    )  # fmt: skip
    return {
        "cpus": os.cpu_count(),
        "memory_mb": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in load],
    }


def table(results: dict) -> str:
    rows: list[tuple[str, str, str]] = []
    if e := results.get("engine"):
        rows += [
            ("engine: raw sqlite3 steps/s", f"{e['raw_sqlite3']['steps_per_s']:.0f}", ""),
            ("engine: SpiffWorkflow steps/s", f"{e['spiffworkflow']['steps_per_s']:.0f}", ""),
            ("engine: Referral Engine steps/s", f"{e['engine']['steps_per_s']:.0f}", ""),
            ("engine / raw sqlite3", f"{e['engine_vs_raw']:.2f}", ">= 0.50"),
            ("engine / SpiffWorkflow", f"{e['engine_vs_spiff']:.2f}", ">= 5"),
            ("engine CPU us/step (raw, spiff, engine)",
             f"{e['raw_sqlite3']['cpu_us_per_step']}, {e['spiffworkflow']['cpu_us_per_step']}, "
             f"{e['engine']['cpu_us_per_step']}", ""),
        ]  # fmt: skip
    if h := results.get("http"):
        for kind in ("minimal", "product"):
            k = h[kind]
            rows.append((f"http {kind}: req/s (p50, p95 ms)",
                         f"{k['req_per_s']:.0f} ({k['p50_ms']}, {k['p95_ms']})", ""))  # fmt: skip
        rows.append(("http product / minimal", f"{h['product_vs_minimal']:.2f}", ">= 0.40"))
        rounds = " ".join(f"{r:.2f}" for r in h["round_ratios"])
        rows.append(("http product / minimal, round by round", rounds, ""))
        rows.append(("http product server peak RSS MB", f"{h['product']['peak_rss_mb']}", ""))
    if st := results.get("stall"):
        q, d = st["quiet"], st["during_sign_ins"]
        rows.append(("API read p50/p95 ms, quiet", f"{q['p50_ms']} / {q['p95_ms']}", ""))
        rows.append((f"API read p50/p95 ms, {st['sign_ins_per_s']} sign-ins/s",
                     f"{d['p50_ms']} / {d['p95_ms']}", ""))  # fmt: skip
        rows.append(
            ("API read p95, during sign-ins / quiet", f"{st['p95_during_vs_quiet']:.2f}", "")
        )
    for n, got in (results.get("scale") or {}).items():
        load = got["load"]
        figure = f"{load['seconds']} ({load['cases_per_s']}, {load['peak_rss_mb']})"
        rows.append((f"scale {int(n):,}: load s (cases/s, peak RSS MB)", figure, ""))
        for name, r in got["reads"].items():
            rows.append((f"scale {int(n):,}: {name} p50/p95 (CPU p50) ms",
                         f"{r['p50_ms']} / {r['p95_ms']} ({r.get('cpu_p50_ms')})",
                         "p95 <= 50"))  # fmt: skip
    if a := results.get("audit"):
        rows.append((f"audit verify rows/s ({a['rows']:,} rows, {a['workers']} workers)",
                     f"{a['rows_per_s']:,}", ">= 1,000,000"))  # fmt: skip
        rows.append(("audit verify rows/s of CPU (workers included)", f"{a['rows_per_cpu_s']:,}",
                     ""))  # fmt: skip
        if one := a.get("one_process"):
            rows.append(("audit verify rows/s in one process (rows/s of CPU)",
                         f"{one['rows_per_s']:,} ({one['rows_per_cpu_s']:,})", ""))  # fmt: skip
    if p := results.get("pg"):
        for r in p["runs"]:
            rows.append((f"pg {r['workers']} workers events/s", f"{r['events_per_s']:.0f}", ""))
        if "scaling_1_to_max" in p:
            rows.append(("pg events/s, 8 workers / 1", f"{p['scaling_1_to_max']:.2f}", ">= 2"))
    width = max(len(r[0]) for r in rows) + 2
    out = [f"{'measure':{width}}{'figure':>24}  target", "-" * (width + 34)]
    out += [f"{name:{width}}{value:>24}  {target}" for name, value, target in rows]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--only", default="engine,http,stall,scale,audit,pg")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args()
    size = SIZES[args.full]
    only = set(args.only.split(","))
    var = ROOT / "var"
    var.mkdir(exist_ok=True)
    results: dict = {"started": datetime.now(UTC).isoformat(timespec="seconds"),
                     "full": args.full, "machine": machine(), "sizes": size}  # fmt: skip
    sections = {
        "engine": lambda: engine_steps.run(size["engine_cases"], workdir=var),
        "http": lambda: http_events.run(size["http_cases"], 8, workdir=var),
        "stall": lambda: signin_stall.run(8.0, workdir=var),
        "scale": lambda: scale.run(size["scale"], size["scale_reads"], var),
        "audit": lambda: audit_verify.run(size["audit_rows"], var),
        "pg": lambda: pg_workers.run(size["pg_cases_per_worker"]),
    }
    timings = {}
    for name, section in sections.items():
        if name not in only:
            continue
        start = time.perf_counter()
        print(f"--- {name}", file=sys.stderr, flush=True)
        try:
            results[name] = section()
        except Exception as exc:  # report the rest even if one section cannot run
            results[name + "_error"] = f"{type(exc).__name__}: {exc}"
            print(f"{name} failed: {exc}", file=sys.stderr)
        timings[name] = round(time.perf_counter() - start, 1)
    results["section_seconds"] = timings
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(table({k: v for k, v in results.items() if k in sections}))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
