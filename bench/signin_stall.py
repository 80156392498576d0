"""Does anyone wait on someone else's sign-in? API reads, quiet and while sign-ins run.

One uvicorn server (as in http_events.py) with the production password hasher (argon2 at
its real cost, ~165 ms a hash here). One client reads a case through the API every 10 ms,
first with nothing else going on, then while a second client posts the sign-in page
without a pause (wrong passwords for unknown users, each hashed all the same so a
stranger cannot time which usernames exist). The quiet phase is the baseline; the ratio
of the two p95s is the result. Before sign-in left the event loop (2026-11-26, fifth
round in bench/README.md) each hash held up every request the server had: reads waited
for hundreds of milliseconds. Asserts nothing.

    .venv/bin/python bench/signin_stall.py [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from figures import percentiles_ms  # noqa: E402
from http_events import Client, prepare_product, sign_in, start  # noqa: E402


async def _reads(port: int, token: str, case_id: int, seconds: float, stop=None) -> list[float]:
    api = Client(port)
    await api.open()
    headers = {"Authorization": f"Bearer {token}"}
    got: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        status, body = await api.request("GET", f"/api/cases/{case_id}", b"", headers)
        if status != 200:
            raise SystemExit(f"read failed: {status} {body[:200]!r}")
        got.append(time.perf_counter() - t)
        await asyncio.sleep(0.01)
    api.close()
    if stop is not None:
        stop.set()
    return got


async def _sign_ins(port: int, stop: asyncio.Event) -> int:
    browser = Client(port)
    await browser.open()
    csrf = secrets.token_urlsafe(16)  # the sign-in form's double-submit pair
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "Cookie": f"re_login_csrf={csrf}"}  # fmt: skip
    done = 0
    while not stop.is_set():
        form = {"username": f"nobody{secrets.randbelow(10**9)}", "password": "wrong-password",
                "csrf": csrf}  # fmt: skip
        status, body = await browser.request("POST", "/login", urlencode(form).encode(), headers)
        if status != 401:
            raise SystemExit(f"sign-in answered {status}: {body[:200]!r}")
        done += 1
    browser.close()
    return done


async def _measure(port: int, token: str, case_id: int, seconds: float) -> dict:
    quiet = await _reads(port, token, case_id, seconds / 2)
    stop = asyncio.Event()
    busy, sign_ins = await asyncio.gather(
        _reads(port, token, case_id, seconds, stop), _sign_ins(port, stop)
    )
    out: dict = {"sign_ins": sign_ins, "sign_ins_per_s": round(sign_ins / seconds, 1)}
    for name, lat in (("quiet", quiet), ("during_sign_ins", busy)):
        out[name] = {
            "reads": len(lat),
            **percentiles_ms(lat),
            "max_ms": round(max(lat) * 1e3, 1),
        }
    ratio = out["during_sign_ins"]["p95_ms"] / out["quiet"]["p95_ms"]
    out["p95_during_vs_quiet"] = round(ratio, 2)
    return out


def run(seconds: float = 8.0, workdir: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        db = Path(tmp) / "product.db"
        case_id = prepare_product(db, 1)[0]
        proc, port = start("product", db, hasher="argon2")
        try:
            token = asyncio.run(sign_in(port, "officer"))
            return asyncio.run(_measure(port, token, case_id, seconds))
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    var = HERE.parent / "var"
    var.mkdir(exist_ok=True)
    print(json.dumps(run(args.seconds, workdir=var), indent=2))


if __name__ == "__main__":
    main()
