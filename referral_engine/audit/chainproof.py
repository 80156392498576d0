"""The fast proof of an audit chain's links, and the worker process that runs it on a range.

Standard library only, on purpose: `audit verify` starts one worker process per core on a
long SQLite chain, each running this file as a script (`python -I chainproof.py`), and
a worker that had to import the application (SQLAlchemy, the models) would spend a
second of CPU on that before reading its first row. Running the file, rather than going
through `multiprocessing`, also keeps the worker from re-importing the parent's
`__main__` (the `referral-engine` console script imports the whole application); `-I`
keeps this file's folder and the user's site directory off `sys.path`.

The proof is all or nothing: any doubt (a link that does not follow, a hash that does not
match, a missing row, a checkpoint missing where due or not matching) says "not proven"
and nothing more. The caller then walks the chain row by row from where the doubt began
(`audit._walk`) to name the first broken row, so the reasons and the row named are the
walk's, whichever way the proof ran.

Besides the links, the proof checks what a dishonest database administrator could
change without touching a hash: every searchable column of each audit row (time, actor,
action, outcome, case, person) must say what its hashed record says, and each link that
carries a MAC (the last link of every sequencer batch, `link_mac`) must carry the one the
audit key gives, so links appended with plain SHA-256 by someone with only database
access are caught. The proof reports the last position sealed by such a MAC; the caller
requires the chain's last link to be one.

A worker reads one JSON job on stdin: the SQLite file, the range of chain positions
(`first`..`last`), the head the range starts from, the position by which the next
checkpoint is due there, the checkpoints in the range, each with whether its MAC was
genuine, and the audit key (through the pipe from its parent, never on a command line).
It writes JSON lines on stdout: `{"at": n}` as it goes, then `{"rows": n, "head": hex,
"sealed": n}` if the range is proven or `{"rows": null}` if not.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import json
import sqlite3
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

CHUNK = 50_000
# seq -> (the checkpoint's hash, the position by which the next one is due, MAC genuine?)
Marks = dict[int, tuple[bytes, int, bool]]

# The columns of a link and its audit row, in the order `prove` reads them.
ROW_COLUMNS = (
    "audit_chain.prev_hash", "audit_event.body", "audit_chain.hash", "audit_chain.mac",
    "audit_event.at", "audit_event.actor_id", "audit_event.action", "audit_event.outcome",
    "audit_event.case_id", "audit_event.person_id",
)  # fmt: skip
RANGE_QUERY = (
    f"SELECT {', '.join(ROW_COLUMNS)} FROM audit_chain "  # noqa: S608 - constants
    "LEFT OUTER JOIN audit_event ON audit_event.id = audit_chain.audit_id "
    "WHERE audit_chain.seq BETWEEN ? AND ? ORDER BY audit_chain.seq"
)
SEARCHABLE = ("at", "actor_id", "action", "outcome", "case_id", "person_id")


def link_mac(key: bytes, seq: int, head: bytes) -> bytes:
    """The MAC the sequencer puts on the last link of each batch: it binds the position
    and the head there (and so, through the hashes, every link before it) to the key."""
    return hmac.new(key, b"link:%d:" % seq + head, hashlib.sha256).digest()


def malformed(prev: Any, body: Any, stored: Any, mac: Any) -> str | None:
    """Why a link or its audit row cannot be read as one, in words; None if it can."""
    for name, value in (("body", body), ("prev_hash", prev), ("hash", stored)):
        if not isinstance(value, bytes | memoryview):
            return f"its {name} is stored as {type(value).__name__}, not bytes"
    if mac is not None and not isinstance(mac, bytes | memoryview):
        return f"its mac is stored as {type(mac).__name__}, not bytes"
    return None


def _as_time(value: Any) -> Any:
    """A stored or hashed time as an aware datetime, so SQLite's text and PostgreSQL's
    timestamps compare with the ISO time in the record; anything unreadable as itself."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def columns_disagree(body: bytes, columns: tuple[Any, ...]) -> str | None:
    """Which searchable column says something other than the hashed record, in words."""
    try:
        doc = json.loads(body)
    except (ValueError, TypeError):
        return "its hashed record is not readable JSON"
    if not isinstance(doc, dict):
        return "its hashed record is not a JSON object"
    actor = doc.get("actor")
    hashed = (
        doc.get("at"), actor.get("id") if isinstance(actor, dict) else None, doc.get("action"),
        doc.get("outcome"), doc.get("case_id"), doc.get("person_id"),
    )  # fmt: skip
    for name, column, value in zip(SEARCHABLE, columns, hashed, strict=True):
        if name == "at":
            if _as_time(column) != _as_time(value):
                return f"column at says {column!s} but the hashed record says {value!s}"
        elif column != value:
            return f"column {name} says {column!r} but the hashed record says {value!r}"
    return None


