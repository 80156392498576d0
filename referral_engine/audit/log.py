"""The audit log: append-only rows, a hash chain over them, keyed checkpoints.

Writers only insert (an `audit_event` row and an `audit_pending` marker); they never
touch the chain head, so audited reads do not queue behind one lock. The sequencer
(`link_pending`) takes pending rows in the order it finds them and links each into
`audit_chain`: hash = SHA-256(previous hash || the row's canonical JSON bytes), the bytes
stored exactly as hashed. On SQLite it runs inside each writing transaction (there is one
writer anyway); on PostgreSQL a background task of `serve` runs it every second, one
sequencer at a time by an advisory lock.

Every N links, and whenever `audit verify` seals, a checkpoint is written: an HMAC keyed
with REFERRAL_ENGINE_AUDIT_KEY (never stored in the database) over the position, the head
hash there, and the position by which the next checkpoint must exist. A chain rewritten
from scratch does not match the checkpoints, and deleting the checkpoints after the
rewrite breaks the promise the last genuine one made. Sealing signs a head only after
re-checking the links since the last checkpoint, so it never attests a forged tail.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import hmac
import json
import logging
import os
import selectors
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Session

from referral_engine.access.rules import Actor
from referral_engine.audit import chainproof
from referral_engine.audit.chainproof import columns_disagree, link_mac, malformed
from referral_engine.audit.guards import missing_guards
from referral_engine.audit.heads import Head
from referral_engine.clock import Clock
from referral_engine.storage.columns import utcnow
from referral_engine.storage.db import Statement
from referral_engine.storage.models import (
    AuditChain,
    AuditCheckpoint,
    AuditEvent,
    AuditPending,
    CaseHistory,
)

log = logging.getLogger(__name__)

GENESIS = bytes(32)
SEQUENCER_LOCK_ID = 0x5EF_A0D17  # pg advisory lock key: one sequencer at a time
BATCH = 5000

_event = AuditEvent.__table__
_pending = AuditPending.__table__
_chain = AuditChain.__table__
_checkpoint = AuditCheckpoint.__table__
_history = CaseHistory.__table__

# What every audited action runs, compiled once (see `Statement`).
_INSERT_EVENT = Statement(
    _event.insert()
    .values({c: sa.bindparam(c) for c in ("at", "actor_id", "action", "outcome", "case_id",
                                          "person_id", "body")})
    .returning(_event.c.id)
)  # fmt: skip
_INSERT_PENDING = Statement(_pending.insert().values(audit_id=sa.bindparam("audit_id")))
_INSERT_LINK = Statement(
    _chain.insert().values(
        {c: sa.bindparam(c) for c in ("seq", "audit_id", "prev_hash", "hash", "mac")}
    )
)
_HEAD = Statement(sa.select(_chain.c.seq, _chain.c.hash).order_by(_chain.c.seq.desc()).limit(1))


def canonical(obj: Any) -> bytes:
    """The one serialisation that is hashed and stored."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


def link_hash(prev: bytes, body: bytes) -> bytes:
    return hashlib.sha256(prev + body).digest()


def checkpoint_mac(key: bytes, seq: int, next_seq: int, head: bytes) -> bytes:
    return hmac.new(key, f"{seq}:{next_seq}:".encode() + head, hashlib.sha256).digest()


