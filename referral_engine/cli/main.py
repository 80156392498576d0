"""The `referral-engine` command line (DESIGN.md: the public interface)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from referral_engine.access.rules import Actor
from referral_engine.cli.context import build_runtime, cli_actor
from referral_engine.clock import LONDON
from referral_engine.errors import DefinitionError, DomainError
from referral_engine.settings import ConfigurationError, get_settings
from referral_engine.storage.private_files import refuse_existing, write_private

# How far ahead of the real time `tick --now` may be without --allow-future (clock skew).
FUTURE_TOLERANCE = timedelta(minutes=5)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from referral_engine.storage.migrate import upgrade

    settings = get_settings()
    print(upgrade(settings.database_url).describe())
    if settings.audit_head_log is not None and (settings.audit_key or settings.demo):
        # Sealing at install: the first head is kept before anyone has used the system.
        build_runtime().keep_head(force=True)
    return 0


def cmd_users_add(args: argparse.Namespace) -> int:
    if not args.password_stdin:
        print("give the password on standard input with --password-stdin", file=sys.stderr)
        return 2
    password = sys.stdin.readline().rstrip("\r\n")
    runtime = build_runtime()
    actor = cli_actor(runtime)
    with runtime.db.transaction() as s:
        user = runtime.accounts.add_user(
            s,
            username=args.username,
            password=password,
            roles=args.role,
            agency=args.agency,
            agency_kind=args.agency_kind,
            display_name=args.display_name,
            email=args.email,
        )
        if args.agency_contact:
            if user.agency_id is None:
                print("--agency-contact needs --agency", file=sys.stderr)
                raise SystemExit(2)
            runtime.outbox.set_agency_contact(s, user.agency_id, user.id)
        runtime.audit.record(
            s, actor, "cli:user:add", target=f"user:{user.id}",
            summary={"username": user.username, "roles": args.role, "agency": args.agency,
                     "agency_contact": bool(args.agency_contact)},
        )  # fmt: skip
    print(f"added user {args.username} (id {user.id}) with roles {', '.join(args.role)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from referral_engine.ops.demo import load_demo, load_scale

    runtime = build_runtime()
    load_demo(runtime, quiet=args.quiet)
    if args.scale:
        load_scale(runtime, args.scale, seed=args.seed, progress=not args.quiet)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    settings.require_secrets()
    # The web layer is named, not imported: the core never imports web (make lint's
    # import contract), and uvicorn builds the app from this factory in the same process.
    uvicorn.run(
        "web.app:serve_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_level="info",
        server_header=False,
        **settings.proxy_options(),  # REFERRAL_ENGINE_TRUSTED_PROXIES
    )
    return 0


def cmd_tick(args: argparse.Namespace) -> int:
    now = None
    if args.now:
        try:
            now = datetime.fromisoformat(args.now)
        except ValueError:
            print(f"referral-engine: --now: {args.now!r} is not an ISO date-time", file=sys.stderr)
            return 2
        if now.tzinfo is None:  # a time without an offset is UK local time
            now = now.replace(tzinfo=LONDON)
    runtime = build_runtime()
    if now is not None:
        ahead = now - runtime.clock.now()
        if ahead > FUTURE_TOLERANCE:
            # Ticking ahead of real time breaches deadlines that have not passed yet.
            if not args.allow_future:
                print(
                    f"referral-engine: --now {now.isoformat()} is {_span(ahead)} ahead of the "
                    "real time: deadlines due before then would be breached now, before "
                    "they have passed. Add --allow-future to do it anyway (for a test "
                    "installation).",
                    file=sys.stderr,
                )
                return 2
            print(
                f"referral-engine: ticking as at {now.isoformat()}, {_span(ahead)} ahead of "
                "the real time: deadlines due before then are breached now.",
                file=sys.stderr,
            )
    result = runtime.scheduler.tick(now)
    emails = runtime.sender.deliver(now)
    runtime.keep_head()  # seals what the tick wrote; appended to the head log if set
    print(json.dumps({**result.as_dict(), "emails": emails.as_dict()}))
    return 1 if result.failed else 0


def _span(delta: timedelta) -> str:
    days, hours = delta.days, delta.seconds // 3600
    if days:
        return f"{days} day{'s' if days != 1 else ''}" + (f" {hours} h" if hours else "")
    return f"{hours} h {delta.seconds % 3600 // 60} min" if hours else f"{delta.seconds // 60} min"


def _day(value: str, flag: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        message = f"referral-engine: {flag}: {value!r} is not a date like 2026-04-01"
        raise SystemExit(message) from None


def cmd_export(args: argparse.Namespace) -> int:
    """Write an export to --output (or standard output), audited as the command line."""
    if args.output not in (None, "-"):
        refuse_existing(Path(args.output), field="--output")  # before any work is done
    runtime = build_runtime()
    actor = _export_actor(runtime, args.as_user)
    if args.what == "cases":
        got = runtime.exports.cases(
            actor, args.format, pathway=args.pathway, include_closed=args.include_closed
        )
    else:
        if not (args.start and args.end):
            print("referral-engine: export needs --from and --to", file=sys.stderr)
            return 2
        start, end = _day(args.start, "--from"), _day(args.end, "--to")
        got = getattr(runtime.exports, args.what)(actor, start, end, args.format)
    if not runtime.audit.link_inline:
        runtime.audit.run_sequencer(runtime.db.engine)
    if args.output in (None, "-"):
        sys.stdout.buffer.write(got.content)
        sys.stdout.flush()
    else:
        # New, 0600, no link followed (storage/private_files.py); refusals say why.
        write_private(Path(args.output), got.content, field="--output")
        print(f"wrote {got.rows} rows to {args.output}", file=sys.stderr)
    return 0


def _export_actor(runtime, username: str | None) -> Actor:
    """Exports run with a named user's permissions (default: every reporting permission)."""
    if username:
        from referral_engine.storage.models import User

        with runtime.db.reading() as s:
            uid = s.execute(sa.select(User.id).where(User.username == username)).scalar()
            actor = runtime.accounts.actor_for_user(s, uid, source="cli", request_id=None)

        if actor is None:
            raise SystemExit(f"referral-engine: --as: no active user {username!r}")
        return actor
    cli = cli_actor(runtime)
    roles = [r for r in runtime.policy.roles if runtime.access.can(
        runtime.access.actor(user_id=None, username="x", display_name="x", roles=[r]),
        "report:kpi:view")]  # fmt: skip
    return runtime.access.actor(
        user_id=None, username=cli.username, display_name=cli.display_name,
        roles=roles, source="cli",
    )  # fmt: skip


