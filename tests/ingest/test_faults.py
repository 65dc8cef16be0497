"""Fault drills on the real broker and database: kill -9 a worker mid-stream, two workers on the
shared subscription (and a replay seen by both), a database restart mid-stream. In every case
the rows in the database equal what was published: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from ingest.records import DecodedBatch
from ingest.writer import WriteStats
from tests.conftest import MqttSettings
from tests.ingest.helpers import (
    Publisher,
    free_port_pair,
    metric,
    start_worker,
    status,
    stored_messages,
    stored_samples,
    telemetry,
    wait_ready,
    wait_until,
    worker_env,
    workers,
)
from tests.servers import PrivateDatabase, free_port

pytestmark = [pytest.mark.services, pytest.mark.slow]

N = 1500  # messages per drill, 5 samples each


@pytest.fixture
def pub(mqtt_settings: MqttSettings) -> Iterator[Publisher]:
    p = Publisher(
        mqtt_settings.host, mqtt_settings.port, mqtt_settings.username, mqtt_settings.password
    )
    yield p
    p.close()


def _probe(pub: Publisher, site: str) -> None:
    pub.publish(f"arbor/v1/{site}/probe/status", status("probe", True), retain=True)
    pub.flush()


def _unprobe(pub: Publisher, site: str) -> None:
    pub.publish(f"arbor/v1/{site}/probe/status", b"", retain=True)
    pub.flush()


def _stream(pub: Publisher, site: str, machine: str, n: int, seconds: float) -> threading.Thread:
    payloads = [telemetry("run1", seq, n=5) for seq in range(n)]

    def go() -> None:
        pause = seconds / n
        for p in payloads:
            pub.publish(f"arbor/v1/{site}/{machine}/telemetry", p)
            time.sleep(pause)
        pub.flush()

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def test_kill_9_mid_stream_then_restart_loses_and_duplicates_nothing(
    db: str, mqtt_settings: MqttSettings, unique_site: str, pub: Publisher
) -> None:
    site = f"{unique_site}k"
    port = free_port()
    env = worker_env(
        db,
        mqtt_settings.url,
        site,
        f"k{secrets.token_hex(3)}",
        ARBOR_INGEST_METRICS_PORT=str(port),
        ARBOR_INGEST_BATCH_MAX_MESSAGES="200",
    )
    _probe(pub, site)
    proc = start_worker(env)
    try:
        wait_ready(port)
        feeder = _stream(pub, site, "m-kill", N, seconds=4)
        wait_until(
            lambda: stored_messages(db, machine="m-kill") >= N // 4, what="a quarter of the stream"
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at = stored_messages(db, machine="m-kill")
        assert killed_at < N, "the worker must die mid-stream for this drill to mean anything"
        time.sleep(1)  # messages keep arriving at the broker for the dead worker's session
        proc = start_worker(env)  # same index, same client id: resumes the persistent session
        feeder.join(60)
        wait_until(
            lambda: stored_messages(db, machine="m-kill") >= N, timeout=90, what="every message"
        )
        time.sleep(1)
        assert stored_messages(db, machine="m-kill") == N
        assert stored_samples(db, machine="m-kill") == 5 * N
    finally:
        _unprobe(pub, site)
        proc.terminate()
        proc.wait(20)


def test_two_workers_share_the_stream_and_a_replay_changes_nothing(
    db: str, mqtt_settings: MqttSettings, unique_site: str, pub: Publisher
) -> None:
    site = f"{unique_site}s"
    base_port = free_port_pair()  # worker i serves base + i
    env = worker_env(
        db,
        mqtt_settings.url,
        site,
        f"s{secrets.token_hex(3)}",
        ARBOR_INGEST_METRICS_PORT=str(base_port),
        ARBOR_INGEST_BATCH_MAX_MESSAGES="100",
    )
    _probe(pub, site)
    try:
        with workers(env, 2):
            wait_ready(base_port)
            wait_ready(base_port + 1)
            payloads = [telemetry("two", seq, n=5) for seq in range(N)]
            for p in payloads:
                pub.publish(f"arbor/v1/{site}/m-two/telemetry", p)
            pub.flush()
            wait_until(lambda: stored_messages(db, machine="m-two") >= N, what="every message")
            # Each worker stored a share (round-robin at the broker).
            shares = [
                metric(base_port + i, "arbor_ingest_messages_total", outcome="stored")
                for i in range(2)
            ]
            assert all(s > 0 for s in shares), shares
            # A replay of everything (an edge buffer re-sending after an outage), seen by both.
            for p in payloads:
                pub.publish(f"arbor/v1/{site}/m-two/telemetry", p)
            pub.flush()

            def replay_done() -> bool:
                dup = sum(
                    metric(base_port + i, "arbor_ingest_messages_total", outcome="duplicate")
                    for i in range(2)
                )
                return dup >= N

            wait_until(replay_done, what="the replay to be processed")
            assert stored_messages(db, machine="m-two") == N
            assert stored_samples(db, machine="m-two") == 5 * N
    finally:
        _unprobe(pub, site)


def test_database_kill_mid_stream_two_workers_lose_nothing_and_survive(
    mqtt_settings: MqttSettings, unique_site: str, pub: Publisher
) -> None:
    """PostgreSQL's postmaster SIGKILLed while two workers commit (bug 3 of docs/reliability.md:
    asyncpg's InternalClientError escaped the retry loop and the worker exited)."""
    site = f"{unique_site}d"
    base_port = free_port_pair()
    with PrivateDatabase() as pdb:
        env = worker_env(
            pdb.url,
            mqtt_settings.url,
            site,
            f"d{secrets.token_hex(3)}",
            ARBOR_INGEST_METRICS_PORT=str(base_port),
            ARBOR_INGEST_BATCH_MAX_MESSAGES="50",
        )
        _probe(pub, site)
        try:
            with workers(env, 2) as procs:
                wait_ready(base_port)
                wait_ready(base_port + 1)
                feeder = _stream(pub, site, "m-db", N, seconds=6)
                wait_until(
                    lambda: stored_messages(pdb.url, machine="m-db") >= N // 4, what="a quarter"
                )
                pdb.stop(mode="kill")  # the hardest stop: no shutdown checkpoint
                time.sleep(2)
                pdb.start()
                feeder.join(60)
                wait_until(
                    lambda: stored_messages(pdb.url, machine="m-db") >= N,
                    timeout=120,
                    what="everything",
                )
                time.sleep(1)
                assert stored_messages(pdb.url, machine="m-db") == N
                assert stored_samples(pdb.url, machine="m-db") == 5 * N
                assert [p.poll() for p in procs] == [None, None], "a worker exited"
                errors = [metric(base_port + i, "arbor_ingest_write_errors_total") for i in (0, 1)]
                assert sum(errors) >= 1, errors
                # Both still take their share of new messages after the restart.
                before = [
                    metric(base_port + i, "arbor_ingest_messages_total", outcome="stored")
                    for i in (0, 1)
                ]
                more = [telemetry("run2", seq, n=1) for seq in range(200)]
                for p in more:
                    pub.publish(f"arbor/v1/{site}/m-db/telemetry", p)
                pub.flush()
                wait_until(
                    lambda: stored_messages(pdb.url, machine="m-db") >= N + 200,
                    what="the second run",
                )

                def both_stored() -> bool:
                    after = [
                        metric(base_port + i, "arbor_ingest_messages_total", outcome="stored")
                        for i in (0, 1)
                    ]
                    return all(a > b for a, b in zip(after, before, strict=True))

                wait_until(both_stored, what="both workers storing after the restart")
                assert stored_messages(pdb.url, machine="m-db") == N + 200
        finally:
            _unprobe(pub, site)


