"""Private, throw-away servers for fault tests that stop, kill or restart them.

The shared stack from `arbor up` must stay up for every other test, so a test that restarts the
broker or the database gets servers of its own: real Mosquitto and real PostgreSQL + TimescaleDB,
on free loopback ports, with state under the checkout's `.arbor/test-servers/` (reachable by the
`mosquitto` and `postgres` users when the tests run as root). Both can be stopped and started again
on the same port with their data kept, which is what a broker or database restart drill needs.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import time
from types import TracebackType

from arbor import stack
from arbor.broker import SERVICE_USER, Registry, registry_path
from arbor.config import StackSettings
from arbor.mqttprobe import try_connect
from arbor.paths import project_root

__all__ = ["PrivateBroker", "PrivateDatabase", "free_port"]


def free_port() -> int:
    """A TCP port nothing listens on right now (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _private_settings(kind: str) -> StackSettings:
    root = project_root() / ".arbor" / "test-servers" / f"{kind}-{secrets.token_hex(4)}"
    return StackSettings(
        state_dir=root,
        pg_port=free_port(),
        mqtt_port=free_port(),
        pg_shared_buffers="128MB",
        mqtt_max_queued_messages=2_000_000,
    )


class PrivateBroker:
    """A Mosquitto of its own, configured exactly like the stack's (ACLs, persistence, queues).

    Use as a context manager; `stop()` and `start()` restart it on the same port with its
    persistence kept; `kill()` sends SIGKILL (no persistence save).
    """

    def __init__(self) -> None:
        self.settings = _private_settings("mqtt")
        self.host = "127.0.0.1"
        self.port = self.settings.mqtt_port

    @property
    def service_credentials(self) -> tuple[str, str]:
        p = Registry(registry_path(self.settings)).principals[SERVICE_USER]
        return p.username, p.password

    @property
    def url(self) -> str:
        user, password = self.service_credentials
        return f"mqtt://{user}:{password}@{self.host}:{self.port}"

    def ensure_machines(
        self, pairs: list[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[str, str]]:
        from arbor.broker import ensure_machines

        return ensure_machines(pairs, self.settings)

    def start(self) -> None:
        if stack._mqtt_running(self.settings) is not None:
            return
        stack._mqtt_start(self.settings)

    def stop(self) -> None:
        stack._mqtt_stop(self.settings)

    def kill(self) -> None:
        pid = stack._mqtt_running(self.settings)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            stack._wait_exit(pid, "mosquitto", 10)

    @property
    def running(self) -> bool:
        return stack._mqtt_running(self.settings) is not None

    def accepts(self) -> bool:
        user, password = self.service_credentials
        return try_connect(self.host, self.port, user, password, 2).accepted

    def __enter__(self) -> PrivateBroker:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self.settings.state_dir, ignore_errors=True)


class PrivateDatabase:
    """A PostgreSQL + TimescaleDB cluster of its own, migrated, restartable on the same port."""

    def __init__(self) -> None:
        self.settings = _private_settings("pg")
        self.port = self.settings.pg_port

    @property
    def url(self) -> str:
        return stack.database_url(self.settings)

    def start(self) -> None:
        if stack._pg_running(self.settings) is not None:
            return
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.settings.secrets_dir.mkdir(parents=True, exist_ok=True)
        stack._pg_init(self.settings)
        stack._pg_start(self.settings)
        stack._pg_bootstrap(self.settings)

    def migrate(self) -> None:
        from ingest.migrate import apply_migrations

        apply_migrations(self.url)

    def stop(self, mode: str = "fast") -> None:
        if stack._pg_running(self.settings) is None:
            return
        if mode == "kill":
            pid = stack._pg_running(self.settings)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            # PostgreSQL refuses to start while the old postmaster's pid still answers kill(pid, 0),
            # which a zombie does until init reaps it; wait for that and for the port to close.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and (_exists(pid) or not _port_free(self.port)):
                time.sleep(0.05)
            return
        stack._pg_stop(self.settings)

    def __enter__(self) -> PrivateDatabase:
        self.start()
        self.migrate()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self.settings.state_dir, ignore_errors=True)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0