def cmd_audit_verify(args: argparse.Namespace) -> int:
    runtime = build_runtime()
    bar = None
    if sys.stderr.isatty() and not args.json:
        from tqdm import tqdm

        bar = tqdm(unit=" rows", desc="verifying", file=sys.stderr)

    def progress(rows: int) -> None:
        if bar is not None:
            bar.update(rows - bar.n)

    head = None
    if args.head:
        from referral_engine.audit.heads import HeadFileError, read_kept

        try:
            head = read_kept(args.head)
        except HeadFileError as exc:  # names the file and line; not a verdict on the chain
            print(f"referral-engine: --head: {exc.detail}", file=sys.stderr)
            return 2
    result = runtime.verify_audit(deep=args.deep, progress=progress, head=head)
    if bar is not None:
        bar.close()
    if args.json:
        print(json.dumps(result.as_dict()))
    elif result.ok:
        against = f", and it agrees with the head kept at link {head.seq}" if head else ""
        print(
            f"audit chain intact: {result.rows} rows, {result.checkpoints} checkpoints "
            f"verified{against}"
        )
    else:
        where = f" at chain position {result.first_broken_seq}" if result.first_broken_seq else ""
        row = f" (audit row {result.first_broken_audit_id})" if result.first_broken_audit_id else ""
        print(f"audit chain BROKEN{where}{row}: {result.reason}")
    return 0 if result.ok else 1


