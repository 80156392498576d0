"""`referral-engine service-accounts add|list|revoke`: API keys for partner systems."""

from __future__ import annotations

import argparse

from referral_engine.cli.context import build_runtime, cli_actor
from referral_engine.clock import LONDON


def cmd_add(args: argparse.Namespace) -> int:
    runtime = build_runtime()
    account, key = runtime.service_accounts.add(
        cli_actor(runtime), args.name, args.role, args.agency, args.agency_kind
    )
    print(f"added service account {account['name']} ({account['roles'][0]}, {account['agency']})")
    print("Its API key, shown only now (send it as 'Authorization: Bearer <key>'):")
    print(key)
    return 0


def _when(value) -> str:
    return value.astimezone(LONDON).strftime("%-d %b %Y, %H:%M") if value else ""


def cmd_list(args: argparse.Namespace) -> int:
    runtime = build_runtime()
    accounts = runtime.service_accounts.list(cli_actor(runtime))
    if not accounts:
        print("no service accounts")
    for a in accounts:
        state = f"revoked {_when(a['revoked_at'])}" if a["revoked_at"] else "active"
        print(
            f"{a['name']}\t{', '.join(a['roles'])}\t{a['agency']}\tkey rek_{a['key_id']}_…"
            f"\tcreated {_when(a['created_at'])}\t{state}"
        )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    runtime = build_runtime()
    account = runtime.service_accounts.revoke(cli_actor(runtime), args.name)
    print(f"revoked service account {account['name']}: its key no longer works")
    return 0


def register(sub) -> None:
    group = sub.add_parser(
        "service-accounts", help="API keys for partner systems (police, health, ...)"
    ).add_subparsers(dest="service_accounts", required=True)
    add = group.add_parser("add", help="add a service account and print its API key once")
    add.add_argument("name", help="lower-case letters, digits and -, e.g. police-niche")
    add.add_argument("--role", required=True, help="the one role it holds (policies/roles.yaml)")
    add.add_argument("--agency", required=True, help="the partner agency it belongs to")
    add.add_argument("--agency-kind", help="the agency's kind, if the agency is new")
    add.set_defaults(func=cmd_add)
    group.add_parser("list", help="list service accounts (never their keys)").set_defaults(
        func=cmd_list
    )
    revoke = group.add_parser("revoke", help="stop a service account's key now")
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_revoke)
