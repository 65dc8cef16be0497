"""A worker's quick jobs (gaps, silence) do not wait behind its long ones (rollups, retention)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.ingest.helpers import Publisher, scalar, status, wait_until

_STATUS = "SELECT status FROM machine WHERE site = %s AND machine = %s"


@pytest.fixture(scope="module")
def worker_extra_env() -> dict[str, str]:
    return {"ARBOR_INGEST_JOBS_INTERVAL_S": "1", "ARBOR_INGEST_SILENCE_TIMEOUT_S": "3"}


@pytest.fixture
def upkeep_stuck(db: str) -> Iterator[None]:
    """Upkeep held up the way a long `sample_1h` run holds it: retention (run on both editions)
    waits for a lock on `retention_policy` that another session keeps."""
    with psycopg.connect(db) as conn:
        conn.execute("LOCK TABLE retention_policy IN ACCESS EXCLUSIVE MODE")
        conn.execute("LOCK TABLE rollup_watermark IN ACCESS EXCLUSIVE MODE")
        yield
        conn.rollback()


def test_a_machine_goes_unknown_while_upkeep_is_stuck(
    db: str, worker: int, pub: Publisher, unique_site: str, upkeep_stuck: None
) -> None:
    site, m = unique_site, "goes-quiet"
    pub.publish(f"arbor/v1/{site}/{m}/status", status("s1", True), qos=1)
    pub.flush()
    wait_until(lambda: scalar(db, _STATUS, site, m) == "online", what="online")
    time.sleep(2)  # the upkeep loop has run into the lock by now
    t0 = time.monotonic()
    wait_until(lambda: scalar(db, _STATUS, site, m) == "unknown", timeout=15, what="unknown")
    # Silent after 3 s, seen by a silence job that runs every ~1 s.
    assert time.monotonic() - t0 < 8
