"""`arbor alerts` / `python -m alerts`: run an alerts worker.

    arbor alerts [--no-migrate] [--log-level info]

Start as many as you like (on one host or many): they share the live stream through the MQTT
shared subscription `$share/$ARBOR_ALERTS_SHARE_GROUP/...` and never double-notify.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from alerts.config import AlertsSettings

__all__ = ["main", "run"]

log = logging.getLogger("alerts")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="arbor alerts", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--no-migrate", action="store_true", help="do not apply migrations first")
    p.add_argument("--log-level", default="info")
    return p


async def _serve(settings: AlertsSettings) -> None:
    from alerts.worker import Worker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await Worker(settings).run(stop)


def run(argv: Sequence[str]) -> int:
    """Entry point used by the `arbor` command (`argv` excludes `alerts`)."""
    args = _parser().parse_args(list(argv))
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = AlertsSettings()  # type: ignore[call-arg]  # endpoints from the environment
    except ValidationError as exc:
        print(f"arbor alerts: bad settings:\n{exc}", file=sys.stderr)
        return 2
    if not args.no_migrate:
        from ingest.migrate import apply_migrations

        apply_migrations(settings.database_url)
    log.info("alerts worker %s, share group %s", settings.worker_id, settings.share_group)
    asyncio.run(_serve(settings))
    return 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))
