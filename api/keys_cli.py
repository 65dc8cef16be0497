"""`arbor apikey create|list|revoke`: manage API keys in ARBOR_DATABASE_URL.

arbor apikey create --role R --name N [--site S ...]   prints the key once, alone on its last line
arbor apikey list                                       id, name, role, sites, created, revoked
arbor apikey revoke ID                                  the key stops working at once
"""

from __future__ import annotations

import argparse
import os
import sys

import psycopg

from api.keys import Role, generate_key
from protocol import is_valid_id

__all__ = ["run"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="arbor apikey", description="Manage Arbor API keys.")
    sub = p.add_subparsers(dest="action", required=True)
    c = sub.add_parser("create", help="create a key and print it (shown only this once)")
    c.add_argument("--role", required=True, choices=[r.value for r in Role])
    c.add_argument("--name", required=True, help="who or what uses the key")
    c.add_argument(
        "--site", action="append", default=None, help="limit the key to a site (repeatable)"
    )
    sub.add_parser("list", help="list keys (never the keys themselves)")
    r = sub.add_parser("revoke", help="revoke a key by its id")
    r.add_argument("key_id")
    return p


def run(argv: list[str]) -> int:
    """Run `arbor apikey` with `argv`; 0 on success, 2 on bad usage, 1 when the key is unknown."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    url = os.environ.get("ARBOR_DATABASE_URL")
    if not url:
        print("arbor apikey: ARBOR_DATABASE_URL is not set (run `arbor up` first)", file=sys.stderr)
        return 2
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        if args.action == "create":
            name = args.name.strip()
            if not 1 <= len(name) <= 100:
                print("arbor apikey: --name must be 1 to 100 characters", file=sys.stderr)
                return 2
            sites = sorted(set(args.site)) if args.site else None
            bad = [s for s in sites or [] if not is_valid_id(s)]
            if bad:
                print(f"arbor apikey: invalid site id {bad[0]!r}", file=sys.stderr)
                return 2
            new = generate_key()
            conn.execute(
                "INSERT INTO api_key (id, name, role, sites, key_hash) VALUES (%s, %s, %s, %s, %s)",
                [new.key_id, name, args.role, sites, new.key_hash],
            )
            scope = ", ".join(sites) if sites else "all sites"
            print(f"created API key {new.key_id} ({args.role}, {scope}) for {name!r}")
            print("store it now; it cannot be shown again:")
            print(new.key)
            return 0
        if args.action == "list":
            rows = conn.execute(
                "SELECT id, name, role, sites, created_at, revoked_at FROM api_key "
                "ORDER BY created_at"
            ).fetchall()
            for key_id, name, role, sites, created, revoked in rows:
                scope = ",".join(sites) if sites else "*"
                state = f"revoked {revoked:%Y-%m-%d %H:%M}" if revoked else "active"
                print(f"{key_id}  {role:<11} {scope:<20} {created:%Y-%m-%d %H:%M}  {state}  {name}")
            return 0
        cur = conn.execute(
            "UPDATE api_key SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s",
            [args.key_id],
        )
        if cur.rowcount == 0:
            print(f"arbor apikey: no key {args.key_id!r}", file=sys.stderr)
            return 1
        print(f"revoked {args.key_id}")
        return 0
