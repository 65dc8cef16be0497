"""The `arbor` command: one front for the local stack and every Arbor process.

    arbor up | down | status [--json]       the local PostgreSQL + TimescaleDB and Mosquitto
    arbor migrate                           apply the database migrations to ARBOR_DATABASE_URL
    arbor machines add SITE/MACHINE ...     broker credentials for natively connected machines
    arbor machines add --sparkplug GROUP/NODE ...   and for Sparkplug B edge nodes
    arbor demo                              the stack up and a simulated factory running
    arbor sim | gateway | ingest | alerts | api | check | apikey ...   the processes themselves

Process subcommands are served by `<package>.cli.run(argv) -> int` in their own package, so each
stage owns its options; the `arbor` front only loads the local stack's settings file first.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence

from arbor.config import StackSettings
from arbor.errors import ArborError
from arbor.paths import load_env_file

__all__ = ["main"]

log = logging.getLogger("arbor")

# subcommand -> module whose run(argv) serves it, and what it does (for --help).
_PROCESSES: dict[str, tuple[str, str]] = {
    "sim": ("simulators.cli", "run a simulated i5 factory"),
    "gateway": ("gateway.cli", "run the edge gateway (SHDR / i5 sources -> MQTT)"),
    "ingest": ("ingest.cli", "run ingest workers (MQTT -> TimescaleDB)"),
    "alerts": ("alerts.cli", "run alert workers"),
    "api": ("api.cli", "serve the REST API and the dashboard"),
    "check": ("arbor.check", "evaluate accuracy measurements (ISO 230-2, circle, S piece)"),
    "apikey": ("api.keys_cli", "create and revoke API keys"),
}


def _cmd_up(settings: StackSettings, args: argparse.Namespace) -> int:
    from arbor import stack
    from ingest.migrate import apply_migrations

    actions = stack.up(settings)
    applied, features = apply_migrations(stack.database_url(settings))
    for line in actions:
        print(line)
    if applied:
        print("applied migrations: " + ", ".join(f"{m.version:04d}_{m.name}" for m in applied))
    if not actions and not applied:
        print("already up: nothing to do")
    print(
        f"TimescaleDB {features.version} ({features.license} edition: compression "
        f"{'on' if features.compression else 'off'}, continuous aggregates "
        f"{'on' if features.continuous_aggregates else 'off'})"
    )
    print(f"settings for the services: {settings.env_file}")
    return 0


def _cmd_down(settings: StackSettings, args: argparse.Namespace) -> int:
    from arbor import stack

    actions = stack.down(settings)
    print("\n".join(actions) if actions else "already down: nothing was running")
    return 0


def _cmd_status(settings: StackSettings, args: argparse.Namespace) -> int:
    from arbor import stack
    from arbor.processes import list_processes

    servers = stack.status(settings)
    if args.json:
        print(json.dumps([s.__dict__ for s in servers]))
    else:
        for s in servers:
            state = f"running (pid {s.pid})" if s.running else "stopped"
            print(f"{s.name:<11} {state:<22} {s.endpoint:<16} {s.detail}")
        for proc in list_processes(settings):
            state = f"running (pid {proc.pid})" if proc.running else "exited"
            print(f"{proc.name:<11} {state:<22} {'':<16} log {proc.log}")
    return 0 if all(s.running for s in servers) else 3


def _cmd_migrate(settings: StackSettings, args: argparse.Namespace) -> int:
    from ingest.migrate import apply_migrations

    url = os.environ.get("ARBOR_DATABASE_URL")
    if not url:
        print(
            "arbor migrate: ARBOR_DATABASE_URL is not set (run `arbor up` first)", file=sys.stderr
        )
        return 2
    applied, features = apply_migrations(url)
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied)
    print(f"applied: {names}" if applied else "schema up to date")
    print(f"TimescaleDB {features.version}, {features.license} edition")
    return 0


def _cmd_machines(settings: StackSettings, args: argparse.Namespace) -> int:
    from arbor.broker import ensure_machines

    shape = "GROUP/NODE" if args.sparkplug else "SITE/MACHINE"
    pairs: list[tuple[str, str]] = []
    for item in args.machines:
        site, sep, machine = item.partition("/")
        if not sep:
            print(f"arbor machines add: expected {shape}, got {item!r}", file=sys.stderr)
            return 2
        pairs.append((site, machine))
    try:
        creds = ensure_machines(pairs, settings, sparkplug=args.sparkplug)
    except ValueError as exc:
        print(f"arbor machines add: {exc}", file=sys.stderr)
        return 2
    kind = "Sparkplug edge node " if args.sparkplug else ""
    for (site, machine), (user, _pw) in creds.items():
        print(f"{kind}{site}/{machine}: broker user {user}")
    print(f"passwords: {settings.secrets_dir / 'machines.json'}")
    return 0


def _cmd_demo(settings: StackSettings, args: argparse.Namespace) -> int:
    from arbor.demo import run_demo

    return run_demo(settings, args)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="arbor", description="Arbor: machine-tool IoT platform")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("up", help="start the local PostgreSQL + TimescaleDB and Mosquitto")
    sub.add_parser("down", help="stop the local servers")
    st = sub.add_parser("status", help="what runs where (exit 3 when something is stopped)")
    st.add_argument("--json", action="store_true")
    sub.add_parser("migrate", help="apply database migrations to ARBOR_DATABASE_URL")
    m = sub.add_parser("machines", help="broker credentials for natively connected machines")
    msub = m.add_subparsers(dest="action", required=True)
    add = msub.add_parser("add", help="create credentials (idempotent)")
    add.add_argument("machines", nargs="+", metavar="SITE/MACHINE")
    add.add_argument(
        "--sparkplug",
        action="store_true",
        help="the items are Sparkplug B edge nodes, GROUP/NODE: publish their own N*/D* "
        "births, data and deaths, read their own NCMD/DCMD and the hosts' STATE",
    )
    d = sub.add_parser("demo", help="start everything and run a simulated factory")
    d.add_argument(
        "--rate", type=float, default=2.0, help="simulated samples per second per machine (2)"
    )
    d.add_argument("--api-port", type=int, default=8080, help="where the API listens (8080)")
    for name, (_module, help_text) in _PROCESSES.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return p


_VERBS: dict[str, Callable[[StackSettings, argparse.Namespace], int]] = {
    "up": _cmd_up,
    "down": _cmd_down,
    "status": _cmd_status,
    "migrate": _cmd_migrate,
    "machines": _cmd_machines,
    "demo": _cmd_demo,
}


def _run_process(name: str, argv: list[str]) -> int:
    module_name, _ = _PROCESSES[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        print(f"arbor {name}: not part of this build ({module_name} is missing)", file=sys.stderr)
        return 2
    if name == "sim":
        # On the local stack the simulator gets per-machine broker credentials made on demand.
        from arbor.broker import ensure_machines

        return int(module.run(argv, provision=ensure_machines))
    run: Callable[[list[str]], int] = module.run
    return run(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `arbor` console script."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if argv is None:  # the console script: no password of a URL reaches its output (arbor.redact)
        from arbor.redact import install

        install()
    load_env_file()
    # Process subcommands take their own options: hand them everything after the verb.
    verb_at = next((i for i, a in enumerate(args_list) if not a.startswith("-")), None)
    verbose = "-v" in args_list[: verb_at or 0] or "--verbose" in args_list[: verb_at or 0]
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if verb_at is not None and args_list[verb_at] in _PROCESSES:
        return _run_process(args_list[verb_at], args_list[verb_at + 1 :])
    args = _parser().parse_args(args_list)
    settings = StackSettings()
    try:
        return _VERBS[args.command](settings, args)
    except ArborError as exc:
        print(f"arbor {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
