"""API keys: the CLI (create prints the key alone on its last line, list, revoke), key checks,
site scopes and the per-key rate limit (429 with Retry-After)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import pytest

from api import keys_cli
from api.config import ApiSettings
from api.keys import generate_key, hash_key, key_id_of, matches
from api.ratelimit import RateLimiter
from tests.api.conftest import _free_port, error_of, serve


def test_keys_are_random_and_only_their_hash_matches() -> None:
    a, b = generate_key(), generate_key()
    assert a.key != b.key and a.key_id != b.key_id
    assert key_id_of(a.key) == a.key_id
    assert a.key_hash == hash_key(a.key) and len(a.key_hash) == 64
    assert matches(a.key, a.key_hash) and not matches(b.key, a.key_hash)
    for bad in ("", "arbor_x_y", a.key + "x", a.key.replace("arbor_", "abc_"), "Bearer " + a.key):
        assert key_id_of(bad) is None


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.acquire("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("k") == pytest.approx(0.5)
    assert limiter.acquire("other") == 0.0  # buckets are per key
    now[0] = 0.5
    assert limiter.acquire("k") == 0.0
    now[0] = 100.0
    assert [limiter.acquire("k") for _ in range(4)][-1] > 0  # never more than the burst
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(rate_per_s=0, burst=1)


def test_python_m_api_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "api", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "--port" in done.stdout and "--host" in done.stdout


@pytest.mark.services
@pytest.mark.slow  # a cold interpreter importing the whole stack
def test_python_m_api_serves_on_the_given_port(api_database: str) -> None:
    port = _free_port()
    env = {**os.environ, "ARBOR_DATABASE_URL": api_database, "ARBOR_MQTT_URL": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, "arbor api exited"
                assert time.monotonic() < deadline, "arbor api did not start"
                time.sleep(0.1)
        assert health.status_code == 200 and health.json()["ok"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    bad = subprocess.run(
        [sys.executable, "-m", "api"],
        env={**env, "ARBOR_DATABASE_URL": "mysql://nope"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "database_url" in bad.stderr


@pytest.mark.services
def test_apikey_cli_create_list_revoke(
    api_database: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    client_for: Callable[[str | None], httpx.Client],
    unique_site: str,
) -> None:
    monkeypatch.setenv("ARBOR_DATABASE_URL", api_database)
    assert keys_cli.run(["create", "--role", "viewer", "--name", "dashboard"]) == 0
    out = capsys.readouterr().out.splitlines()
    key = out[-1]
    assert key_id_of(key) is not None and key not in "\n".join(out[:-1])
    client = client_for(key)
    assert client.get("/api/v1/signals").status_code == 200

    assert keys_cli.run(["list"]) == 0
    listing = capsys.readouterr().out
    assert "dashboard" in listing and key not in listing

    assert keys_cli.run(["revoke", key_id_of(key) or ""]) == 0
    revoked = client.get("/api/v1/signals")
    assert revoked.status_code == 401 and error_of(revoked)["code"] == "revoked_key"
    assert keys_cli.run(["revoke", "nosuchkeyid1"]) == 1
    capsys.readouterr()

    assert keys_cli.run(["create", "--role", "root", "--name", "x"]) == 2
    assert keys_cli.run(["create", "--role", "admin", "--name", "x", "--site", "Bad Site"]) == 2
    assert keys_cli.run(["create", "--role", "admin", "--name", "  "]) == 2
    capsys.readouterr()
    site_args = ["--site", unique_site, "--site", "other"]
    assert keys_cli.run(["create", "--role", "operator", "--name", "cell 4", *site_args]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"other, {unique_site}" in out[0] or f"{unique_site}, other" in out[0]
    assert client_for(out[-1]).get("/api/v1/signals").status_code == 200


@pytest.mark.services
def test_bad_keys_are_401(client_for: Callable[[str | None], httpx.Client]) -> None:
    fake = generate_key().key  # well-formed, never stored
    for key, code in [("nonsense", "invalid_key"), (fake, "invalid_key")]:
        response = client_for(key).get("/api/v1/signals")
        assert response.status_code == 401 and error_of(response)["code"] == code
    basic = httpx.get(
        client_for(None).base_url.join("/api/v1/signals"), headers={"Authorization": "Basic eA=="}
    )
    assert basic.status_code == 401


@pytest.mark.services
def test_rate_limit_answers_429_with_retry_after(
    api_settings: ApiSettings, api_database: str
) -> None:
    from tests.api.conftest import make_key

    key = make_key(api_database, "viewer", "bursty")
    limited = api_settings.model_copy(update={"api_rate_per_s": 0.5, "api_rate_burst": 3})
    with (
        serve(limited) as url,
        httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client,
    ):
        statuses = [client.get("/api/v1/signals").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        response = client.get("/api/v1/signals")
        assert error_of(response)["code"] == "rate_limited"
        assert 1 <= int(response.headers["Retry-After"]) <= 2
        assert httpx.get(f"{url}/healthz").status_code == 200  # probes are not limited


def test_key_cache_forgets_a_key_after_its_ttl_and_keeps_only_valid_keys() -> None:
    from api.keycache import KeyCache, VerifiedKey

    now = [100.0]
    cache = KeyCache(2.0, max_keys=2, clock=lambda: now[0])
    a, b, c = generate_key(), generate_key(), generate_key()
    seen = VerifiedKey(key_id=a.key_id, name="a", role="viewer", sites=frozenset({"s"}))
    cache.put(a.key, seen, read_at=now[0] - 0.5)  # the clock read before the query counts
    assert cache.get(a.key) == seen and cache.get(b.key) is None
    assert cache.get(a.key + "x") is None  # only the very key that was verified
    now[0] += 1.4
    assert cache.get(a.key) == seen
    now[0] += 0.1  # 2 s after the read
    assert cache.get(a.key) is None
    for k in (a, b, c):  # bounded: a third key starts the cache over
        cache.put(k.key, seen, read_at=now[0])
    assert cache.get(a.key) is None and cache.get(c.key) == seen
    off = KeyCache(0.0)
    off.put(a.key, seen, read_at=0.0)
    assert off.get(a.key) is None


@pytest.mark.services
def test_revocation_takes_effect_within_the_key_cache_ttl(
    api_settings: ApiSettings, api_database: str
) -> None:
    import psycopg

    from tests.api.conftest import make_key

    ttl = 2.0  # long enough for the request right after the revocation on a loaded box
    key = make_key(api_database, "viewer", "cached")
    with (
        serve(api_settings.model_copy(update={"api_auth_cache_s": ttl})) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client,
    ):
        assert client.get("/api/v1/signals").status_code == 200
        with psycopg.connect(api_database, autocommit=True) as conn:
            conn.execute("UPDATE api_key SET revoked_at = now() WHERE id = %s", [key_id_of(key)])
        revoked_at = time.monotonic()
        # Trusted from the cache until the TTL has passed since the key was read ...
        assert client.get("/api/v1/signals").status_code == 200
        # ... and refused once it has, whichever request comes first after it.
        while True:
            answer = client.get("/api/v1/signals")
            if answer.status_code != 200:
                break
            assert time.monotonic() - revoked_at < ttl, "revoked key still accepted after the TTL"
            time.sleep(0.05)
        assert answer.status_code == 401 and error_of(answer)["code"] == "revoked_key"
        # A revoked key is never remembered: it stays refused.
        assert client.get("/api/v1/signals").status_code == 401
