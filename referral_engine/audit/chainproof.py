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

A worker reads one JSON job on stdin: the SQLite file, the range of chain positions
(`first`..`last`), the head the range starts from, the position by which the next
checkpoint is due there, and the checkpoints in the range, each with whether its MAC was
genuine (the parent checks the MACs, so the audit key never leaves it). It writes JSON
lines on stdout: `{"at": n}` as it goes, then `{"rows": n, "head": hex}` if the range is
proven or `{"rows": null}` if not.
"""

from __future__ import annotations

import gc
import hashlib
import json
import sqlite3
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

CHUNK = 50_000
# seq -> (the checkpoint's hash, the position by which the next one is due, MAC genuine?)
Marks = dict[int, tuple[bytes, int, bool]]

RANGE_QUERY = (
    "SELECT audit_chain.prev_hash, audit_event.body, audit_chain.hash FROM audit_chain "
    "LEFT OUTER JOIN audit_event ON audit_event.id = audit_chain.audit_id "
    "WHERE audit_chain.seq BETWEEN ? AND ? ORDER BY audit_chain.seq"
)


def prove(
    fetchmany: Callable[[int], list[Any]],
    start: int,
    head: bytes,
    due: int,
    marks: Marks,
    *,
    last: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, bytes] | None:
    """The position and head reached if every link after `start` verifies, else None.

    `fetchmany` gives rows (previous hash, body, hash) in chain order from position
    `start + 1`; `last`, when given, is the position the rows must reach exactly (a
    range), otherwise they run to the chain's end. Rows are read up to each checkpoint
    (or each position where one is due) and the checkpoint checked there.
    """
    # A copy of a fresh SHA-256 object skips the digest lookup and initialisation that
    # `hashlib.sha256()` pays each time: the loop over fetched rows took 1.41 µs a link
    # instead of 1.57 on the bench machine.
    fresh = hashlib.sha256().copy
    pos, end = start, last if last is not None else sys.maxsize
    pending = sorted(s for s in marks if s > start)
    m = 0
    while pos < end:
        while m < len(pending) and pending[m] <= pos:
            m += 1
        mark = pending[m] if m < len(pending) else due
        want = min(mark, due, pos + CHUNK, end) - pos
        if want <= 0:
            return None  # a checkpoint was due at or before here
        batch = fetchmany(want)
        try:
            for prev, body, stored in batch:
                if prev != head:
                    return None
                link = fresh()
                link.update(head)
                link.update(body)
                head = link.digest()
                if head != stored:
                    return None
        except TypeError:  # a missing body (None), or values that are not bytes
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
    return pos, head


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
    progress: Callable[[int], None] | None = None,
) -> tuple[int, bytes] | None:
    """`prove` over chain positions first..last of the SQLite file, on a connection of its
    own (one read snapshot for the range)."""
    conn = sqlite3.connect(sqlite_uri(path), uri=True, timeout=30)
    try:
        cur = conn.execute(RANGE_QUERY, (first, last))
        try:
            return prove(cur.fetchmany, first - 1, head, due, marks, last=last, progress=progress)
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
        marks, progress,
    )  # fmt: skip
    _report({"rows": got[0] - job["first"] + 1, "head": got[1].hex()} if got else {"rows": None})


if __name__ == "__main__":
    main()
