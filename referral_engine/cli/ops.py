"""Operations commands: `db backup`, `retention apply|hold|release`, `sar export`.

Registered from cli.py's parser; kept here so the everyday commands stay short.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from referral_engine.cli.context import build_runtime, cli_actor
from referral_engine.clock import LONDON
from referral_engine.settings import get_settings
from referral_engine.storage.private_files import create_private, private_dir

PG_DUMP_HELP = (
    "On PostgreSQL, back up with PostgreSQL's own tools, which take a consistent snapshot "
    "while the servers keep running:\n"
    "  pg_dump --format=custom --file {path} '{url}'\n"
    "and restore into a new, empty database with:\n"
    "  createdb NEW && pg_restore --no-owner --dbname NEW {path}\n"
    "then point DATABASE_URL at it and run `referral-engine audit verify`. Keep "
    "REFERRAL_ENGINE_AUDIT_KEY out of the dump and its storage."
)


def _parse_now(value: str | None) -> datetime | None:
    if not value:
        return None
    now = datetime.fromisoformat(value)
    return now.replace(tzinfo=LONDON) if now.tzinfo is None else now


def cmd_db_backup(args: argparse.Namespace) -> int:
    """SQLite's online backup API: a consistent copy taken while the server runs (it
    reads one snapshot; writers carry on in the WAL)."""
    settings = get_settings()
    url = sa.engine.make_url(settings.database_url)
    target = Path(args.path)
    if not url.drivername.startswith("sqlite"):
        shown = url.set(password="***" if url.password else None).render_as_string(
            hide_password=False
        )
        print(
            "referral-engine: db backup copies SQLite databases only.\n"
            + PG_DUMP_HELP.format(path=target, url=shown),
            file=sys.stderr,
        )
        return 2
    if os.path.lexists(target):  # a file, or a link (never followed)
        print(f"referral-engine: {target} exists; give a new path", file=sys.stderr)
        return 2
    if not url.database or url.database == ":memory:":
        print("referral-engine: DATABASE_URL names no database file", file=sys.stderr)
        return 2
    private_dir(target.parent)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    # Made 0600 before SQLite writes into it: a backup holds everything the database does.
    os.close(create_private(partial))
    source = sqlite3.connect(url.database, timeout=30)
    try:
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy)  # all pages in one step: one consistent snapshot
            (check,) = copy.execute("PRAGMA integrity_check").fetchone()
            copy.commit()
        finally:
            copy.close()
    finally:
        source.close()
    if check != "ok":
        partial.unlink(missing_ok=True)
        print(f"referral-engine: the copy failed its integrity check: {check}", file=sys.stderr)
        return 1
    os.replace(partial, target)

    runtime = build_runtime()
    with runtime.db.transaction() as s:
        runtime.audit.record(
            s, cli_actor(runtime), "cli:db:backup", target="database",
            summary={"path": str(target.resolve()), "bytes": target.stat().st_size},
        )  # fmt: skip
    print(f"backed up to {target} ({target.stat().st_size} bytes, integrity ok)")
    return 0


def cmd_retention_apply(args: argparse.Namespace) -> int:

    try:
        now = _parse_now(args.now)
    except ValueError:
        print(f"referral-engine: --now: {args.now!r} is not an ISO date-time", file=sys.stderr)
        return 2
    runtime = build_runtime()
    result = runtime.retention.apply(cli_actor(runtime), now, dry_run=args.dry_run)
    print(json.dumps(result.as_dict()))
    return 0


def cmd_retention_hold(args: argparse.Namespace) -> int:

    runtime = build_runtime()
    hold_id = runtime.retention.hold(cli_actor(runtime), args.case, args.reason)
    print(f"case {args.case} is under legal hold {hold_id}")
    return 0


def cmd_retention_release(args: argparse.Namespace) -> int:

    runtime = build_runtime()
    ids = runtime.retention.release(cli_actor(runtime), args.case, args.reason)
    print(f"released legal hold {', '.join(map(str, ids))} on case {args.case}")
    return 0


def cmd_sar_export(args: argparse.Namespace) -> int:
    from referral_engine.ops.sar import SubjectAccess

    runtime = build_runtime()
    sar = SubjectAccess(runtime.db, runtime.clock, runtime.audit)
    out = sar.export(cli_actor(runtime), args.person, Path(args.output))
    print(json.dumps(out))
    return 0


def register(sub: argparse._SubParsersAction, db: argparse._SubParsersAction) -> None:
    backup = db.add_parser("backup", help="copy the SQLite database while it is in use")
    backup.add_argument("path", help="where to write the copy (must not exist)")
    backup.set_defaults(func=cmd_db_backup)

    retention = sub.add_parser(
        "retention", help="erase personal data past its retention period; legal holds"
    ).add_subparsers(dest="retention", required=True)
    apply = retention.add_parser("apply", help="erase what policies/retention.yaml says is due")
    apply.add_argument("--dry-run", action="store_true", help="list what would be erased")
    apply.add_argument("--now", help="ISO time to treat as now (without an offset: UK time)")
    apply.set_defaults(func=cmd_retention_apply)
    for name, func, text in (
        ("hold", cmd_retention_hold, "keep a case's data past its period (audited)"),
        ("release", cmd_retention_release, "release a case's legal hold (audited)"),
    ):
        p = retention.add_parser(name, help=text)
        p.add_argument("--case", type=int, required=True)
        p.add_argument("--reason", required=True)
        p.set_defaults(func=func)

    sar = sub.add_parser("sar", help="subject access requests").add_subparsers(
        dest="sar", required=True
    )
    export = sar.add_parser("export", help="everything held about a person, and who saw it")
    export.add_argument("--person", type=int, required=True)
    export.add_argument("--output", required=True, help="directory for the JSON and HTML")
    export.set_defaults(func=cmd_sar_export)
