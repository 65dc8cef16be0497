"""`arbor up | status | down` as a user runs them: idempotent, one server each, nothing left."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from arbor.config import StackSettings
from arbor.paths import project_root

pytestmark = pytest.mark.services

ARBOR = [sys.executable, "-m", "arbor.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if text.encode() in cmdline and b"pytest" not in cmdline:
            pids.append(int(entry.name))
    return pids


def _arbor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ARBOR, *args], env=env, text=True, capture_output=True, timeout=180, check=False
    )


def test_second_up_is_a_no_op_on_the_running_stack(database_url: str) -> None:
    settings = StackSettings()
    # The first `up` may still have a new migration to apply; the one after it must do nothing.
    assert _arbor("up").returncode == 0
    before = _arbor("status", "--json")
    assert before.returncode == 0, before.stdout + before.stderr
    again = _arbor("up")
    assert again.returncode == 0, again.stderr
    assert "already up: nothing to do" in again.stdout
    after = _arbor("status", "--json")
    assert after.stdout == before.stdout  # same pids: nothing restarted
    assert len(_processes_mentioning(str(settings.mqtt_dir / "mosquitto.conf"))) == 1
    # One postmaster for our data directory (its children do not repeat -D).
    assert len(_processes_mentioning(f"-D {settings.pg_data}")) == 1


@pytest.fixture
def private_stack() -> Iterator[dict[str, str]]:
    """A second, throw-away stack on its own ports and state directory."""
    # Under the checkout's .arbor: postgres and mosquitto can reach it (not /tmp/pytest-*).
    state = project_root() / ".arbor" / "test-stacks" / secrets.token_hex(4)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ARBOR_") or k == "ARBOR_REQUIRE_SERVICES"
    }
    env.update(
        ARBOR_STATE_DIR=str(state),
        ARBOR_PG_PORT=str(_free_port()),
        ARBOR_MQTT_PORT=str(_free_port()),
        ARBOR_PG_SHARED_BUFFERS="128MB",
    )
    try:
        yield env
    finally:
        _arbor("down", env=env)
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.slow
def test_up_twice_then_down_leaves_nothing_behind(private_stack: dict[str, str]) -> None:
    env = private_stack
    state = env["ARBOR_STATE_DIR"]
    first = _arbor("up", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "started PostgreSQL" in first.stdout and "started Mosquitto" in first.stdout
    assert "applied migrations: 0001_foundation" in first.stdout

    second = _arbor("up", env=env)
    assert second.returncode == 0, second.stderr
    assert "already up: nothing to do" in second.stdout
    assert len(_processes_mentioning(f"{state}/mosquitto/mosquitto.conf")) == 1
    assert len(_processes_mentioning(f"-D {state}/pg/data")) == 1

    status = _arbor("status", env=env)
    assert status.returncode == 0
    assert f"127.0.0.1:{env['ARBOR_PG_PORT']}" in status.stdout

    down = _arbor("down", env=env)
    assert down.returncode == 0, down.stderr
    assert "stopped Mosquitto" in down.stdout and "stopped PostgreSQL" in down.stdout
    assert _processes_mentioning(state) == []
    for port in (env["ARBOR_PG_PORT"], env["ARBOR_MQTT_PORT"]):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", int(port))) != 0, f"port {port} still open"
    stopped = _arbor("status", env=env)
    assert stopped.returncode == 3  # a script can tell "not running" from "running"


def _get_json(url: str, key: str) -> object:
    resp = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    resp.raise_for_status()
    return resp.json()


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_demo_shows_a_live_factory_and_down_stops_it_all(private_stack: dict[str, str]) -> None:
    env = private_stack
    port = _free_port()
    demo = subprocess.run(
        [*ARBOR, "demo", "--api-port", str(port), "--rate", "1"],
        env=env,
        text=True,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    lines = demo.stdout.strip().splitlines()
    assert lines[-1] == f"Dashboard: http://127.0.0.1:{port}/"
    assert lines[-2].startswith("Admin API key (shown once): arbor_")
    key = lines[-2].rsplit(" ", 1)[1]
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", demo.stdout)]
    assert len(pids) == 6  # two servers, ingest, alerts, simulator, API

    # The simulated factory reaches the API through MQTT, ingest and TimescaleDB.
    url = f"http://127.0.0.1:{port}/api/v1/machines?site=demo"
    deadline = time.monotonic() + 120
    live: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        machines = _get_json(url, key)
        assert isinstance(machines, list)
        live = [m for m in machines if m["status"] == "online" and m["execution"] is not None]
        if len(machines) == 20 and len(live) == 20:
            break
        time.sleep(1)
    assert len(live) == 20, f"only {len(live)} of 20 demo machines live"

    down = _arbor("down", env=env)
    assert down.returncode == 0, down.stderr
    for name in ("ingest", "alerts", "sim", "api", "Mosquitto", "PostgreSQL"):
        assert f"stopped {name}" in down.stdout
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
    assert alive == []


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
