"""The simulated i5 across a broker restart (bug 1 of docs/reliability.md): on a private Mosquitto
(tests/servers.py) that is stopped and started again while the factory runs, every machine
reconnects by itself, replays what it buffered, and the ground truth counts exactly what the
broker acknowledged; a persistent subscriber on the broker sees every acknowledged message."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol import Event, Status, Telemetry, decode, parse_topic
from simulators.controllers import I5Controllers
from simulators.factory import default_factory
from simulators.model import Fleet
from simulators.mqtt_publisher import MqttTransport
from simulators.truth import Truth
from tests.servers import PrivateBroker

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture(scope="module")
def broker() -> Iterator[PrivateBroker]:
    with PrivateBroker() as b:
        yield b


class PersistentSubscriber:
    """A plain (not shared) QoS 1 subscription in a persistent session, so what the broker
    acknowledges while this client is away is queued for it across the restart; paho's own
    loop reconnects it."""

    def __init__(self, broker: PrivateBroker, site: str) -> None:
        self.messages: list[tuple[str, str, Any]] = []
        self.lock = threading.RLock()
        self.subscribed = threading.Event()
        user, pw = broker.service_credentials
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"sub-{site}",
            protocol=mqtt.MQTTv5,
        )
        c.username_pw_set(user, pw)
        c.reconnect_delay_set(0.1, 1)
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self.subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        c.connect(broker.host, broker.port, clean_start=False, properties=props)
        c.subscribe(f"arbor/v1/{site}/#", qos=1)
        c.loop_start()
        assert self.subscribed.wait(20)
        self.client = c

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        topic = parse_topic(msg.topic)
        with self.lock:
            decoded = decode(topic, msg.payload)
            self.messages.append((topic.machine or "", topic.channel.value, decoded))

    def wait_for(self, pred: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if pred():
                    return
            time.sleep(0.1)
        raise AssertionError("timed out waiting for messages")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _step(fleet: Fleet, truth: Truth, ctl: I5Controllers, tp: MqttTransport, n: int) -> None:
    for _ in range(n):
        tp.service(0.0)
        rep = fleet.step()
        truth.observe(fleet, rep)
        ctl.on_step(rep)


def _delivered(sub: PersistentSubscriber) -> dict[str, dict[str, set[int]]]:
    out: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    with sub.lock:
        for machine, _, msg in sub.messages:
            if isinstance(msg, Telemetry | Event):
                out[machine][msg.session].add(msg.seq)
    return out


def _run(broker: PrivateBroker, site: str, buffer_max: int) -> tuple[dict[str, Any], Any, Any]:
    start = datetime(2025, 3, 3, 6, 0, tzinfo=UTC).timestamp()
    fleet = Fleet(default_factory(4, site=site), rate_hz=10, start=start, seed=11)
    ids = [m.machine_id for m in fleet.factory.machines]
    creds = broker.ensure_machines([(site, mid) for mid in ids])
    sub = PersistentSubscriber(broker, site)
    tp = MqttTransport(
        broker.host, broker.port, site=site, machine_ids=ids, username=None, password=None,
        credentials={i: creds[(site, mid)] for i, mid in enumerate(ids)},
        buffer_max=buffer_max, reconnect_min=0.1, reconnect_max=1.0, keepalive=5,
    )  # fmt: skip
    truth = Truth(fleet)
    ctl = I5Controllers(fleet, tp, truth=truth, run_id="rc")
    try:
        _step(fleet, truth, ctl, tp, 100)  # 10 s: every machine born and streaming
        tp.wait_connected(30)
        assert tp.drain(30)
        broker.stop()  # SIGTERM: Mosquitto saves its persistence (our subscriber's session)
        deadline = time.monotonic() + 30
        while tp.stats.disconnects < len(ids):  # every machine notices the dead link
            assert time.monotonic() < deadline, "the transport never noticed the broker going"
            tp.service(0.05)
        _step(fleet, truth, ctl, tp, 300)  # 30 simulated s produced while the broker is away
        assert tp.stats.connects == len(ids)
        broker.start()
        deadline = time.monotonic() + 60
        while tp.stats.reconnects < len(ids):  # nobody calls reconnect: the transport does
            assert time.monotonic() < deadline, f"reconnected {tp.stats.reconnects} of {len(ids)}"
            _step(fleet, truth, ctl, tp, 1)
            tp.service(0.05)
        _step(fleet, truth, ctl, tp, 100)
        ctl.shutdown(fleet.time)
        tp.stop(60)
        summary = truth.summary()
        expected = {
            mid: {s["session"]: s["messages"] for s in m["sessions"]}
            for mid, m in summary["machines"].items()
        }

        def complete() -> bool:  # as many distinct messages as the truth says were acked
            got = {m: dict(v) for m, v in _delivered(sub).items()}
            return all(
                len(got.get(mid, {}).get(sess, set())) >= n
                for mid, sessions in expected.items()
                for sess, n in sessions.items()
            )

        sub.wait_for(complete, 60)
        time.sleep(0.5)  # a late redelivery would still show up below
    finally:
        sub.stop()
    return summary, tp.stats, sub


def test_machines_reconnect_and_replay_after_a_broker_restart(broker: PrivateBroker) -> None:
    site = f"rc{int(time.time() * 1000) % 10**8}"
    summary, stats, sub = _run(broker, site, buffer_max=1000)
    machines = summary["machines"]
    assert stats.reconnects == stats.disconnects == 4
    assert stats.dropped == 0 and stats.refused == 0 and stats.pending == 0
    # The truth counts what the broker acknowledged, every message once.
    counted = sum(sum(m["messages"].values()) for m in machines.values())
    assert counted == stats.acked == stats.published
    delivered = _delivered(sub)
    historical = 0
    for mid, m in machines.items():
        sessions = m["sessions"]
        assert len(sessions) == 2, sessions  # the birth, and a new birth after the reconnect
        for s in sessions:
            got = delivered[mid][s["session"]]
            assert got == set(range(s["last_seq"] + 1)), (mid, s)  # no gap, nothing extra
            assert s["messages"] == s["last_seq"] + 1 and s["dropped"] == 0
        assert set(delivered[mid]) == {s["session"] for s in sessions}
        # Each message once (QoS 1 may deliver one twice: ingest keys on session and seq).
        unique = {
            (msg.session, msg.seq): msg
            for machine, _, msg in sub.messages
            if machine == mid and isinstance(msg, Telemetry)
        }
        every = [smp.ts for msg in unique.values() for smp in msg.samples]
        # Every tick's sample arrived exactly once (the machines run for the whole window).
        assert len(every) == len(set(every)) == m["samples"] == summary["window"]["ticks"]
        old = sessions[0]["session"]
        historical += sum(
            1
            for machine, _, msg in sub.messages
            if machine == mid and isinstance(msg, Telemetry | Event) and msg.historical
            and msg.session == old
        )  # fmt: skip
        statuses = [msg for machine, ch, msg in sub.messages if machine == mid and ch == "status"]
        assert isinstance(statuses[-1], Status)
        assert (statuses[-1].online, statuses[-1].reason) == (False, "shutdown")
        assert statuses[-1].session == sessions[1]["session"]
        births = [s.session for s in statuses if s.online]
        assert births[0] == sessions[0]["session"] and births[-1] == sessions[1]["session"]
    # What was produced during the outage went out after the reconnect, marked historical.
    assert historical >= 4 * 30


def test_a_full_buffer_drops_the_oldest_and_the_truth_says_so(broker: PrivateBroker) -> None:
    site = f"rd{int(time.time() * 1000) % 10**8}"
    summary, stats, sub = _run(broker, site, buffer_max=10)
    machines = summary["machines"]
    assert stats.dropped > 0 and stats.pending == 0
    counted = sum(sum(m["messages"].values()) for m in machines.values())
    assert counted == stats.acked == stats.published - stats.dropped
    delivered = _delivered(sub)
    for mid, m in machines.items():
        old = m["sessions"][0]
        got = delivered[mid][old["session"]]
        # Only the newest 10 survived the outage: the rest is a gap the ingest can see, and the
        # truth counts just what arrived.
        assert old["dropped"] > 0
        assert len(got) == old["messages"] == old["last_seq"] + 1 - old["dropped"]
        assert max(got) == old["last_seq"]
