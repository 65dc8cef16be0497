"""API test fixtures: a migrated database per module, a real uvicorn on a free loopback port,
one API key per role, and machines in the registry."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn

from api.app import create_app
from api.config import ApiSettings
from api.keys import Role, generate_key
from ingest.migrate import apply_migrations


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(
    settings: ApiSettings,
    port: int | None = None,
    *,
    start_timeout_s: float = 20,
    stop_timeout_s: float = 20,
) -> Iterator[str]:
    """Run the API on uvicorn in a thread (on a free loopback port unless `port` is given, so a
    test can stop it and start another on the same address); yields its base URL."""
    port = _free_port() if port is None else port
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="websockets-sansio",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=stop_timeout_s)


@pytest.fixture(scope="module")
def api_database(fresh_database: str) -> str:
    """A fresh database with every migration (ingest's and the API's) applied."""
    apply_migrations(fresh_database)
    return fresh_database


@pytest.fixture(scope="module")
def api_settings(api_database: str, mqtt_settings: Any) -> ApiSettings:
    return ApiSettings(
        database_url=api_database,
        mqtt_url=mqtt_settings.url,
        api_rate_per_s=10_000,
        api_rate_burst=10_000,
        api_mqtt_timeout_s=5,
        # Tests write state with SQL and read it back at once; the list's snapshot has its own
        # test (test_machines.py).
        api_list_cache_s=0,
        # Likewise keys are revoked with SQL and must answer 401 at once; the cache of verified
        # keys has its own test (test_auth.py).
        api_auth_cache_s=0,
    )


@pytest.fixture(scope="module")
def base_url(api_settings: ApiSettings) -> Iterator[str]:
    with serve(api_settings) as url:
        yield url


def make_key(database_url: str, role: Role | str, name: str, sites: list[str] | None = None) -> str:
    """Insert a key the way `arbor apikey create` does; returns the key."""
    new = generate_key()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO api_key (id, name, role, sites, key_hash) VALUES (%s, %s, %s, %s, %s)",
            [new.key_id, name, str(role), sites, new.key_hash],
        )
    return new.key


@pytest.fixture(scope="module")
def keys(api_database: str) -> dict[Role, str]:
    """One unscoped key per role."""
    return {role: make_key(api_database, role, f"test {role}") for role in Role}


def add_machines(database_url: str, pairs: list[tuple[str, str]]) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for site, machine in pairs:
            conn.execute(
                "INSERT INTO machine (site, machine) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                [site, machine],
            )


@pytest.fixture(scope="module")
def client_for(base_url: str) -> Iterator[Callable[[str | None], httpx.Client]]:
    """`client_for(key)`: an httpx client with that bearer key (None: no Authorization header)."""
    clients: list[httpx.Client] = []

    def make(key: str | None) -> httpx.Client:
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        client = httpx.Client(base_url=base_url, headers=headers, timeout=30)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The `error` object of an error answer, checking the one error shape on the way."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "field"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["message"]
    return dict(body["error"])