async def _commit_with_fault(url: str, mqtt_url: str, site: str) -> tuple[int, int]:
    """A real worker's _commit against the real database, where the first attempt commits and
    then raises what asyncpg raised in the drill (the COMMIT reached the server, the client
    never heard): the retry must succeed and the ledger must hold every message once."""
    import asyncpg

    from ingest.config import IngestSettings
    from ingest.records import Ack, Raw
    from ingest.worker import Worker

    settings = IngestSettings(database_url=url, mqtt_url=mqtt_url, metrics_port=0)
    worker = Worker(settings)
    await worker._connect_db()
    assert worker._writer is not None
    real = worker._writer.write
    faults = [
        asyncpg.InternalClientError(
            "cannot switch to state 15; another operation (2) is in progress"
        ),
        asyncpg.exceptions.ProtocolError("unexpected message"),
    ]

    async def flaky(batch: DecodedBatch) -> WriteStats:
        stats = await real(batch)
        if faults:
            raise faults.pop(0)
        return stats

    worker._writer.write = flaky  # type: ignore[method-assign]
    now = time.time()
    raws = [
        Raw(
            f"arbor/v1/{site}/m-fault/telemetry", telemetry("f1", seq, n=2), Ack(seq + 1, 1, 0), now
        )
        for seq in range(30)
    ]
    batch = worker.decoder.decode(raws)
    try:
        stats = await asyncio.wait_for(worker._commit(batch), 60)
    finally:
        assert worker._conn is not None
        await worker._conn.close()
    assert not faults
    return stats.messages, stats.duplicates


def test_commit_retries_asyncpg_internal_errors_exactly_once(
    db: str, mqtt_settings: MqttSettings, unique_site: str
) -> None:
    site = f"{unique_site}f"
    stored, dups = asyncio.run(_commit_with_fault(db, mqtt_settings.url, site))
    assert (stored, dups) == (0, 30)  # the first attempt committed them; the retries found them
    assert stored_messages(db, machine="m-fault") == 30
    assert stored_samples(db, machine="m-fault") == 60
