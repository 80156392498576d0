"""Database engines and transactions, the same way for SQLite and PostgreSQL.

SQLite runs in WAL mode with synchronous=FULL (durable: an acknowledged event survives
a power cut) and takes the write lock at BEGIN, because nearly every transaction here
writes (reads are audited) and a deferred lock upgrade would deadlock two readers.
"""

from __future__ import annotations

import collections
import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import Session

from referral_engine.storage.private_files import ensure_sqlite_file

_engines: dict[str, SAEngine] = {}
# One writer at a time per SQLite database in this process (see `Database.transaction`).
_writers: dict[str, threading.RLock] = {}
# The connection that writer uses, kept between fires (see `Database.writing`); only the
# holder of the engine's writer lock touches it.
_kept: dict[SAEngine, Connection] = {}


def normalise_url(url: str) -> str:
    """Plain postgresql:// URLs mean psycopg 3, the driver this project installs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str) -> SAEngine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            ensure_sqlite_file(Path(path))  # owner-only, before SQLite makes it 0644
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=8
        )
        _configure_sqlite(engine)
        return engine
    return sa.create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _configure_sqlite(engine: SAEngine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        # Checkpoint the WAL into the database every ~40 MB instead of SQLite's ~4 MB: a
        # fire rewrites the same hot pages (the newest leaf of each table and index), and
        # a checkpoint copies each page once however often it changed, so fewer, larger
        # checkpoints copy and fsync far less (bench/README.md: ~8% a step). The WAL is
        # cut back to 64 MB after each. Durability is unchanged: every commit is fsynced.
        cur.execute("PRAGMA wal_autocheckpoint=10000")
        cur.execute("PRAGMA journal_size_limit=67108864")
        cur.close()

    @event.listens_for(engine, "engine_disposed")
    def _on_dispose(engine):
        conn = _kept.pop(engine, None)
        if conn is not None and not conn.in_transaction():
            conn.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Readers (execution option read_only) take a WAL snapshot and block no writer.
        # Straight to the driver: through `exec_driver_sql` this cost ~80 µs a transaction.
        read_only = conn.get_execution_options().get("read_only", False)
        conn.connection.driver_connection.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")


def get_engine(url: str) -> SAEngine:
    url = normalise_url(url)
    if url not in _engines:
        _engines[url] = make_engine(url)
    return _engines[url]


def dispose_all() -> None:
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()


class Database:
    """One database: its engine, and the two kinds of transaction the product uses."""

    def __init__(self, url: str):
        self.url = normalise_url(url)
        self.engine = get_engine(self.url)
        # The same pool, for transactions that only read.
        self.read_engine = self.engine.execution_options(read_only=True)
        # SQLite has one writer. Threads of this process that want to write queue here and
        # are handed the lock the moment it is free; left to SQLite, each waiter polls the
        # file lock with sleeps of up to 100 ms, which under eight concurrent requests put
        # p95 near a second (bench/README.md). Other processes still wait in SQLite.
        self._writer = (
            _writers.setdefault(self.url, threading.RLock())
            if self.is_sqlite
            else contextlib.nullcontext()
        )

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @property
    def writers_at_once(self) -> int:
        """How many writing requests are worth running at once in one process. SQLite
        writes one transaction at a time, so beyond a second (preparing or answering
        while the first writes) another thread only competes for the GIL: under eight
        clients it raised the server's CPU a request by ~40% (bench/README.md). A
        PostgreSQL server writes in parallel, up to the connection pool."""
        return 2 if self.is_sqlite else self.engine.pool.size()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commits on success, rolls back on any exception."""
        with (
            self._writer,
            Session(self.engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    @contextlib.contextmanager
    def writing(self) -> Iterator[Connection]:
        """`transaction` without an ORM session, for the hot path (`Engine.fire`): the
        session's bookkeeping cost more than the statements a fire runs. Code inside that
        needs the ORM (adding a row through a model) opens `orm_session` on it.

        On SQLite, whose writers take turns anyway, the writer keeps one connection
        between turns: checking one out of the pool and back cost ~75 µs a fire, a
        twentieth of its CPU (bench/README.md, fourth round)."""
        if not self.is_sqlite:
            with self.engine.connect() as conn, conn.begin():
                yield conn
            return
        with self._writer:
            conn = _kept.get(self.engine)
            if conn is None or conn.closed or conn.invalidated:
                conn = _kept[self.engine] = self.engine.connect()
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """A connection for hot reads that run compiled statements (the actor behind
        every request, the answer to a fired event): no ORM session, and no explicit
        transaction, whose bookkeeping cost more than the reads. Each compiled read then
        sees the latest committed data on its own; a Core statement run here still opens
        a read transaction (SQLAlchemy's autobegin), ended when the connection returns."""
        with self.read_engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def reading(self) -> Iterator[Session]:
        """A transaction that only reads: on SQLite it blocks no writer."""
        with Session(self.read_engine, expire_on_commit=False) as session, session.begin():
            yield session


def as_connection(s: Session | Connection) -> Connection:
    """The connection under a session (its transaction's), or the connection itself."""
    return s.connection() if isinstance(s, Session) else s


@contextlib.contextmanager
def orm_session(conn: Connection) -> Iterator[Session]:
    """An ORM session inside the caller's transaction on `conn`: it joins that
    transaction, flushes what was added on the way out, and never commits or ends it."""
    with Session(bind=conn, expire_on_commit=False) as session:
        yield session
        session.flush()


def _as_sqlalchemy_error(conn: Connection, sql: str, params: Any, exc: Exception) -> Exception:
    """A driver error as SQLAlchemy raises it (DataError, IntegrityError, ...), so callers
    and the web layer handle a compiled statement's failure like any other."""
    base = conn.dialect.loaded_dbapi.Error
    return sa.exc.DBAPIError.instance(
        sql, params, exc, base, hide_parameters=True, dialect=conn.dialect
    )


class Statement:
    """A hot-path statement, compiled once per dialect and run on the driver's cursor.

    Building and dispatching a Core statement costs SQLAlchemy about 70 µs (250 µs if
    the statement is built anew each time); a fire runs several, and together they were
    most of its cost (see bench/README.md). This runs the same SQL, with SQLAlchemy's
    own bind and result conversions for each column, inside the caller's transaction on
    the same connection, for the price of the driver call. Only for statements with plain
    bind parameters (no `IN` lists), named with `sa.bindparam`.
    """

    def __init__(self, stmt: sa.Executable):
        self.stmt = stmt
        self._by_dialect: dict[str, _Compiled] = {}

    def _compiled(self, dialect: sa.Dialect) -> _Compiled:
        got = self._by_dialect.get(dialect.name)
        if got is None:
            got = self._by_dialect[dialect.name] = _Compiled(self.stmt, dialect)
        return got

    def run(self, conn: Connection | Session, params: dict | None = None) -> Any:
        """Execute; returns the driver cursor (for `rowcount`)."""
        conn = as_connection(conn)
        return self._compiled(conn.dialect).execute(conn, params or {})

    def run_many(self, conn: Connection | Session, rows: list[dict]) -> None:
        """Execute once per row in one driver call (bulk loads)."""
        conn = as_connection(conn)
        c = self._compiled(conn.dialect)
        batch = [c.bind(params) for params in rows]
        try:
            conn.connection.driver_connection.cursor().executemany(c.sql, batch)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _as_sqlalchemy_error(conn, c.sql, batch, exc) from exc

    def rows(self, conn: Connection | Session, params: dict | None = None) -> list:
        conn = as_connection(conn)
        c = self._compiled(conn.dialect)
        cur = c.execute(conn, params or {})
        return [c.row(raw) for raw in cur.fetchall()]

    def first(self, conn: Connection | Session, params: dict | None = None) -> Any:
        conn = as_connection(conn)
        c = self._compiled(conn.dialect)
        cur = c.execute(conn, params or {})
        # All of it (one row): SQLite ends a statement only once it has been read to its
        # end, and a half-read one would hold its snapshot on the shared cursor.
        got = cur.fetchall()
        return c.row(got[0]) if got else None

    def scalar(self, conn: Connection | Session, params: dict | None = None) -> Any:
        got = self.first(conn, params)
        return got[0] if got is not None else None


_NAMED = re.compile(r"%\(([^)]+)\)s")


def _cursor(conn: Connection) -> Any:
    """The driver cursor compiled statements run on, one per driver connection and kept
    with it (psycopg spends ~30 µs making a cursor). Kept in the pool record's `info`
    beside the connection it belongs to, so a reconnected record never reuses it."""
    fairy = conn.connection
    driver = fairy.driver_connection
    kept = fairy.info.get("statement_cursor")
    if kept is None or kept[0] is not driver:
        kept = fairy.info["statement_cursor"] = (driver, driver.cursor())
    return kept[1]


class _Compiled:
    """One statement's SQL for one dialect, with the conversions for its binds (in the
    driver's parameter order) and for the result columns that need one."""

    def __init__(self, stmt: sa.Executable, dialect: sa.Dialect):
        c = stmt.compile(dialect=dialect)
        if c.literal_execute_params or c.post_compile_params:
            raise ValueError("Statement needs plain bind parameters")
        if dialect.positional:
            self.sql, names = c.string, list(c.positiontup)
        else:
            # Named ("%(name)s", psycopg): sent positionally instead, because psycopg
            # re-reads a named query and reorders its parameters on every execution.
            names = _NAMED.findall(c.string)
            self.sql = _NAMED.sub("%s", c.string)
        self.binds = []
        for name in names:
            bind = c.binds[name]
            proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
            self.binds.append((name, bind.value if bind.callable is None else None, proc))
        columns = getattr(stmt, "exported_columns", None) or ()
        self.convert = [
            (i, proc)
            for i, col in enumerate(columns)
            if (proc := col.type.dialect_impl(dialect).result_processor(dialect, None))
        ]
        self.make = (
            collections.namedtuple("Row", [col.key for col in columns], rename=True)._make  # type: ignore[misc]
            if columns
            else tuple
        )

    def bind(self, params: dict) -> list:
        # As SQLAlchemy does, None goes through the processor too (JSON: 'null').
        return [
            params.get(name, default) if proc is None else proc(params.get(name, default))
            for name, default, proc in self.binds
        ]

    def execute(self, conn: Connection, params: dict) -> Any:
        values = self.bind(params)
        cur = _cursor(conn)
        try:
            cur.execute(self.sql, values)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _as_sqlalchemy_error(conn, self.sql, values, exc) from exc
        return cur

    def row(self, raw: Any) -> Any:
        if not self.convert:
            return self.make(raw)
        values = list(raw)
        for i, proc in self.convert:
            if values[i] is not None:
                values[i] = proc(values[i])
        return self.make(values)