def next_checkpoint(seq: int, every: int) -> int:
    return (seq // every + 1) * every


class AuditLog:
    """Writes audit rows. On SQLite each row is linked as it is written (the transaction
    already holds the only write lock); on PostgreSQL it is queued for the sequencer."""

    def __init__(
        self, key: bytes, checkpoint_every: int, *, link_inline: bool, clock: Clock | None = None
    ):
        self.clock = clock or Clock()
        self.key = key
        self.checkpoint_every = checkpoint_every
        self.link_inline = link_inline

    def record(
        self,
        session: Session | Connection,
        actor: Actor,
        action: str,
        *,
        outcome: str = "allowed",
        target: str | None = None,
        summary: dict[str, Any] | None = None,
        case_id: int | None = None,
        person_id: int | None = None,
        at: datetime | None = None,
    ) -> int:
        """Append one audited access decision. `action` is `source:subject:action`."""
        at = (at or self.clock.now()).astimezone(UTC)
        body = canonical(
            {
                "uuid": uuid.uuid4().hex,
                "at": at.isoformat(),
                "actor": actor.describe(),
                "request_id": actor.request_id,
                "action": action,
                "target": target,
                "outcome": outcome,
                "case_id": case_id,
                "person_id": person_id,
                "summary": summary or {},
            }
        )
        conn = session.connection() if isinstance(session, Session) else session
        audit_id = _INSERT_EVENT.scalar(
            conn,
            {
                "at": at,
                "actor_id": actor.user_id,
                "action": action,
                "outcome": outcome,
                "case_id": case_id,
                "person_id": person_id,
                "body": body,
            },
        )
        if self.link_inline:
            seq, head = _head(conn)
            self._append(conn, [(audit_id, body)], seq, head)
        else:
            _INSERT_PENDING.run(conn, {"audit_id": audit_id})
        return audit_id

    def _append(
        self, conn: Connection, rows: list[tuple[int, bytes]], seq: int, head: bytes
    ) -> tuple[int, bytes]:
        links, checkpoints = [], []
        for audit_id, body in rows:
            seq += 1
            prev, head = head, link_hash(head, body)
            links.append(
                {"seq": seq, "audit_id": audit_id, "prev_hash": prev, "hash": head, "mac": None}
            )
            if seq % self.checkpoint_every == 0:
                checkpoints.append(_checkpoint_row(self.key, seq, head, self.checkpoint_every))
        # The batch's last link carries the key's MAC: it vouches for every link before it.
        links[-1]["mac"] = link_mac(self.key, seq, head)
        if len(links) == 1:
            _INSERT_LINK.run(conn, links[0])
        else:
            conn.execute(_chain.insert(), links)
        if checkpoints:
            conn.execute(_checkpoint.insert(), checkpoints)
        return seq, head

    def link_pending(self, conn: Connection, *, seal: bool = False) -> int:
        """Link every pending row into the chain; returns how many were linked.

        The caller owns the transaction and, on PostgreSQL, the sequencer lock (see
        `run_sequencer`), so two sequencers never extend the head at once.
        """
        linked = 0
        seq, head = _head(conn)
        while True:
            query = sa.select(_pending.c.audit_id).order_by(_pending.c.audit_id).limit(BATCH)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = [r[0] for r in conn.execute(query)]
            if not ids:
                break
            # A marker for a row already linked, or for no row at all, is dropped: the
            # verifier's row count still notices rows added or removed outside the log.
            rows = conn.execute(
                sa.select(_event.c.id, _event.c.body)
                .where(
                    _event.c.id.in_(ids),
                    ~sa.exists().where(_chain.c.audit_id == _event.c.id),
                )
                .order_by(_event.c.id)
            ).all()
            if rows:
                seq, head = self._append(conn, [(i, bytes(b)) for i, b in rows], seq, head)
            conn.execute(_pending.delete().where(_pending.c.audit_id.in_(ids)))
            linked += len(rows)
            if len(ids) < BATCH:
                break
        if seal and seq and self._tail_intact(conn, seq):
            done = conn.execute(
                sa.select(_checkpoint.c.seq).where(_checkpoint.c.seq == seq)
            ).first()
            if not done:
                conn.execute(
                    _checkpoint.insert(),
                    [_checkpoint_row(self.key, seq, head, self.checkpoint_every)],
                )
        return linked

    def _tail_intact(self, conn: Connection, seq: int) -> bool:
        """Whether the links after the last checkpoint (at most N) still verify from it."""
        cp = conn.execute(
            sa.select(_checkpoint).where(_checkpoint.c.seq <= seq).order_by(
                _checkpoint.c.seq.desc()
            ).limit(1)
        ).first()  # fmt: skip
        start, head = 0, GENESIS
        if cp is not None:
            mac = checkpoint_mac(self.key, cp.seq, cp.next_seq, bytes(cp.hash))
            if not hmac.compare_digest(mac, bytes(cp.mac)):
                return False
            start, head = cp.seq, bytes(cp.hash)
        links = conn.execute(
            sa.select(_chain.c.seq, _chain.c.prev_hash, _chain.c.hash, _event.c.body)
            .select_from(_chain.outerjoin(_event, _event.c.id == _chain.c.audit_id))
            .where(_chain.c.seq > start, _chain.c.seq <= seq)
            .order_by(_chain.c.seq)
        ).all()
        for expected, link in enumerate(links, start=start + 1):
            if link.seq != expected or link.body is None or bytes(link.prev_hash) != head:
                return False
            head = link_hash(head, bytes(link.body))
            if head != bytes(link.hash):
                return False
        return len(links) == seq - start

    def run_sequencer(self, engine: sa.Engine, *, seal: bool = False) -> int | None:
        """One sequencer pass in its own transaction; None if another sequencer is busy."""
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                got = conn.execute(
                    sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SEQUENCER_LOCK_ID}
                ).scalar_one()
                if not got:
                    return None
            return self.link_pending(conn, seal=seal)

    def current_head(self, conn: Connection) -> Head:
        """The chain's last link as a head signed now (seq 0 and the genesis if empty)."""
        seq, head = _head(conn)
        return Head.sign(self.key, seq, head, self.clock.now().astimezone(UTC).isoformat())

    def position(self, engine: sa.Engine) -> tuple[int, int]:
        """(links, pending rows): what a head timer compares to know the chain moved."""
        with engine.connect() as conn:
            seq, _ = _head(conn)
            pending = conn.execute(sa.select(sa.func.count()).select_from(_pending)).scalar_one()
        return seq, pending

    def signed_head(self, engine: sa.Engine) -> Head:
        """Seal what is pending, then sign the head: what `audit head` prints."""
        self.seal(engine)
        with engine.connect() as conn:
            return self.current_head(conn)

    def seal(self, engine: sa.Engine) -> int:
        """Link everything pending and checkpoint the head (waits for a busy sequencer)."""
        while True:
            linked = self.run_sequencer(engine, seal=True)
            if linked is not None:
                return linked
            time.sleep(0.05)


