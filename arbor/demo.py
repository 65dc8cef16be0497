"""`arbor demo`: the whole platform on this machine with a simulated factory."""

from __future__ import annotations

import argparse

from arbor import stack
from arbor.config import StackSettings
from ingest.migrate import apply_migrations

__all__ = ["run_demo"]


def run_demo(settings: StackSettings, args: argparse.Namespace) -> int:
    """Bring the stack up and say what runs where."""
    stack.up(settings)
    apply_migrations(stack.database_url(settings))
    print("Arbor demo: the stack is up.")
    for s in stack.status(settings):
        state = f"running (pid {s.pid})" if s.running else "STOPPED"
        print(f"  {s.name:<11} {state:<22} {s.endpoint}")
    print(f"  settings    {settings.env_file}")
    print("Stop it with `make down` (or `.venv/bin/arbor down`).")
    return 0
