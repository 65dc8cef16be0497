"""`arbor demo`: the whole platform on this machine with a simulated factory.

The stack comes up, then ingest, alerts, the simulated factory and the API start as background
processes (`arbor status` lists them, `arbor down` stops everything).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

from arbor import stack
from arbor.config import StackSettings
from arbor.errors import ArborError
from arbor.paths import project_root
from arbor.processes import start_process
from ingest.migrate import apply_migrations

__all__ = ["run_demo"]

API_HOST = "127.0.0.1"


def _wait_http(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - our own loopback URL
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def _create_admin_key(name: str) -> str:
    """A fresh admin key for the person running the demo (the API stores only its hash)."""
    res = subprocess.run(
        [sys.executable, "-m", "arbor.cli", "apikey", "create", "--role", "admin", "--name", name],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if res.returncode != 0:
        raise ArborError(f"could not create the demo's admin key: {res.stderr.strip()}")
    return res.stdout.strip().splitlines()[-1]


def run_demo(settings: StackSettings, args: argparse.Namespace) -> int:
    """Bring everything up and say what runs where; the last lines are the URL and a key."""
    stack.up(settings)
    apply_migrations(stack.database_url(settings))
    print("Arbor demo")
    for s in stack.status(settings):
        state = f"running (pid {s.pid})" if s.running else "STOPPED"
        print(f"  {s.name:<11} {state:<22} {s.endpoint}")

    factory = project_root() / "deploy" / "demo-factory.toml"
    # Real time from now: the dashboard shows live machines, not a replayed past.
    now = ["--start", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")]
    processes = {
        "ingest": ["ingest", "--workers", "1"],
        "alerts": ["alerts"],
        "sim": ["sim", "--factory", str(factory), "--rate", str(args.rate), "--speedup", "1", *now],
        "api": ["api", "--host", API_HOST, "--port", str(args.api_port)],
    }
    for name, argv in processes.items():
        p = start_process(settings, name, argv)
        print(f"  {name:<11} running (pid {p.pid})  log {p.log}")
    url = f"http://{API_HOST}:{args.api_port}"
    if not _wait_http(f"{url}/healthz", 90):
        raise ArborError(f"the API did not answer {url}/healthz within 90 s; see its log")
    key = _create_admin_key(f"demo-{datetime.now(UTC):%Y%m%dT%H%M%S}")
    print(f"Simulating {factory.name} in real time; stop everything with `make down`.")
    print(f"Admin API key (shown once): {key}")
    print(f"Dashboard: {url}/")
    return 0
