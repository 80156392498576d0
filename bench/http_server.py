"""The two servers of bench/http_events.py, in the same uvicorn settings.

    python bench/http_server.py product|minimal PORT DB_PATH

`product` is the real app (`web.app.create_app`) on DB_PATH; `minimal` is the least a
FastAPI endpoint for the same request can do: validate the same body and insert one row
in its own transaction, on SQLite in WAL mode with synchronous FULL.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: str = Field(min_length=1, max_length=60)
    data: dict[str, Any] = {}
    expected_version: int = Field(ge=0)


def minimal_app(path: str) -> FastAPI:
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute(
        "CREATE TABLE IF NOT EXISTS event (id INTEGER PRIMARY KEY, case_id INTEGER, "
        "event TEXT, version INTEGER, data TEXT)"
    )
    setup.commit()
    setup.close()
    local = threading.local()

    def conn() -> sqlite3.Connection:
        c = getattr(local, "conn", None)
        if c is None:
            c = local.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
            c.execute("PRAGMA synchronous=FULL")
        return c

    app = FastAPI()

    @app.post("/api/cases/{case_id}/events")
    def fire(case_id: int, body: EventIn) -> dict[str, Any]:
        c = conn()
        c.execute("BEGIN IMMEDIATE")
        c.execute(
            "INSERT INTO event (case_id, event, version, data) VALUES (?,?,?,?)",
            (case_id, body.event, body.expected_version + 1, str(body.data)),
        )
        c.execute("COMMIT")
        return {"case_id": case_id, "event": body.event, "version": body.expected_version + 1}

    return app


def main() -> None:
    kind, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if kind == "product":
        from web.app import create_app

        app = create_app()
    else:
        app = minimal_app(path)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
