"""No route reads or writes the database on the event loop.

The server runs every request on one event loop. A route that waits on the database
there (a read, a write's fsync) or hashes a password there (~165 ms of argon2) stalls
every other request the server holds, API clients and other users' pages alike. So
every route works in the thread pool: plain `def` routes by FastAPI's own doing, and the
`async` ones (page forms read their body on the loop) by handing the rest to it
(`web.pages.base.posted`, `web.writes.run_writing`).

The watch: a pool checkout made on a thread that is running an event loop. The test
client serves the app on an event loop in a thread of its own; the main thread is left
out, because the browser tests' Playwright can leave a loop running there.
"""

from __future__ import annotations

import asyncio
import re
import threading
import traceback
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from conftest import PASSWORD, csrf_of
from fastapi.routing import APIRoute


def _on_a_loop() -> bool:
    if threading.current_thread() is threading.main_thread():
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.fixture
def on_the_loop(runtime) -> Iterator[list[str]]:
    """Where each database connection taken on an event loop was taken from (the web
    layer's frames, innermost first)."""
    seen: list[str] = []

    def checkout(dbapi_conn, record, proxy) -> None:
        if _on_a_loop():
            ours = [f for f in traceback.extract_stack() if "/web/" in f.filename]
            if any(f.name == "lifespan" for f in ours):
                return  # the server's start-up, before it serves anything
            seen.append(
                " <- ".join(f"{f.filename.rsplit('/', 2)[-2]}/{f.name}" for f in ours[::-1])
            )

    sa.event.listen(runtime.db.engine, "checkout", checkout)
    yield seen
    sa.event.remove(runtime.db.engine, "checkout", checkout)


def test_the_watch_sees_a_read_made_on_an_event_loop(runtime, on_the_loop):
    """The control: without it, the test below could pass by never seeing anything."""

    async def read() -> None:
        with runtime.db.read_connection() as conn:
            conn.execute(sa.text("SELECT 1"))

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, read()).result()
    assert len(on_the_loop) == 1


def _api_routes(routes) -> Iterator[APIRoute]:
    """Every route, including those of included routers (FastAPI keeps those as routers
    of their own and matches them lazily; none is included with an extra prefix)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from _api_routes(route.original_router.routes)


def _path_values(route: APIRoute, case_id: int) -> dict[str, str]:
    names = re.findall(r"{(\w+)(?::\w+)?}", route.path)
    return {n: ("screen" if n == "event" else str(case_id)) for n in names}


def test_no_route_touches_the_database_on_the_event_loop(
    app, browser_for, users, refer, on_the_loop
):
    """Every route and method, called as a signed-in administrator (pages by the session
    cookie and a valid CSRF token, the API by a bearer token), with a real case's number
    for every id. Most answers are refusals or not-founds; what matters is that each
    request reaches the database (who is signed in is read first) and does it off the
    loop. Signing in and out, last, are in the run too."""
    case_id = refer()["case_id"]
    routes = list(_api_routes(app.routes))
    calls = [(m, r) for r in routes for m in sorted(r.methods - {"HEAD", "OPTIONS"})]
    calls.sort(key=lambda mr: mr[1].path in ("/login", "/logout"))  # those two last
    assert sum(m == "POST" and not r.path.startswith("/api") for m, r in calls) >= 12

    admin = browser_for("admin")
    csrf = csrf_of(admin.get("/").text)
    bearer = {"Authorization": f"Bearer {users['admin'].token}"}
    answered: Counter[int] = Counter()
    for method, route in calls:
        url = route.path.format(**_path_values(route, case_id))
        if url == "/login":
            admin.cookies.clear()  # sign in afresh, on a new form
            token = csrf_of(admin.get("/login").text)
            r = admin.post(
                "/login", data={"username": "admin", "password": PASSWORD, "csrf": token}
            )
        elif url.startswith("/api/"):
            body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
            r = admin.request(method, url, headers=bearer, **body)
        elif method == "GET":
            r = admin.get(url)
        else:
            r = admin.request(method, url, data={"csrf": csrf})
        assert r.status_code < 500, (method, url, r.status_code, r.text[:300])
        answered[r.status_code] += 1
    assert len(calls) > 60 and answered[200] > 10, answered
    assert not on_the_loop, "on the loop:\n" + "\n".join(sorted(set(on_the_loop)))