def _head(conn: Connection) -> tuple[int, bytes]:
    row = _HEAD.first(conn)
    return (row.seq, bytes(row.hash)) if row else (0, GENESIS)


def _checkpoint_row(key: bytes, seq: int, head: bytes, every: int) -> dict[str, Any]:
    following = next_checkpoint(seq, every)
    return {
        "seq": seq,
        "next_seq": following,
        "hash": head,
        "mac": checkpoint_mac(key, seq, following, head),
        "at": utcnow(),
    }


# --- verification ----------------------------------------------------------------------


@dataclass
class Verification:
    ok: bool
    rows: int = 0
    checkpoints: int = 0
    pending: int = 0
    first_broken_seq: int | None = None
    first_broken_audit_id: int | None = None
    reason: str | None = None
    problems: list[str] = field(default_factory=list)
    kept_head: int | None = None  # the position of the kept head checked against, if any
    sealed: int = 0  # the last position whose link carries the audit key's MAC

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "checkpoints": self.checkpoints,
            "pending": self.pending,
            "first_broken_seq": self.first_broken_seq,
            "first_broken_audit_id": self.first_broken_audit_id,
            "reason": self.reason,
            "kept_head": self.kept_head,
        }


def _broken(v: Verification, seq: int | None, audit_id: int | None, reason: str) -> Verification:
    v.ok = False
    v.first_broken_seq, v.first_broken_audit_id, v.reason = seq, audit_id, reason
    return v


PARALLEL_MIN_ROWS = 200_000  # below this, starting worker processes costs more than it saves
MAX_WORKERS = 8