def cmd_audit_head(args: argparse.Namespace) -> int:
    """One JSON line `{"seq", "hash", "at", "mac"}`: keep it where the database cannot."""
    runtime = build_runtime()
    print(runtime.audit.signed_head(runtime.db.engine).line())
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="referral-engine",
        description="Multi-agency referral and case-pathway workflow engine.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db", required=True)
    db.add_parser("upgrade", help="apply migrations to DATABASE_URL").set_defaults(
        func=cmd_db_upgrade
    )

    users = sub.add_parser("users", help="user accounts").add_subparsers(
        dest="users", required=True
    )
    add = users.add_parser("add", help="add a user")
    add.add_argument("username")
    add.add_argument("--role", action="append", required=True, help="repeat for several roles")
    add.add_argument("--agency", help="agency name (created if new)")
    add.add_argument(
        "--agency-kind", help="police, health, education, ... (policies/reference.yaml)"
    )
    add.add_argument("--display-name")
    add.add_argument("--email")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.add_argument(
        "--agency-contact", action="store_true",
        help="make this user the agency's contact (receives MARAC actions and listings)",
    )  # fmt: skip
    add.set_defaults(func=cmd_users_add)

    demo = sub.add_parser("demo", help="load demo accounts and data (idempotent)")
    demo.add_argument("--scale", type=int, default=0, help="add N synthetic cases")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(func=cmd_demo)

    serve = sub.add_parser("serve", help="serve the web app and API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=cmd_serve)

    tick = sub.add_parser("tick", help="fire due deadlines and timers now (idempotent)")
    tick.add_argument("--now", help="ISO time to treat as now (without an offset: UK local time)")
    tick.add_argument(
        "--allow-future", action="store_true",
        help="let --now be ahead of the real time (breaches deadlines before they pass)",
    )  # fmt: skip
    tick.set_defaults(func=cmd_tick)

    export = sub.add_parser("export", help="CSV or Excel exports (audited)")
    export.add_argument("what", choices=["kpis", "marac", "nrm", "cases"])
    export.add_argument("--from", dest="start", help="first day (UK date), e.g. 2026-04-01")
    export.add_argument("--to", dest="end", help="last day, inclusive")
    export.add_argument("--format", choices=["csv", "xlsx"], default="csv")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    export.add_argument("--as", dest="as_user", help="export with this user's permissions")
    export.add_argument("--pathway", help="cases: only this pathway")
    export.add_argument("--include-closed", action="store_true", help="cases: closed ones too")
    export.set_defaults(func=cmd_export)

    audit = sub.add_parser("audit", help="the audit log").add_subparsers(
        dest="audit", required=True
    )
    verify = audit.add_parser("verify", help="verify the hash chain and its checkpoints")
    verify.add_argument("--json", action="store_true", help="machine-readable result")
    verify.add_argument(
        "--deep", action="store_true", help="(kept for scripts: every verify checks the columns)"
    )
    verify.add_argument(
        "--head", metavar="FILE",
        help="a file of kept heads (one JSON line each; the last counts): fail if the chain "
        "is shorter than it or differs from it",
    )  # fmt: skip
    verify.set_defaults(func=cmd_audit_verify)
    head = audit.add_parser("head", help="seal the chain and print its signed head (JSON)")
    head.set_defaults(func=cmd_audit_head)

    from referral_engine.cli.ops import register  # db backup, retention, sar
    from referral_engine.cli.service_accounts import register as register_service_accounts

    register(sub, db)
    register_service_accounts(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigurationError, DefinitionError) as exc:
        print(f"referral-engine: {exc}", file=sys.stderr)
        return 2
    except DomainError as exc:
        errors = getattr(exc, "errors", None)
        if errors:
            for e in errors:
                print(f"referral-engine: {e.field}: {e.reason}", file=sys.stderr)
        else:
            print(f"referral-engine: {exc.detail}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
