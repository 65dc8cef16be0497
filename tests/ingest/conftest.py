"""Fixtures shared by the ingest tests: a migrated database per module, a publisher on the shared
broker, and one worker per module on that module's own site and share group."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator

import pytest

from ingest.migrate import apply_migrations
from tests.conftest import MqttSettings
from tests.ingest.helpers import Publisher, start_worker, status, wait_ready, worker_env
from tests.servers import free_port


@pytest.fixture(scope="module")
def db(fresh_database: str) -> str:
    """A database of the module's own, migrated."""
    apply_migrations(fresh_database)
    return fresh_database


@pytest.fixture(scope="module")
def pub(mqtt_settings: MqttSettings) -> Iterator[Publisher]:
    p = Publisher(
        mqtt_settings.host, mqtt_settings.port, mqtt_settings.username, mqtt_settings.password
    )
    yield p
    p.close()


@pytest.fixture(scope="module")
def worker_extra_env() -> dict[str, str]:
    """More ARBOR_INGEST_* settings for the module's `worker` (override in the module)."""
    return {}


@pytest.fixture(scope="module")
def worker(
    db: str,
    mqtt_settings: MqttSettings,
    unique_site: str,
    pub: Publisher,
    worker_extra_env: dict[str, str],
) -> Iterator[int]:
    """One worker on the module's site; yields its metrics port once it is ready."""
    port = free_port()
    env = worker_env(
        db,
        mqtt_settings.url,
        unique_site,
        f"ingest-{secrets.token_hex(3)}",
        ARBOR_INGEST_METRICS_PORT=str(port),
        ARBOR_INGEST_BATCH_MAX_AGE_S="0.05",
        **worker_extra_env,
    )
    # wait_ready also counts messages: a retained probe is the first thing the worker hears.
    probe = f"arbor/v1/{unique_site}/probe/status"
    pub.publish(probe, status("probe-1", True), retain=True)
    pub.flush()
    proc = start_worker(env)
    try:
        wait_ready(port)
        yield port
    finally:
        pub.publish(probe, b"", retain=True)
        pub.flush()
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        assert proc.wait() in (0, -9)