def verify(
    engine: sa.Engine,
    key: bytes,
    checkpoint_every: int,
    *,
    deep: bool = False,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
    parallel_min_rows: int = PARALLEL_MIN_ROWS,
    head: Head | None = None,
) -> Verification:
    """Walk the whole chain; name the first broken row, then check every checkpoint.

    Every row's searchable columns (time, actor, action, outcome, case, person) must say
    what its hashed bytes say, the chain's last link must carry the audit key's MAC, the
    append-only triggers must be in place, and every case-history entry must have its
    audit row. With `head` (a kept head, `audit verify --head`), the chain must reach it
    and agree with it. (`deep` is accepted for old callers; it changes nothing now.)

    A SQLite chain of at least `parallel_min_rows` links is proved by `workers` processes
    at once (default: one per usable core, at most `MAX_WORKERS`), each over its own range
    (see `_prove_parallel`); `workers=1` keeps it in this process. PostgreSQL, deep
    verification and short chains always walk here.
    """
    v = Verification(ok=True)
    # One consistent snapshot for the counts and the walk; on SQLite a reader that does
    # not hold the write lock, so verifying a long chain blocks no one.
    options = (
        {"isolation_level": "REPEATABLE READ"}
        if engine.dialect.name == "postgresql"
        else {"read_only": True}
    )
    with engine.connect().execution_options(**options) as conn:
        total_events = conn.execute(sa.select(sa.func.count()).select_from(_event)).scalar_one()
        v.pending = conn.execute(sa.select(sa.func.count()).select_from(_pending)).scalar_one()
        checkpoints = {
            r.seq: (bytes(r.hash), r.next_seq, bytes(r.mac))
            for r in conn.execute(
                sa.select(
                    _checkpoint.c.seq, _checkpoint.c.hash, _checkpoint.c.next_seq, _checkpoint.c.mac
                )
            )
        }
        v.checkpoints = len(checkpoints)
        if workers is None:
            workers = min(_usable_cores(), MAX_WORKERS)
        parallel = (workers, parallel_min_rows) if workers > 1 else None
        result = _walk_chain(conn, key, checkpoints, checkpoint_every, deep, v, progress, parallel)
        if not result.ok:
            return result
        if v.rows + v.pending != total_events:
            return _broken(
                v, None, None,
                f"{total_events} audit rows but {v.rows} linked and {v.pending} pending: "
                "rows were added or removed outside the log",
            )  # fmt: skip
        if head is not None and not _agrees_with_head(conn, key, head, v):
            return v
        if v.sealed < v.rows:  # after the head check, which names a cut-off tail better
            return _broken(
                v, v.sealed + 1, None,
                f"links {v.sealed + 1} to {v.rows} carry no MAC under the audit key: they "
                "were appended outside the application, or the links after them were cut off",
            )  # fmt: skip
        if missing := missing_guards(conn):
            return _broken(
                v, None, None,
                f"the append-only triggers {', '.join(missing)} are missing or disabled: "
                "someone with database access removed the guard on the audit tables",
            )  # fmt: skip
        if orphan := _history_without_audit(conn):
            return _broken(
                v, None, None,
                f"case history entry {orphan.id} (case {orphan.case_id}, version "
                f"{orphan.version}) has no audit row: it was written outside the application "
                "or its audit row was removed",
            )  # fmt: skip
    return v


def _agrees_with_head(conn: Connection, key: bytes, head: Head, v: Verification) -> bool:
    """Whether the (already proven) chain reaches the kept head and has its hash there."""
    v.kept_head = head.seq
    if not head.genuine(key):
        _broken(
            v, None, None,
            f"the kept head of {head.at} (link {head.seq}) is not signed by the audit key",
        )  # fmt: skip
        return False
    if head.seq > v.rows:
        first = v.rows + 1
        missing = f"link {first}" if first == head.seq else f"links {first} to {head.seq}"
        _broken(
            v, first, None,
            f"the chain has {v.rows} links but the head kept at {head.at} says it had "
            f"{head.seq}: {missing} are missing (cut from the end of the log)",
        )  # fmt: skip
        return False
    if head.seq == 0:
        stored, audit_id = GENESIS, None
    else:
        row = conn.execute(
            sa.select(_chain.c.hash, _chain.c.audit_id).where(_chain.c.seq == head.seq)
        ).one()
        stored, audit_id = bytes(row.hash), row.audit_id
    if stored.hex() != head.hash:
        _broken(
            v, head.seq, audit_id,
            f"link {head.seq} differs from the head kept at {head.at}: the chain was "
            "rewritten at or before it",
        )  # fmt: skip
        return False
    return True


BULK_LOAD = "cli:demo:bulk_load"  # `demo --scale`: one audit row for a batch of cases


def _history_without_audit(conn: Connection) -> Any:
    """The first case-history entry with no allowed audit row for its case at its time
    (the engine writes both in one transaction, with the same time), leaving out cases
    a bulk load's audit row names by their id range. Both are verified columns and
    verified bodies by now."""
    covered = [
        sa.and_(_history.c.case_id >= low, _history.c.case_id <= high)
        for low, high in _bulk_loaded(conn)
    ]
    return conn.execute(
        sa.select(_history.c.id, _history.c.case_id, _history.c.version)
        .where(
            ~sa.exists().where(
                _event.c.case_id == _history.c.case_id,
                _event.c.at == _history.c.at,
                _event.c.outcome == "allowed",
            ),
            *([~sa.or_(*covered)] if covered else []),
        )
        .order_by(_history.c.id)
        .limit(1)
    ).first()


