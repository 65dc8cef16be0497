"""Shared fixtures: the real servers `arbor up` started, and per-module isolation on them.

Tests that need Mosquitto or TimescaleDB use the `database_url`, `fresh_database`, `mqtt_settings`
and `provision_machines` fixtures. When the servers cannot be reached those tests are skipped,
unless ARBOR_REQUIRE_SERVICES is set (as `make test` and CI do): then they fail, never skip.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from arbor.paths import load_env_file

load_env_file()


@dataclass(frozen=True)
class MqttSettings:
    """Where the test broker is, with the service account (may use every `arbor/` topic)."""

    host: str
    port: int
    username: str
    password: str

    @property
    def url(self) -> str:
        return f"mqtt://{self.username}:{self.password}@{self.host}:{self.port}"


def _services_required() -> bool:
    return bool(os.environ.get("ARBOR_REQUIRE_SERVICES"))


def _unavailable(what: str) -> None:
    message = f"{what} is not reachable (start it with `arbor up`)"
    if _services_required():
        pytest.fail(f"{message}; ARBOR_REQUIRE_SERVICES is set, so this fails instead of skipping")
    pytest.skip(message)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def database_url() -> str:
    """The app database of the running stack (ARBOR_DATABASE_URL)."""
    url = os.environ.get("ARBOR_DATABASE_URL", "")
    parts = urlsplit(url)
    if not url or not _reachable(parts.hostname or "127.0.0.1", parts.port or 5432):
        _unavailable("TimescaleDB (ARBOR_DATABASE_URL)")
    return url


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="module")
def fresh_database(database_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of its own for one test module (TimescaleDB already in it), dropped afterwards."""
    module = re.sub(r"[^a-z0-9_]", "_", request.module.__name__.rsplit(".", 1)[-1].lower())
    name = f"t_{module[:40]}_{secrets.token_hex(4)}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(database_url, name)
    finally:
        drop_database(database_url, name)


def drop_database(database_url: str, name: str, timeout_s: float = 30.0) -> None:
    """Drop a test database, waiting out TimescaleDB's background workers.

    Its job scheduler connects to each database as the bootstrap superuser; the `arbor` role may not
    terminate that session (InsufficientPrivilege), so retry until the worker has let go.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
            return
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectInUse):
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


@pytest.fixture(scope="session")
def mqtt_settings() -> MqttSettings:
    """The running broker and the service account (ARBOR_MQTT_URL)."""
    url = os.environ.get("ARBOR_MQTT_URL", "")
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 1883
    if not url or not _reachable(host, port):
        _unavailable("Mosquitto (ARBOR_MQTT_URL)")
    return MqttSettings(host, port, unquote(parts.username or ""), unquote(parts.password or ""))


@pytest.fixture(scope="session")
def provision_machines(
    mqtt_settings: MqttSettings,
) -> Callable[[list[tuple[str, str]]], dict[tuple[str, str], tuple[str, str]]]:
    """Per-machine broker credentials on the local stack: (site, machine) -> (user, password)."""
    from arbor.broker import ensure_machines

    return ensure_machines


@pytest.fixture(scope="module")
def unique_site() -> str:
    """A site id no other test module uses, so topics never cross between modules."""
    return f"t{secrets.token_hex(5)}"