def prove(
    fetchmany: Callable[[int], list[Any]],
    start: int,
    head: bytes,
    due: int,
    marks: Marks,
    key: bytes,
    *,
    last: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, bytes, int] | None:
    """The position and head reached, and the last position sealed by a link MAC, if
    every link after `start` verifies, else None.

    `fetchmany` gives rows (`ROW_COLUMNS`) in chain order from position `start + 1`;
    `last`, when given, is the position the rows must reach exactly (a range), otherwise
    they run to the chain's end. Rows are read up to each checkpoint (or each position
    where one is due) and the checkpoint checked there.
    """
    # A copy of a fresh SHA-256 object skips the digest lookup and initialisation that
    # `hashlib.sha256()` pays each time: the loop over fetched rows took 1.41 µs a link
    # instead of 1.57 on the bench machine.
    fresh = hashlib.sha256().copy
    pos, end = start, last if last is not None else sys.maxsize
    pending = sorted(s for s in marks if s > start)
    m = 0
    sealed = start
    while pos < end:
        while m < len(pending) and pending[m] <= pos:
            m += 1
        mark = pending[m] if m < len(pending) else due
        want = min(mark, due, pos + CHUNK, end) - pos
        if want <= 0:
            return None  # a checkpoint was due at or before here
        batch = fetchmany(want)
        at = pos
        try:
            for prev, body, stored, mac, *columns in batch:
                at += 1
                if prev != head or type(body) is not bytes:
                    return None
                link = fresh()
                link.update(head)
                link.update(body)
                head = link.digest()
                if head != stored:
                    return None
                if mac is not None:
                    if not hmac.compare_digest(mac, link_mac(key, at, head)):
                        return None
                    sealed = at
                if columns_disagree(body, columns):
                    return None
        except TypeError:  # values that are not bytes
            return None
        pos += len(batch)
        if len(batch) < want:  # the end of the chain
            break
        if pos in marks:
            cp_hash, cp_next, genuine = marks[pos]
            if not genuine or cp_hash != head:
                return None
            due = cp_next
        elif pos >= due:
            return None  # a checkpoint was due here and there is none
        if progress:
            progress(pos)
    if last is not None and pos != last:
        return None  # links are missing from the range
    return pos, head, sealed


def sqlite_uri(path: str) -> str:
    """A read-only URI for the file: a worker must never write to the audit tables."""
    return f"file:{quote(path)}?mode=ro"


def prove_range(
    path: str,
    first: int,
    last: int,
    head: bytes,
    due: int,
    marks: Marks,
    key: bytes,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, bytes, int] | None:
    """`prove` over chain positions first..last of the SQLite file, on a connection of its
    own (one read snapshot for the range)."""
    conn = sqlite3.connect(sqlite_uri(path), uri=True, timeout=30)
    try:
        cur = conn.execute(RANGE_QUERY, (first, last))
        try:
            return prove(
                cur.fetchmany, first - 1, head, due, marks, key, last=last, progress=progress
            )
        finally:
            cur.close()
    finally:
        conn.close()


def _report(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def main() -> None:
    job = json.load(sys.stdin)
    marks = {s: (bytes.fromhex(h), n, g) for s, h, n, g in job["marks"]}
    every = max(job["last"] - job["first"] + 1, 1) // 20 or 1
    told = [job["first"] - 1]

    def progress(pos: int) -> None:
        if pos - told[0] >= every:
            told[0] = pos
            _report({"at": pos})

    gc.disable()  # the walk makes millions of short-lived tuples and no cycles
    got = prove_range(
        job["path"], job["first"], job["last"], bytes.fromhex(job["head"]), job["due"],
        marks, bytes.fromhex(job["key"]), progress,
    )  # fmt: skip
    _report(
        {"rows": got[0] - job["first"] + 1, "head": got[1].hex(), "sealed": got[2]}
        if got
        else {"rows": None}
    )


if __name__ == "__main__":
    main()