def _bulk_loaded(conn: Connection) -> list[tuple[int, int]]:
    """The case id ranges the bulk loads' audit rows name, contiguous ones merged."""
    ranges = []
    for (body,) in conn.execute(
        sa.select(_event.c.body).where(_event.c.action == BULK_LOAD, _event.c.outcome == "allowed")
    ):
        ids = json.loads(bytes(body)).get("summary", {}).get("case_ids")
        if isinstance(ids, list) and len(ids) == 2 and all(isinstance(i, int) for i in ids):
            ranges.append((ids[0], ids[1]))
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(high, merged[-1][1]))
        else:
            merged.append((low, high))
    return merged


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _Resume(NamedTuple):
    """Where the row-by-row walk starts when the fast proof has a doubt: after position
    `seq`, from the proven `head`, with the next checkpoint due by `due`."""

    seq: int
    head: bytes
    due: int


def _walk_chain(
    conn: Connection,
    key: bytes,
    checkpoints: dict[int, tuple[bytes, int, bytes]],
    first_due: int,
    deep: bool,
    v: Verification,
    progress: Callable[[int], None] | None,
    parallel: tuple[int, int] | None = None,
) -> Verification:
    columns = [_chain.c.seq, _chain.c.audit_id, *_proof_columns()]
    query = (
        sa.select(*columns)
        .select_from(_chain.outerjoin(_event, _event.c.id == _chain.c.audit_id))
        .order_by(_chain.c.seq)
    )
    if not deep:
        proof = _prove(conn, key, checkpoints, first_due, progress, parallel)
        if not isinstance(proof, _Resume):
            v.rows, v.sealed = proof
            return v
        # Something is wrong: walk again, row by row from the first link the proof could
        # not vouch for (everything before it is proven), to name the first broken one.
        rest = _driver_batches(conn, query.where(_chain.c.seq > proof.seq))
        return _walk(rest, key, checkpoints, proof.due, deep, v, progress, proof)
    rows = _driver_batches(conn, query)
    try:
        return _walk(rows, key, checkpoints, first_due, deep, v, progress)
    finally:
        rows.close()


def _proof_columns() -> list[sa.ColumnElement[Any]]:
    """`chainproof.ROW_COLUMNS` as SQLAlchemy columns (the same names, the same order)."""
    tables = {"audit_chain": _chain, "audit_event": _event}
    return [
        tables[table].c[name]
        for table, name in (column.split(".") for column in chainproof.ROW_COLUMNS)
    ]


def _prove(
    conn: Connection,
    key: bytes,
    checkpoints: dict[int, tuple[bytes, int, bytes]],
    due: int,
    progress: Callable[[int], None] | None,
    parallel: tuple[int, int] | None,
) -> tuple[int, int] | _Resume:
    """The number of links if the whole chain and its checkpoints verify, else where to
    start walking row by row (see `chainproof.prove`)."""
    marks = {
        seq: (cp_hash, cp_next, _genuine(key, seq, cp_next, cp_hash, mac))
        for seq, (cp_hash, cp_next, mac) in checkpoints.items()
    }
    path = _sqlite_file(conn) if parallel and conn.dialect.name == "sqlite" else None
    if path and parallel:
        proved = _prove_parallel(conn, path, key, marks, due, progress, *parallel)
        if proved is not None:
            return proved
    query = (
        sa.select(*_proof_columns())
        .select_from(_chain.outerjoin(_event, _event.c.id == _chain.c.audit_id))
        .order_by(_chain.c.seq)
    )
    with contextlib.closing(_driver_batches(conn, query, size=None)) as cursors:
        cursor = next(cursors)
        got = chainproof.prove(cursor.fetchmany, 0, GENESIS, due, marks, key, progress=progress)
    if got is None or any(seq > got[0] for seq in marks):
        return _Resume(0, GENESIS, due)
    return got[0], got[2]


def _genuine(key: bytes, seq: int, next_seq: int, head: bytes, mac: bytes) -> bool:
    return hmac.compare_digest(mac, checkpoint_mac(key, seq, next_seq, head))


def _sqlite_file(conn: Connection) -> str | None:
    """The SQLite file that worker processes can open themselves, if there is one."""
    url = conn.engine.url
    if conn.dialect.name != "sqlite" or url.query or not sys.executable or os.name != "posix":
        return None  # (the workers' pipes are read with selectors: POSIX only)
    if not url.database or url.database == ":memory:":
        return None
    return os.path.abspath(url.database)


