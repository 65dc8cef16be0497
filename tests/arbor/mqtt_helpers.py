"""Test helpers: a real MQTT 5 connection that reports every answer of the broker, and a private
Mosquitto with the stack's TLS listener (tests/servers.py's PrivateBroker has no TLS port)."""

from __future__ import annotations

import secrets
import shutil
import threading
import time
from pathlib import Path
from types import TracebackType

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from arbor import stack
from arbor.broker import SERVICE_USER, Registry, ensure_machines, ensure_principal, registry_path
from arbor.config import StackSettings
from arbor.paths import project_root
from protocol.endpoint import MqttEndpoint
from tests.servers import free_port

__all__ = ["MqttConn", "TlsBroker", "wait_until"]

TIMEOUT_S = 30.0  # two cores shared with other test runs: generous, and only ever polled


def wait_until(predicate: object, timeout_s: float = TIMEOUT_S, what: str = "condition") -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class MqttConn:
    """One MQTT 5 client: `connect()` returns the CONNACK reason code, `publish()` the PUBACK's,
    `subscribe()` the SUBACK's; `messages` records (topic, payload) in arrival order."""

    def __init__(self, endpoint: MqttEndpoint, client_id: str | None = None) -> None:
        self.endpoint = endpoint
        self.client_id = client_id or f"t-{secrets.token_hex(5)}"
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._connack: list[int] = []
        self._acks: dict[int, int] = {}
        self._subacks: dict[int, list[int]] = {}
        self.closed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5
        )
        endpoint.configure(self.client)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *a: self.closed.set()
        self._started = False

    # paho's thread
    def _on_connect(self, c: mqtt.Client, u: object, f: object, rc: ReasonCode, p: object) -> None:
        self._connack.append(int(rc.value))

    def _on_publish(self, c: mqtt.Client, u: object, mid: int, rc: ReasonCode, p: object) -> None:
        with self._lock:
            self._acks[mid] = int(rc.value)

    def _on_subscribe(
        self, c: mqtt.Client, u: object, mid: int, codes: list[ReasonCode], p: object
    ) -> None:
        with self._lock:
            self._subacks[mid] = [int(rc.value) for rc in codes]

    def _on_message(self, c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    # the test's thread
    def will(self, topic: str, payload: bytes, retain: bool = False) -> MqttConn:
        self.client.will_set(topic, payload, qos=1, retain=retain)
        return self

    def connect(self) -> int:
        self.client.connect(self.endpoint.host, self.endpoint.port, keepalive=30)
        self.client.loop_start()
        self._started = True
        wait_until(lambda: self._connack or self.closed.is_set(), what="CONNACK")
        return self._connack[0] if self._connack else -1

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> int:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        wait_until(lambda: info.mid in self._acks, what=f"PUBACK for {topic}")
        return self._acks[info.mid]

    def subscribe(self, *filters: str) -> list[int]:
        _rc, mid = self.client.subscribe([(f, 1) for f in filters])
        assert mid is not None
        wait_until(lambda: mid in self._subacks, what="SUBACK")
        return self._subacks[mid]

    def received(self, topic: str, payload: bytes) -> bool:
        with self._lock:
            return (topic, payload) in self.messages

    def wait_for(self, topic: str, payload: bytes) -> None:
        wait_until(lambda: self.received(topic, payload), what=f"{topic} to arrive")

    def disconnect_with_will(self) -> None:
        """MQTT 5 DISCONNECT with reason 4: the broker publishes the Will as if the link broke."""
        self.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=4))
        wait_until(self.closed.is_set, what="disconnect")

    def close(self) -> None:
        if self._started:
            self.client.disconnect()
            # paho closes its socket before it reports the disconnect: wait for that, or the
            # socket may outlive the loop thread (a ResourceWarning, an error under pytest).
            self.closed.wait(TIMEOUT_S)
            self.client.loop_stop()
            self._started = False

    def __enter__(self) -> MqttConn:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class TlsBroker:
    """A Mosquitto of its own, started by the stack's code: plain and TLS listeners, its own CA."""

    def __init__(self) -> None:
        root = project_root() / ".arbor" / "test-servers" / f"tls-{secrets.token_hex(4)}"
        self.settings = StackSettings(
            state_dir=root,
            mqtt_port=free_port(),
            mqtt_tls_port=free_port(),
            mqtt_max_queued_messages=10_000,
        )
        self.host = "127.0.0.1"

    @property
    def ca_file(self) -> Path:
        return self.settings.ca_file

    @property
    def log(self) -> Path:
        return self.settings.mqtt_dir / "mosquitto.log"

    def service(self, tls: bool = True) -> MqttEndpoint:
        p = Registry(registry_path(self.settings)).principals[SERVICE_USER]
        return self.endpoint(p.username, p.password, tls)

    def endpoint(self, user: str, password: str, tls: bool = True) -> MqttEndpoint:
        if tls:
            return MqttEndpoint(
                self.host, self.settings.tls_port, user, password, True, str(self.ca_file)
            )
        return MqttEndpoint(self.host, self.settings.mqtt_port, user, password)

    def url(self, tls: bool = True) -> str:
        return stack.mqtt_tls_url(self.settings) if tls else stack.mqtt_url(self.settings)

    def machines(
        self, pairs: list[tuple[str, str]], sparkplug: bool = False
    ) -> dict[tuple[str, str], tuple[str, str]]:
        return ensure_machines(pairs, self.settings, sparkplug=sparkplug)

    def gateway(self, username: str, pairs: list[tuple[str, str]]) -> tuple[str, str]:
        p = ensure_principal(self.settings, username, "gateway", pairs)
        return p.username, p.password

    def __enter__(self) -> TlsBroker:
        stack._mqtt_start(self.settings)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack._mqtt_stop(self.settings)
        shutil.rmtree(self.settings.state_dir, ignore_errors=True)
