"""Birth, death (clean and Last Will), session and seq, seen by a real subscriber on the real
broker of `arbor up` (per-machine credentials from the lead's provisioning)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from protocol import Event, Status, Telemetry, decode, parse_topic
from simulators.controllers import I5Controllers
from simulators.factory import default_factory
from simulators.model import Fleet
from simulators.mqtt_publisher import MqttTransport
from simulators.runner import run_loop
from simulators.truth import Truth

pytestmark = pytest.mark.services

Provision = Callable[[list[tuple[str, str]]], dict[tuple[str, str], tuple[str, str]]]


class Subscriber:
    """Collects every decoded message under a site, in arrival order."""

    def __init__(self, settings: Any, site: str) -> None:
        self.messages: list[tuple[str, str, Any, bool]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.username_pw_set(settings.username, settings.password)
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self.ready.set()
        c.connect(settings.host, settings.port)
        c.subscribe(f"arbor/v1/{site}/#", qos=1)
        c.loop_start()
        assert self.ready.wait(10)
        self.client = c

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        topic = parse_topic(msg.topic)
        with self.lock:
            self.messages.append(
                (topic.machine or "", topic.channel.value, decode(topic, msg.payload), msg.retain)
            )

    def wait_for(self, pred: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if pred():
                    return
            time.sleep(0.05)
        raise AssertionError("timed out waiting for messages")

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _fleet(site: str, n: int) -> Fleet:
    start = datetime(2025, 3, 3, 6, 0, tzinfo=UTC).timestamp()
    return Fleet(default_factory(n, site=site), rate_hz=10, start=start, seed=4)


def test_birth_seq_and_clean_death_per_machine(
    mqtt_settings: Any, provision_machines: Provision, unique_site: str
) -> None:
    site = unique_site
    fleet = _fleet(site, 6)
    ids = [m.machine_id for m in fleet.factory.machines]
    creds = provision_machines([(site, mid) for mid in ids])
    sub = Subscriber(mqtt_settings, site)
    transport = MqttTransport(
        mqtt_settings.host, mqtt_settings.port, site=site, machine_ids=ids,
        username=mqtt_settings.username, password=mqtt_settings.password,
        credentials={i: creds[(site, mid)] for i, mid in enumerate(ids)},
    )  # fmt: skip
    truth = Truth(fleet)
    controllers = I5Controllers(fleet, transport, truth=truth, run_id="tb")
    try:
        run_loop(fleet, controllers, truth, duration_s=20, speedup=0, transport=transport)
        transport.stop()
        summary = truth.summary()
        expected = sum(sum(m["messages"].values()) for m in summary["machines"].values())
        sub.wait_for(lambda: len(sub.messages) >= expected)
    finally:
        sub.stop()
    assert transport.stats.acked == transport.stats.published == expected
    for mid in ids:
        mine = [(ch, msg) for m, ch, msg, _ in sub.messages if m == mid]
        status = [msg for ch, msg in mine if ch == "status"]
        assert [s.online for s in status] == [True, False]  # birth, then the shutdown death
        assert isinstance(status[0], Status) and status[0].controller.vendor == "i5"
        assert status[1].reason == "shutdown"
        session = status[0].session
        data = [msg for ch, msg in mine if ch in ("telemetry", "event")]
        assert all(d.session == session for d in data)
        assert [d.seq for d in data] == list(range(len(data)))
        assert isinstance(data[0], Event)  # the birth snapshot comes first
        signals = {e.signal for e in data[0].events}
        assert {"execution", "controller_mode", "program", "part_count", "condition"} <= signals
        tele = [d for d in data if isinstance(d, Telemetry)]
        assert sum(len(t.samples) for t in tele) == summary["machines"][mid]["samples"] == 200
        assert summary["machines"][mid]["sessions"][0]["last_seq"] == len(data) - 1


def test_last_will_when_the_connection_dies(
    mqtt_settings: Any, provision_machines: Provision, unique_site: str
) -> None:
    site = unique_site + "w"
    fleet = _fleet(site, 2)
    ids = [m.machine_id for m in fleet.factory.machines]
    creds = provision_machines([(site, mid) for mid in ids])
    sub = Subscriber(mqtt_settings, site)
    transport = MqttTransport(
        mqtt_settings.host, mqtt_settings.port, site=site, machine_ids=ids, username=None,
        password=None, credentials={i: creds[(site, mid)] for i, mid in enumerate(ids)},
    )  # fmt: skip
    controllers = I5Controllers(fleet, transport, run_id="tw")
    try:
        rep = fleet.step()  # 06:00 on a Monday: every machine powers on at the first tick
        assert rep.powered_on.tolist() == [0, 1]
        controllers.on_step(rep)
        transport.wait_connected()
        assert transport.drain(10)
        transport.kill(0)  # no DISCONNECT: the broker publishes machine 0's Will
        sub.wait_for(lambda: any(m == ids[0] and ch == "status" and not msg.online
                                 for m, ch, msg, _ in sub.messages))  # fmt: skip
    finally:
        transport.stop()
        sub.stop()
    will = next(msg for m, ch, msg, _ in sub.messages
                if m == ids[0] and ch == "status" and not msg.online)  # fmt: skip
    assert will.reason == "connection_lost"
    assert will.session == controllers.session[0]
    # Machine 1 is untouched: its only death is the clean one at stop.
    deaths = [msg.reason for m, ch, msg, _ in sub.messages
              if m == ids[1] and ch == "status" and not msg.online]  # fmt: skip
    assert deaths in ([], ["shutdown"])


def test_shared_connection_carries_every_machine(mqtt_settings: Any, unique_site: str) -> None:
    site = unique_site + "s"
    fleet = _fleet(site, 30)
    ids = [m.machine_id for m in fleet.factory.machines]
    sub = Subscriber(mqtt_settings, site)
    transport = MqttTransport(
        mqtt_settings.host, mqtt_settings.port, site=site, machine_ids=ids,
        username=mqtt_settings.username, password=mqtt_settings.password, shared=True,
    )  # fmt: skip
    truth = Truth(fleet)
    controllers = I5Controllers(fleet, transport, truth=truth)
    try:
        run_loop(fleet, controllers, truth, duration_s=5, speedup=0, transport=transport)
        transport.stop()
        n = transport.stats.published
        sub.wait_for(lambda: len(sub.messages) >= n)
    finally:
        sub.stop()
    assert transport.stats.connects == 1
    assert {m for m, *_ in sub.messages} == set(ids)
    births = [msg for _, ch, msg, _ in sub.messages if ch == "status" and msg.online]
    assert len(births) == 30


def test_arbor_sim_over_tls_with_per_machine_accounts(tmp_path: Path, unique_site: str) -> None:
    """`arbor sim --mqtt-url mqtts://...?ca=...`: every machine's connection verifies the broker
    against the local CA, and what the truth says was acknowledged is what arrived."""
    from simulators.cli import run
    from tests.arbor.mqtt_helpers import MqttConn, TlsBroker, wait_until

    site = unique_site
    ids = [m.machine_id for m in default_factory(3, site=site).machines]
    with TlsBroker() as broker:
        broker.machines([(site, mid) for mid in ids])
        with MqttConn(broker.service(tls=False)) as observer:
            assert observer.connect() == 0
            assert observer.subscribe(f"arbor/v1/{site}/#") == [1]
            summary_file = tmp_path / "truth.json"
            code = run([
                "--machines", "3", "--site", site, "--duration", "20", "--speedup", "0",
                "--summary", str(summary_file),
                "--credentials", str(broker.settings.secrets_dir / "machines.json"),
                "--mqtt-url", f"{broker.url(tls=True)}?ca={broker.ca_file}",
            ])  # fmt: skip
            assert code == 0
            summary = json.loads(summary_file.read_text())
            stats = summary["transport_stats"]
            sent = sum(sum(m["messages"].values()) for m in summary["machines"].values())
            assert stats["acked"] == stats["published"] == sent > 0
            assert stats["connects"] >= 1 and stats["reconnects"] == 0

            def arrived() -> int:
                return sum(1 for topic, _ in list(observer.messages) if topic.startswith(site_p))

            site_p = f"arbor/v1/{site}/"
            wait_until(lambda: arrived() >= stats["acked"], what="every acknowledged message")
            assert arrived() == stats["acked"]