def _prove_parallel(
    conn: Connection,
    path: str,
    key: bytes,
    marks: chainproof.Marks,
    first_due: int,
    progress: Callable[[int], None] | None,
    workers: int,
    min_rows: int,
) -> tuple[int, int] | _Resume | None:
    """The fast proof in `workers` processes, each over its own range of positions.

    The length of the chain is fixed here, in this connection's snapshot: positions run
    from 1 to the largest seq, and each worker must find exactly the links of its range
    (seq is the primary key, so a range with all its rows has no gaps), in a snapshot of
    its own which, the chain being append-only, holds the same links. A range after the
    first starts from its first link's stored previous hash, and the proof holds only if
    that is the head the range before it ended on; the checkpoint due at each range's
    start follows from the checkpoints before it, all of which the earlier ranges prove.
    So the ranges together prove what one walk from the genesis would, and where they do
    not, the walk starts at the first range that failed. None: the chain is too short to
    split, not numbered from 1, or no worker could start (the walk here says why).
    """
    # Two subqueries: SQLite reads min() or max() alone off the index, both at once by a scan.
    lo, hi = conn.execute(
        sa.select(
            sa.select(sa.func.min(_chain.c.seq)).scalar_subquery(),
            sa.select(sa.func.max(_chain.c.seq)).scalar_subquery(),
        )
    ).one()
    if lo != 1 or hi < max(min_rows, 2):
        return None
    ranges = _split(hi, workers)
    firsts = [first for first, _ in ranges]
    query = sa.select(_chain.c.seq, _chain.c.prev_hash).where(_chain.c.seq.in_(firsts))
    stored = {seq: prev for seq, prev in conn.execute(query)}
    heads = [GENESIS] + [stored.get(first) for first in firsts[1:]]
    ordered = sorted(marks)
    dues = [_due_at(first, ordered, marks, first_due) for first in firsts]
    jobs = [
        {
            "path": path, "first": first, "last": last, "head": head.hex(), "due": due,
            "key": key.hex(),
            "marks": [[s, marks[s][0].hex(), marks[s][1], marks[s][2]]
                      for s in ordered if first <= s <= last],
        }
        # A range whose first link or its previous hash is missing is not worth a worker.
        if isinstance(head, bytes) else None
        for (first, last), head, due in zip(ranges, heads, dues, strict=True)
    ]  # fmt: skip
    ends = _run_workers(jobs, progress)
    if ends is None:
        return None
    proven = GENESIS
    for (first, last), head, due, end in zip(ranges, heads, dues, ends, strict=True):
        if end is None or head != proven or end[0] != last - first + 1:
            return _Resume(first - 1, proven, due)
        proven = end[1]
    if ordered and ordered[-1] > hi:
        # Checkpoints past the end: the walk from the end reports them.
        return _Resume(hi, proven, _due_at(hi + 1, ordered, marks, first_due))
    return hi, max(end[2] for end in ends if end is not None)


