"""The broker's door: no anonymous access, machines confined to their own topics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from arbor.broker import Registry, mosquitto_password_hash, render_acl
from arbor.mqttprobe import try_connect
from tests.conftest import MqttSettings

Provision = Callable[[list[tuple[str, str]]], dict[tuple[str, str], tuple[str, str]]]


def test_password_hash_has_mosquitto_format() -> None:
    h = mosquitto_password_hash("secret", salt=b"0123456789ab")
    algo, iterations, salt, digest = h.split("$")[1:]
    assert (algo, iterations, salt) == ("7", "101", "MDEyMzQ1Njc4OWFi")
    assert len(digest) == 88  # 64 bytes of PBKDF2-SHA512, base64


def test_acl_confines_machines_and_opens_services(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    reg = Registry(tmp_path / "broker.json")
    reg.add("arbor-service", "service")
    reg.add("p1.m1", "machine", [("p1", "m1")])
    reg.add("gw1", "gateway", [("p1", "m2"), ("p1", "m3")])
    acl = render_acl(reg)
    assert (
        "user p1.m1\ntopic write arbor/v1/p1/m1/status\ntopic write arbor/v1/p1/m1/telemetry\n"
        "topic write arbor/v1/p1/m1/event\ntopic write arbor/v1/p1/m1/reply/#\n"
        "topic read arbor/v1/p1/m1/cmd/#\n"
    ) in acl
    assert "topic write arbor/v1/p1/m2/event" in acl and "topic write arbor/v1/p1/m3/event" in acl
    assert "/cmd/#\n" in acl and "write arbor/v1/p1/m1/cmd" not in acl  # only services command
    assert "user arbor-service\ntopic readwrite arbor/#" in acl
    with pytest.raises(ValueError, match="must match"):
        reg.add("bad", "machine", [("Plant 1", "m1")])


class _Collector:
    """A real MQTT 5 subscriber that records what it receives."""

    def __init__(self, mqtt_settings: MqttSettings, topic: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(mqtt_settings.username, mqtt_settings.password)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.connect(mqtt_settings.host, mqtt_settings.port)
        self.client.loop_start()
        assert self._subscribed.wait(5), "subscription not acknowledged"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _publish(
    mqtt_settings: MqttSettings, user: str, password: str, items: list[tuple[str, bytes]]
) -> list[int]:
    """Publish at QoS 1 and return the PUBACK reason codes (MQTT 5 says 135 when not authorised)."""
    codes: list[int] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(user, password)

    def on_publish(c: mqtt.Client, u: object, mid: int, rc: object, props: object) -> None:
        codes.append(int(getattr(rc, "value", 0)))
        if len(codes) == len(items):
            done.set()

    client.on_publish = on_publish
    client.connect(mqtt_settings.host, mqtt_settings.port)
    client.loop_start()
    try:
        for topic, payload in items:
            client.publish(topic, payload, qos=1)
        assert done.wait(5), "publishes not acknowledged"
    finally:
        client.disconnect()
        client.loop_stop()
    return codes


@pytest.mark.services
def test_anonymous_connect_is_refused(mqtt_settings: MqttSettings) -> None:
    result = try_connect(mqtt_settings.host, mqtt_settings.port, None, None)
    assert not result.accepted
    assert "authori" in result.reason.lower()


@pytest.mark.services
def test_wrong_password_is_refused(mqtt_settings: MqttSettings) -> None:
    result = try_connect(mqtt_settings.host, mqtt_settings.port, mqtt_settings.username, "nope")
    assert not result.accepted


@pytest.mark.services
def test_machine_cannot_publish_as_another_machine(
    mqtt_settings: MqttSettings, provision_machines: Provision, unique_site: str
) -> None:
    creds = provision_machines([(unique_site, "m1"), (unique_site, "m2")])
    user, password = creds[(unique_site, "m1")]
    sub = _Collector(mqtt_settings, f"arbor/v1/{unique_site}/#")
    try:
        codes = _publish(
            mqtt_settings,
            user,
            password,
            [
                (f"arbor/v1/{unique_site}/m2/telemetry", b"spoofed"),
                (f"arbor/v1/{unique_site}/m1/telemetry", b"own"),
            ],
        )
        deadline = time.monotonic() + 5
        while not sub.messages and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # a spoofed message, if let through, would arrive right behind
    finally:
        sub.close()
    assert sub.messages == [(f"arbor/v1/{unique_site}/m1/telemetry", b"own")]
    assert codes[0] == 135  # MQTT 5 "Not authorized" on the spoofed publish


@pytest.mark.services
def test_machine_reads_only_its_own_commands(
    mqtt_settings: MqttSettings, provision_machines: Provision, unique_site: str
) -> None:
    creds = provision_machines([(unique_site, "m3")])
    user, password = creds[(unique_site, "m3")]
    received: list[str] = []
    granted: list[int] = []
    ready = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(user, password)
    client.on_message = lambda c, u, m: received.append(m.topic)

    def on_subscribe(c: mqtt.Client, u: object, mid: int, codes: list[object], p: object) -> None:
        granted.extend(int(getattr(rc, "value", 0)) for rc in codes)
        ready.set()

    client.on_subscribe = on_subscribe
    client.on_connect = lambda c, *a: c.subscribe(
        [(f"arbor/v1/{unique_site}/m3/cmd/#", 1), (f"arbor/v1/{unique_site}/m1/cmd/#", 1)]
    )
    client.connect(mqtt_settings.host, mqtt_settings.port)
    client.loop_start()
    try:
        assert ready.wait(5)
        _publish(
            mqtt_settings,
            mqtt_settings.username,
            mqtt_settings.password,
            [
                (f"arbor/v1/{unique_site}/m1/cmd/program", b"not yours"),
                (f"arbor/v1/{unique_site}/m3/cmd/program", b"yours"),
            ],
        )
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
    finally:
        client.disconnect()
        client.loop_stop()
    # Mosquitto 2.0 grants the subscription and applies the read ACL to each message it would
    # deliver, so what counts is that the other machine's command never arrives.
    assert granted == [1, 1]
    assert received == [f"arbor/v1/{unique_site}/m3/cmd/program"]
