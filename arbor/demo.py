"""`arbor demo`: the whole platform on this machine with a simulated factory.

The stack comes up, then ingest, alerts, the simulated factory and the API start as background
processes (`arbor status` lists them, `arbor down` stops everything).
"""

from __future__ import annotations

import argparse
import socket
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


_INGEST_METRICS_PORT = 9108


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((API_HOST, port)) != 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((API_HOST, 0))
        return int(s.getsockname()[1])


def _wait_subscribed(metrics_port: int, timeout_s: float) -> bool:
    """Poll ingest's readiness gauge (arbor_ingest_subscribed) on its Prometheus endpoint."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            url = f"http://{API_HOST}:{metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=2) as resp:
                if "arbor_ingest_subscribed 1.0" in resp.read().decode():
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
    # Ingest first, and the factory only once ingest's subscription stands: the broker keeps
    # messages for a subscription that exists, not for one that is about to.
    metrics_port = _INGEST_METRICS_PORT if _port_free(_INGEST_METRICS_PORT) else _free_port()
    p = start_process(
        settings,
        "ingest",
        ["ingest", "--workers", "1"],
        env={"ARBOR_INGEST_METRICS_PORT": str(metrics_port)},
    )
    print(f"  {'ingest':<11} running (pid {p.pid})  metrics :{metrics_port}, log {p.log}")
    if not _wait_subscribed(metrics_port, 90):
        raise ArborError(f"ingest did not subscribe within 90 s; see {p.log}")
    processes = {
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
