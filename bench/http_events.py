"""HTTP: `POST /api/cases/{id}/events` end to end through uvicorn, side by side with a
minimal FastAPI endpoint that inserts one row, in the same server settings.

Both servers are one uvicorn process (h11, no access log), each route's work run in
FastAPI's thread pool, each on its own SQLite file in WAL mode with synchronous FULL. The
client is a small asyncio HTTP/1.1 client with keep-alive (cheap, so it takes little of
the machine from the servers), with a bounded number of concurrent connections, each
taking the next case and walking its six MASH steps. The two servers are measured in
alternating phases so load from elsewhere hits both, after one untimed phase each (one
case a client) so that neither pays its first requests' one-off costs (compiling
statements, filling caches) inside the figures. Reports requests per second, p50 and
p95 latency, and the product server's peak RSS. Asserts nothing.

    .venv/bin/python bench/http_events.py [--cases 480] [--clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from engine_steps import PASSWORD, STEPS, add_people, open_cases  # noqa: E402
from figures import percentiles_ms  # noqa: E402

SECRETS = {"REFERRAL_ENGINE_SECRET_KEY": "s" * 40, "REFERRAL_ENGINE_AUDIT_KEY": "a" * 40}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_product(db: Path, cases: int) -> list[int]:
    """Migrate, add the bench's users and open `cases` MASH cases (in this process)."""
    from referral_engine.runtime import Runtime
    from referral_engine.settings import Settings
    from referral_engine.storage.db import dispose_all
    from referral_engine.storage.migrate import upgrade

    url = f"sqlite:///{db}"
    upgrade(url)
    rt = Runtime.build(
        Settings(database_url=url, secret_key="s" * 40, audit_key="a" * 40,
                 password_hasher="argon2-fast")
    )  # fmt: skip
    rt.start()
    actors = add_people(rt)
    ids = open_cases(rt, actors["referrer"], cases)
    rt.stop()
    dispose_all()
    return ids


def start(kind: str, db: Path, hasher: str = "argon2-fast") -> tuple[subprocess.Popen, int]:
    port = _free_port()
    env = {**os.environ, **SECRETS, "DATABASE_URL": f"sqlite:///{db}",
           "REFERRAL_ENGINE_PASSWORD_HASHER": hasher}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "http_server.py"), kind, str(port), str(db)], env=env
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{kind} server did not start")


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port: int):
        self.port = port

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def request(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n"
            f"{head}\r\n".encode()
            + body
        )
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def sign_in(port: int, who: str) -> str:
    c = Client(port)
    await c.open()
    status, body = await c.request(
        "POST", "/api/auth/token", urlencode({"username": who, "password": PASSWORD}).encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    c.close()
    if status != 200:
        raise SystemExit(f"sign-in failed: {status} {body[:200]!r}")
    return json.loads(body)["access_token"]


async def phase(port: int, case_ids: list[int], clients: int, tokens: dict[str, str]) -> dict:
    """Walk every case through the six steps with `clients` connections at once."""
    queue = list(reversed(case_ids))
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        c = Client(port)
        await c.open()
        while queue:
            case_id = queue.pop()
            version = 1
            for who, event, data in STEPS:
                body = json.dumps(
                    {"event": event, "data": data, "expected_version": version}
                ).encode()
                start = time.perf_counter()
                status, reply = await c.request(
                    "POST", f"/api/cases/{case_id}/events", body,
                    {"Content-Type": "application/json",
                     "Authorization": f"Bearer {tokens[who]}"},
                )  # fmt: skip
                latencies.append(time.perf_counter() - start)
                if status != 200:
                    errors += 1
                    break
                version = json.loads(reply)["version"]
        c.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return {"seconds": time.perf_counter() - start, "latencies": latencies, "errors": errors}


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def run(cases: int = 480, clients: int = 8, rounds: int = 4, workdir: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        product_db, minimal_db = Path(tmp) / "product.db", Path(tmp) / "minimal.db"
        ids = prepare_product(product_db, cases + clients)
        warm_up, ids = ids[:clients], ids[clients:]
        servers = {kind: start(kind, db) for kind, db in
                   (("product", product_db), ("minimal", minimal_db))}  # fmt: skip
        try:
            tokens = {
                who: asyncio.run(sign_in(servers["product"][1], who))
                for who in ("officer", "manager")
            }
            for _, port in servers.values():
                asyncio.run(phase(port, warm_up, clients, tokens))
            per_round = len(ids) // rounds
            results: dict[str, dict] = {k: {"seconds": 0.0, "latencies": [], "errors": 0}
                                        for k in servers}  # fmt: skip
            round_ratios = []
            for r in range(rounds):
                chunk = ids[r * per_round : (r + 1) * per_round]
                rate = {}
                for kind, (_, port) in servers.items():
                    # The minimal endpoint checks no token and keeps no state: any ids do.
                    got = asyncio.run(phase(port, chunk, clients, tokens))
                    results[kind]["seconds"] += got["seconds"]
                    results[kind]["latencies"] += got["latencies"]
                    results[kind]["errors"] += got["errors"]
                    rate[kind] = len(got["latencies"]) / got["seconds"]
                round_ratios.append(round(rate["product"] / rate["minimal"], 3))
            rss = {kind: _peak_rss_mb(proc.pid) for kind, (proc, _) in servers.items()}
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=30)
    out: dict = {"clients": clients, "cases": per_round * rounds}
    for kind, got in results.items():
        lat = got["latencies"]
        out[kind] = {
            "requests": len(lat),
            "errors": got["errors"],
            "req_per_s": round(len(lat) / got["seconds"], 1),
            **percentiles_ms(lat),
            "peak_rss_mb": rss[kind],
        }
    out["product_vs_minimal"] = round(out["product"]["req_per_s"] / out["minimal"]["req_per_s"], 3)
    # Each round's two phases ran back to back: how much the ratio moves from one pair to
    # the next shows how far to trust the one above.
    out["round_ratios"] = round_ratios
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=480)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    var = HERE.parent / "var"
    var.mkdir(exist_ok=True)
    print(json.dumps(run(args.cases, args.clients, workdir=var), indent=2))


if __name__ == "__main__":
    main()