def _split(rows: int, workers: int) -> list[tuple[int, int]]:
    """Positions 1..rows in `workers` ranges of (nearly) equal length."""
    n = min(workers, rows)
    bounds = [rows * i // n for i in range(n + 1)]
    return [(bounds[i] + 1, bounds[i + 1]) for i in range(n)]


def _due_at(first: int, ordered: list[int], marks: chainproof.Marks, first_due: int) -> int:
    """The position by which a checkpoint is due when a walk reaches `first`: what the
    last checkpoint before it promised, or the policy's first one if there is none."""
    i = bisect.bisect_left(ordered, first)
    return marks[ordered[i - 1]][1] if i else first_due


def _run_workers(
    jobs: list[dict[str, Any] | None], progress: Callable[[int], None] | None
) -> list[tuple[int, bytes, int] | None] | None:
    """Each job's (rows, head) from a worker process of its own, or None for a range not
    proven (no job, or its worker failed); None if no worker could be started."""
    started = [job for job in jobs if job is not None]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in started:
            procs.append(
                subprocess.Popen(  # noqa: S603 - this interpreter, running our own file
                    [sys.executable, "-I", chainproof.__file__],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    bufsize=0,
                )
            )
    except OSError:
        log.warning("audit verify: could not start worker processes; verifying in one")
        _stop(procs)
        return None
    try:
        for proc, job in zip(procs, started, strict=True):
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(json.dumps(job).encode())
                proc.stdin.close()
        ends = iter(_collect(procs, started, progress))
    finally:
        _stop(procs)
    return [next(ends) if job is not None else None for job in jobs]


def _collect(
    procs: list[subprocess.Popen[bytes]],
    jobs: list[dict[str, Any]],
    progress: Callable[[int], None] | None,
) -> list[tuple[int, bytes, int] | None]:
    """Read the workers' JSON lines as they come: progress, then each one's result."""
    done = [job["first"] - 1 for job in jobs]
    ends: list[tuple[int, bytes, int] | None] = [None] * len(jobs)
    partial = [b""] * len(jobs)
    garbled: set[int] = set()
    with selectors.DefaultSelector() as sel:
        for i, proc in enumerate(procs):
            assert proc.stdout is not None
            sel.register(proc.stdout, selectors.EVENT_READ, i)
        while sel.get_map():
            for sk, _ in sel.select():
                i = sk.data
                chunk = os.read(sk.fd, 65536)
                if not chunk:
                    sel.unregister(sk.fileobj)
                    continue
                *lines, partial[i] = (partial[i] + chunk).split(b"\n")
                for line in lines:
                    try:
                        msg = json.loads(line)
                    except ValueError:
                        garbled.add(i)
                        continue
                    if "at" in msg:
                        done[i] = msg["at"]
                    elif msg.get("rows") is not None:
                        ends[i] = (msg["rows"], bytes.fromhex(msg["head"]), msg["sealed"])
                        done[i] = jobs[i]["last"]
                if progress and lines:
                    progress(sum(d - job["first"] + 1 for d, job in zip(done, jobs, strict=True)))
    for i, proc in enumerate(procs):
        if proc.wait() != 0 or i in garbled:
            log.warning("audit verify: the worker for links %s..%s failed (exit %s)",
                        jobs[i]["first"], jobs[i]["last"], proc.returncode)  # fmt: skip
            ends[i] = None
    return ends


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _driver_batches(conn: Connection, query: sa.Select, size: int | None = 50_000) -> Iterator[Any]:
    """The walk's rows as plain tuples from the driver's own cursor, in the caller's
    transaction. Through SQLAlchemy's rows the walk did about 80,000 rows a second; the
    driver's tuples leave only the hashing. PostgreSQL streams from a server-side cursor,
    so memory stays flat however long the chain."""
    sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    driver = conn.connection.driver_connection
    cur = driver.cursor(name="audit_walk") if conn.dialect.name == "postgresql" else driver.cursor()
    try:
        cur.execute(sql)
        if size is None:  # the caller fetches
            yield cur
            return
        while batch := cur.fetchmany(size):
            yield batch
    finally:
        cur.close()


def _walk(
    batches: Any,
    key: bytes,
    checkpoints: dict[int, tuple[bytes, int, bytes]],
    due: int,
    deep: bool,
    v: Verification,
    progress: Callable[[int], None] | None,
    start: _Resume | None = None,
) -> Verification:
    """`due` is the position by which the next checkpoint must exist; `start`, the proven
    position and head the rows follow on from (the genesis if None). Each row is
    (seq, audit_id, *`chainproof.ROW_COLUMNS`); every check `chainproof.prove` makes is
    made here too, with the row it failed on named. (`deep` is kept for callers: every
    verification now compares the searchable columns.)"""
    expected_seq, head = (start.seq, start.head) if start else (0, GENESIS)
    sealed = expected_seq
    sha = hashlib.sha256
    for part in batches:
        for row in part:
            seq, audit_id, prev, body, stored, mac = row[:6]
            expected_seq += 1
            if seq != expected_seq:
                return _broken(v, expected_seq, None, f"chain link {expected_seq} is missing")
            if body is None:
                return _broken(v, seq, audit_id, f"audit row {audit_id} is missing")
            if reason := malformed(prev, body, stored, mac):
                return _broken(v, seq, audit_id, f"audit row {audit_id} is malformed: {reason}")
            if bytes(prev) != head:
                return _broken(v, seq, audit_id, "the link does not follow the previous one")
            head = sha(head + bytes(body)).digest()
            if head != bytes(stored):
                return _broken(v, seq, audit_id, f"audit row {audit_id} was altered")
            if mac is not None:
                if not hmac.compare_digest(bytes(mac), link_mac(key, seq, head)):
                    return _broken(
                        v, seq, audit_id,
                        f"link {seq} carries a MAC the audit key did not make: "
                        "the chain was re-linked outside the application",
                    )  # fmt: skip
                sealed = seq
            if reason := columns_disagree(bytes(body), tuple(row[6:])):
                return _broken(v, seq, audit_id, f"audit row {audit_id}: {reason}")
            if seq in checkpoints:
                cp_hash, cp_next, cp_mac = checkpoints[seq]
                if not hmac.compare_digest(cp_mac, checkpoint_mac(key, seq, cp_next, cp_hash)):
                    return _broken(v, seq, audit_id, f"checkpoint at {seq} is not genuine")
                if cp_hash != head:
                    return _broken(
                        v, seq, audit_id, f"the chain was rewritten: checkpoint {seq} disagrees"
                    )
                due = cp_next
            elif seq >= due:
                return _broken(
                    v, seq, audit_id,
                    f"checkpoint {due} is missing: the chain after it may have been rewritten",
                )  # fmt: skip
        v.rows = expected_seq
        if progress:
            progress(expected_seq)
    v.rows = expected_seq
    beyond = [s for s in checkpoints if s > expected_seq]
    if beyond:
        return _broken(v, min(beyond), None, f"checkpoint {min(beyond)} is past the chain's end")
    v.sealed = sealed
    return v


def row_by_id(conn: Connection | Session, audit_id: int) -> dict[str, Any] | None:
    """One audit row as recorded (`rows_for`), by its id: the broken row verify names."""
    return next(iter(rows_for(conn, _event.c.id == audit_id, 1)), None)


def rows_for(
    conn: Connection | Session,
    where: sa.ColumnElement[bool],
    limit: int,
    offset: int = 0,
    *,
    newest_first: bool = False,
) -> Iterator[dict[str, Any]]:
    """Audit rows as recorded (the hashed JSON), with their place in the chain."""
    query = (
        sa.select(_event.c.id, _event.c.body, _chain.c.seq, _chain.c.hash)
        .select_from(_event.outerjoin(_chain, _chain.c.audit_id == _event.c.id))
        .where(where)
        .order_by(_event.c.id.desc() if newest_first else _event.c.id)
        .limit(limit)
        .offset(offset)
    )
    for row in conn.execute(query):
        doc = json.loads(bytes(row.body))
        doc["id"] = row.id
        doc["seq"] = row.seq
        doc["hash"] = bytes(row.hash).hex() if row.hash is not None else None
        yield doc


# --- search (the API's and the auditor pages' one path) --------------------------------


@dataclass(frozen=True)
class AuditQuery:
    """What an auditor searches the log by. Every field narrows the search; none is needed.

    `action` is exact (`web:case:view`), or a pattern where `*` stands for anything
    (`*:case:view` for every source). `since` and `until` are inclusive.
    `with_person_id` also takes rows about that person that name no case (a person page
    read), for a case's reconstruction.
    """

    case_id: int | None = None
    person_id: int | None = None
    actor_id: int | None = None
    action: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    with_person_id: int | None = None

    def where(self) -> sa.ColumnElement[bool]:
        clauses: list[sa.ColumnElement[bool]] = []
        if self.case_id is not None and self.with_person_id is not None:
            clauses.append(
                sa.or_(
                    _event.c.case_id == self.case_id,
                    sa.and_(_event.c.person_id == self.with_person_id, _event.c.case_id.is_(None)),
                )
            )
        elif self.case_id is not None:
            clauses.append(_event.c.case_id == self.case_id)
        for column, value in (
            (_event.c.person_id, self.person_id),
            (_event.c.actor_id, self.actor_id),
            (_event.c.outcome, self.outcome),
        ):
            if value is not None:
                clauses.append(column == value)
        if self.action:
            if "*" in self.action:
                pattern = (
                    self.action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                ).replace("*", "%")
                clauses.append(_event.c.action.like(pattern, escape="\\"))
            else:
                clauses.append(_event.c.action == self.action)
        if self.since is not None:
            clauses.append(_event.c.at >= self.since)
        if self.until is not None:
            clauses.append(_event.c.at <= self.until)
        return sa.and_(sa.true(), *clauses)

    def describe(self) -> dict[str, str]:
        """The filters given, as recorded in the search's own audit row."""
        return {
            k: (v.isoformat() if isinstance(v, datetime) else str(v))
            for k, v in vars(self).items()
            if v is not None
        }


def search(
    session: Session | Connection,
    log: AuditLog,
    actor: Actor,
    query: AuditQuery,
    *,
    limit: int,
    offset: int = 0,
    newest_first: bool = False,
    action: str | None = None,
) -> list[dict[str, Any]]:
    """Read audit rows and record that they were read (`<source>:audit:search`), in the
    caller's transaction. The caller has checked that the actor may read the log."""
    rows = list(rows_for(session, query.where(), limit, offset, newest_first=newest_first))
    log.record(
        session, actor, action or f"{actor.source}:audit:search", target="audit",
        case_id=query.case_id, person_id=query.person_id,
        summary={"filters": query.describe(), "rows": len(rows), "offset": offset},
    )  # fmt: skip
    return rows
