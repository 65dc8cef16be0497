"""Bug 2 of docs/reliability.md: Mosquitto 2.0 does not persist shared subscriptions, so after a
broker restart a QoS 1 message published before ingest has subscribed again is acknowledged by
the broker and queued for nobody. Ingest's anchor (a non-shared subscription in worker 0's
persistent session, which the broker does persist) must make every such message land, once.

The workers are frozen (SIGSTOP) across the restart, so the publisher deterministically publishes
after the broker is back and before any worker could resubscribe. The control run without the
anchor shows the broker's behaviour: if it ever stops losing, the anchor can go."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.ingest.helpers import (
    Publisher,
    free_port_pair,
    metric,
    scalar,
    status,
    stored_messages,
    stored_samples,
    telemetry,
    wait_ready,
    wait_until,
    worker_env,
    workers,
)
from tests.servers import PrivateBroker

pytestmark = [pytest.mark.services, pytest.mark.slow]

BEFORE = 100  # messages stored before the restart
AFTER = 300  # published while the broker is back and no worker has resubscribed


@pytest.fixture
def broker() -> Iterator[PrivateBroker]:
    with PrivateBroker() as b:
        yield b


def _publisher(broker: PrivateBroker) -> Publisher:
    user, password = broker.service_credentials
    return Publisher(broker.host, broker.port, user, password)


def _restart_with_frozen_workers(
    broker: PrivateBroker, procs: list[subprocess.Popen[bytes]], site: str
) -> None:
    for p in procs:
        os.kill(p.pid, signal.SIGSTOP)
    try:
        broker.stop()  # SIGTERM: Mosquitto saves its persistence file
        broker.start()
        wait_until(broker.accepts, 60, "the broker back")
        pub = _publisher(broker)
        try:
            for seq in range(BEFORE, BEFORE + AFTER):
                pub.publish(f"arbor/v1/{site}/m{seq % 4}/telemetry", telemetry("r1", seq // 4))
            codes = pub.flush()
        finally:
            pub.close()
        assert codes == [0] * AFTER, "the broker acknowledged every message"
    finally:
        for p in procs:
            os.kill(p.pid, signal.SIGCONT)


@pytest.mark.parametrize("anchor", [True, False], ids=["anchor", "control-no-anchor"])
def test_messages_published_before_ingest_resubscribes_survive_a_broker_restart(
    db: str, broker: PrivateBroker, anchor: bool
) -> None:
    site = f"br{secrets.token_hex(3)}"
    base_port = free_port_pair()
    env = worker_env(
        db,
        broker.url,
        site,
        f"b{secrets.token_hex(3)}",
        ARBOR_INGEST_METRICS_PORT=str(base_port),
        # By default worker 0 holds the anchor.
        **({} if anchor else {"ARBOR_INGEST_ANCHOR": "false"}),
    )
    pub = _publisher(broker)
    pub.publish(f"arbor/v1/{site}/probe/status", status("probe", True), retain=True)
    pub.flush()
    with workers(env, 2) as procs:
        wait_ready(base_port)
        wait_ready(base_port + 1)
        for seq in range(BEFORE):
            pub.publish(f"arbor/v1/{site}/m{seq % 4}/telemetry", telemetry("r1", seq // 4))
        assert pub.flush() == [0] * BEFORE
        pub.close()
        wait_until(
            lambda: stored_messages(db, site=site) >= BEFORE, 90, "the messages before the restart"
        )

        _restart_with_frozen_workers(broker, procs, site)

        wait_ready(base_port, 120)
        wait_ready(base_port + 1, 120)
        if anchor:
            wait_until(
                lambda: stored_messages(db, site=site) >= BEFORE + AFTER,
                120,
                "every message after restart",
            )
            wait_until(
                lambda: metric(base_port, "arbor_ingest_anchor_recovering") == 0,
                60,
                "the anchor to catch up",
            )
            assert stored_messages(db, site=site) == BEFORE + AFTER
            assert stored_samples(db, site=site) == 5 * (BEFORE + AFTER)
            assert [p.poll() for p in procs] == [None, None]
            # Steady state again: new messages reach the anchor and are acked unprocessed.
            skipped = metric(base_port, "arbor_ingest_anchor_skipped")
            pub2 = _publisher(broker)
            try:
                for seq in range(BEFORE + AFTER, BEFORE + AFTER + 40):
                    pub2.publish(f"arbor/v1/{site}/m{seq % 4}/telemetry", telemetry("r1", seq // 4))
                assert pub2.flush() == [0] * 40
            finally:
                pub2.close()
            wait_until(
                lambda: stored_messages(db, site=site) >= BEFORE + AFTER + 40, 90, "the last 40"
            )
            wait_until(
                lambda: metric(base_port, "arbor_ingest_anchor_skipped") >= skipped + 40,
                60,
                "the anchor's copies acked unprocessed",
            )
            assert stored_messages(db, site=site) == BEFORE + AFTER + 40
        else:
            # Until the workers have resubscribed, a probe is lost like the rest: publish one
            # every few seconds until one lands; by then the broker has delivered whatever it
            # kept for the workers' sessions.
            late = "SELECT count(*) FROM message_ledger l JOIN machine m ON m.id = l.machine_id "
            late += "WHERE m.site = %s AND m.machine = 'late'"
            pub3 = _publisher(broker)
            try:
                for k in range(40):
                    pub3.publish(f"arbor/v1/{site}/late/telemetry", telemetry("late", k))
                    assert pub3.flush() == [0]
                    try:
                        wait_until(lambda: int(scalar(db, late, site)) > 0, 3, "a probe")
                        break
                    except AssertionError:
                        continue
            finally:
                pub3.close()
            assert int(scalar(db, late, site)) > 0, "the workers never resubscribed"
            time.sleep(2)  # what the broker kept for the sessions is delivered by now
            stored = stored_messages(db, site=site) - int(scalar(db, late, site))
            lost = BEFORE + AFTER - stored
            print(f"control: {lost} of {AFTER} messages lost without the anchor")
            assert lost > 0, "Mosquitto kept the shared subscriptions: the anchor may be unneeded"
