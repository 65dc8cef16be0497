"""``arbor ingest`` / ``python -m ingest``: run N ingest worker processes.

    arbor ingest [--workers N] [--no-migrate] [--log-level info]

With one worker it runs in this process; with N it starts N child processes (``--worker-index``
0..N-1, each its own MQTT client id on the shared subscription and its own /metrics port) and
stops them all on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from ingest.config import IngestSettings

__all__ = ["main", "run"]

log = logging.getLogger("ingest")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="arbor ingest", description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-migrate", action="store_true", help="do not apply migrations first")
    p.add_argument("--log-level", default="info")
    return p


async def _serve(settings: IngestSettings) -> None:
    from ingest.worker import Worker

    # A batch allocates hundreds of thousands of short-lived tuples and dicts; with CPython's
    # default thresholds (700, 10, 10) the collector ran ~80 times a batch and full collections
    # walked every module's objects: 18 µs a message, a tenth of the decode + write cost, for
    # cycles this code does not make. Imports done, the objects they made are frozen out of the
    # collector's reach; young collections run every 50,000 net allocations instead of 700.
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await Worker(settings).run(stop)


def run(argv: Sequence[str]) -> int:
    """Entry point used by the ``arbor`` command (``argv`` excludes ``ingest``)."""
    args = _parser().parse_args(list(argv))
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    settings = IngestSettings()  # type: ignore[call-arg]  # endpoints come from the environment
    if args.worker_index is not None:
        settings = settings.model_copy(update={"worker_index": args.worker_index})
        asyncio.run(_serve(settings))
        return 0
    if not args.no_migrate:
        from ingest.migrate import apply_migrations

        applied, features = apply_migrations(settings.database_url)
        log.info("migrations applied: %d; TimescaleDB %s (%s edition)", len(applied),
                 features.version, features.license)  # fmt: skip
    if args.workers == 1:
        asyncio.run(_serve(settings))
        return 0
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ingest",
                "--no-migrate",
                "--worker-index",
                str(i),
                "--log-level",
                args.log_level,
            ],
            env=os.environ.copy(),
        )
        for i in range(args.workers)
    ]

    def forward(signum: int, _frame: object) -> None:
        for c in children:
            if c.poll() is None:
                c.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    codes = [c.wait() for c in children]
    return max(codes, default=0)


def main() -> None:
    sys.exit(run(sys.argv[1:]))
