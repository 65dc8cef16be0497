"""Background Arbor processes of the local demo (ingest, simulator, API), with pid and log files.

Each runs detached in its own session, so it outlives the `arbor demo` that started it; `arbor down`
stops them (SIGTERM, then SIGKILL after a grace period) before it stops the servers they use.
State: `.arbor/run/<name>.pid`, logs: `.arbor/log/<name>.log`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from arbor.config import StackSettings

__all__ = ["ManagedProcess", "list_processes", "start_process", "stop_processes"]


@dataclass(frozen=True)
class ManagedProcess:
    name: str
    pid: int | None
    running: bool
    log: Path


def _run_dir(settings: StackSettings) -> Path:
    return settings.state_dir / "run"


def _log_dir(settings: StackSettings) -> Path:
    return settings.state_dir / "log"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie (state Z) has exited; it only waits for its parent to collect it.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def start_process(
    settings: StackSettings, name: str, argv: list[str], env: dict[str, str] | None = None
) -> ManagedProcess:
    """Start `arbor <argv>` detached unless a process of that name already runs.

    `env` adds to (and overrides) this process's environment.
    """
    run_dir, log_dir = _run_dir(settings), _log_dir(settings)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    pid_file = run_dir / f"{name}.pid"
    log = log_dir / f"{name}.log"
    pid = _read_pid(pid_file)
    if pid is not None and _alive(pid):
        return ManagedProcess(name, pid, True, log)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "arbor.cli", *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    pid_file.write_text(f"{proc.pid}\n")
    return ManagedProcess(name, proc.pid, True, log)


def list_processes(settings: StackSettings) -> list[ManagedProcess]:
    """Every managed process with a pid file, running or not."""
    run_dir = _run_dir(settings)
    if not run_dir.is_dir():
        return []
    out = []
    for pid_file in sorted(run_dir.glob("*.pid")):
        pid = _read_pid(pid_file)
        name = pid_file.stem
        out.append(
            ManagedProcess(
                name, pid, pid is not None and _alive(pid), _log_dir(settings) / f"{name}.log"
            )
        )
    return out


def stop_processes(settings: StackSettings, grace_s: float = 15.0) -> list[str]:
    """Stop every managed process; returns the names stopped."""
    stopped: list[str] = []
    procs = [p for p in list_processes(settings) if p.running and p.pid is not None]
    for p in procs:
        assert p.pid is not None
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + grace_s
    for p in procs:
        assert p.pid is not None
        while _alive(p.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(p.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        stopped.append(p.name)
    for pid_file in _run_dir(settings).glob("*.pid"):
        pid_file.unlink(missing_ok=True)
    return stopped
