"""`arbor demo`: the whole platform on this machine with a simulated factory.

The stack comes up, then ingest, the simulated factory and the API start as background processes
(`arbor status` lists them, `arbor down` stops everything). Stages not in this build are named as
missing rather than pretended.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
import urllib.error
import urllib.request

from arbor import stack
from arbor.config import StackSettings
from arbor.paths import project_root
from arbor.processes import start_process
from ingest.migrate import apply_migrations

__all__ = ["run_demo"]

API_HOST, API_PORT = "127.0.0.1", 8080


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


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


def run_demo(settings: StackSettings, args: argparse.Namespace) -> int:
    """Bring everything up and say what runs where; the last line is the dashboard URL."""
    stack.up(settings)
    apply_migrations(stack.database_url(settings))
    print("Arbor demo")
    for s in stack.status(settings):
        state = f"running (pid {s.pid})" if s.running else "STOPPED"
        print(f"  {s.name:<11} {state:<22} {s.endpoint}")

    missing: list[str] = []
    if _have("ingest.cli"):
        p = start_process(settings, "ingest", ["ingest", "--workers", "1"])
        print(f"  {'ingest':<11} running (pid {p.pid})  log {p.log}")
    else:
        missing.append("ingest")
    if _have("alerts.cli"):
        p = start_process(settings, "alerts", ["alerts"])
        print(f"  {'alerts':<11} running (pid {p.pid})  log {p.log}")
    else:
        missing.append("alerts")
    if _have("simulators.cli"):
        factory = project_root() / "deploy" / "demo-factory.toml"
        p = start_process(
            settings,
            "sim",
            ["sim", "--factory", str(factory), "--rate", str(args.rate), "--speedup", "1"],
        )
        print(f"  {'simulator':<11} running (pid {p.pid})  {factory.name}, log {p.log}")
    else:
        missing.append("simulator")
    if _have("api.cli"):
        p = start_process(settings, "api", ["api", "--host", API_HOST, "--port", str(API_PORT)])
        ready = _wait_http(f"http://{API_HOST}:{API_PORT}/healthz", 60)
        print(f"  {'api':<11} {'running' if ready else 'NOT READY'} (pid {p.pid})  log {p.log}")
    else:
        missing.append("api")
    if missing:
        print("  not in this build yet: " + ", ".join(missing))
    print("Stop everything with `make down` (or `.venv/bin/arbor down`).")
    if _have("api.cli"):
        print(f"Dashboard: http://{API_HOST}:{API_PORT}/")
    else:
        print(f"The stack is up; settings for clients are in {settings.env_file}")
    return 0
