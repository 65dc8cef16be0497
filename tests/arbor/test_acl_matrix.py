"""The broker's ACL matrix on a real Mosquitto configured by `arbor up`'s own code.

Every principal role (arbor/broker.py: service, machine, gateway) x every action the contract
knows, asserted allowed or refused: a refused publish gets PUBACK 135 (MQTT 5 "Not authorized")
and reaches no one, a refused read is never delivered (Mosquitto 2.0 grants the SUBSCRIBE and
applies the read ACL to each message), a refused Last Will is either refused at CONNECT or never
published. "Never delivered" is proved without sleeping: a sentinel the reader may receive is
sent after the forbidden message on the same path, and the reader waits for the sentinel.
docs/security.md shows the same matrix as a table.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from protocol.endpoint import MqttEndpoint
from tests.arbor.mqtt_helpers import MqttConn, TlsBroker, wait_until

pytestmark = pytest.mark.services

SITE = "acl"
OTHER = "m9"  # a machine none of the principals under test serves


@dataclass(frozen=True)
class Principals:
    broker: TlsBroker
    endpoints: dict[str, MqttEndpoint]
    own: dict[str, str]  # role -> the machine it publishes for

    def topic(self, machine: str, channel: str) -> str:
        return f"arbor/v1/{SITE}/{machine}/{channel}"


@pytest.fixture(scope="module")
def principals() -> Iterator[Principals]:
    with TlsBroker() as broker:
        creds = broker.machines([(SITE, "m1"), (SITE, OTHER)])
        gw_user, gw_pw = broker.gateway("gw1", [(SITE, "m2"), (SITE, "m3")])
        endpoints = {
            "service": broker.service(),
            "machine": broker.endpoint(*creds[(SITE, "m1")]),
            "gateway": broker.endpoint(gw_user, gw_pw),
        }
        yield Principals(broker, endpoints, {"service": "m1", "machine": "m1", "gateway": "m3"})


@pytest.fixture
def observer(principals: Principals) -> Iterator[MqttConn]:
    """The service account listening to everything, to see what actually got through."""
    with MqttConn(principals.endpoints["service"]) as conn:
        assert conn.connect() == 0
        assert conn.subscribe("arbor/#", "spBv1.0/#") == [1, 1]
        yield conn


def _sentinel(p: Principals, observer: MqttConn) -> None:
    """A message published after everything else: once it is in, anything earlier is too."""
    with MqttConn(p.endpoints["service"]) as conn:
        assert conn.connect() == 0
        topic, payload = p.topic("sentinel", "event"), conn.client_id.encode()
        assert conn.publish(topic, payload) < 128
    observer.wait_for(topic, payload)


# --- publishing --------------------------------------------------------------------------------

PUBLISH_ACTIONS = {
    # action -> (machine: "own" or "other", channel)
    "publish own telemetry": ("own", "telemetry"),
    "publish own status": ("own", "status"),
    "publish own event": ("own", "event"),
    "publish own reply": ("own", "reply/program"),
    "publish another machine's telemetry": ("other", "telemetry"),
    "publish another machine's status": ("other", "status"),
    "publish a command to itself": ("own", "cmd/program"),
    "publish a command to another machine": ("other", "cmd/program"),
    "publish spBv1.0": ("spb", "spBv1.0/acl/NDATA/node1"),
}
ALLOWED_PUBLISH = {
    "service": set(PUBLISH_ACTIONS),
    "machine": {
        "publish own telemetry",
        "publish own status",
        "publish own event",
        "publish own reply",
    },
}
ALLOWED_PUBLISH["gateway"] = ALLOWED_PUBLISH["machine"]


@pytest.mark.parametrize("action", list(PUBLISH_ACTIONS))
@pytest.mark.parametrize("role", ["service", "machine", "gateway"])
def test_publish(principals: Principals, observer: MqttConn, role: str, action: str) -> None:
    which, channel = PUBLISH_ACTIONS[action]
    if which == "spb":
        topic = channel
    else:
        topic = principals.topic(principals.own[role] if which == "own" else OTHER, channel)
    payload = f"{role}:{action}".encode()
    with MqttConn(principals.endpoints[role]) as conn:
        assert conn.connect() == 0
        code = conn.publish(topic, payload)
    _sentinel(principals, observer)
    allowed = action in ALLOWED_PUBLISH[role]
    assert (code < 128, observer.received(topic, payload)) == (allowed, allowed), (
        f"{role} / {action}: PUBACK {code}"
    )
    if not allowed:
        assert code == 135


# --- Last Will ---------------------------------------------------------------------------------


@pytest.mark.parametrize("whose", ["own", "other"])
@pytest.mark.parametrize("role", ["service", "machine", "gateway"])
def test_last_will_on_a_status_topic(
    principals: Principals, observer: MqttConn, role: str, whose: str
) -> None:
    machine = principals.own[role] if whose == "own" else OTHER
    topic = principals.topic(machine, "status")
    payload = f"will of {role} for {machine}".encode()
    conn = MqttConn(principals.endpoints[role]).will(topic, payload)
    try:
        connack = conn.connect()
        if connack == 0:
            conn.disconnect_with_will()
            # Mosquitto logs the DISCONNECT when it handles it, and publishes the Will right then.
            wait_until(
                lambda: (
                    f"Client {conn.client_id} disconnected" in principals.broker.log.read_text()
                ),
                what="the broker to handle the DISCONNECT",
            )
    finally:
        conn.close()
    _sentinel(principals, observer)
    allowed = role == "service" or whose == "own"
    assert observer.received(topic, payload) == allowed, f"{role}: CONNACK {connack}"
    if allowed:
        assert connack == 0


# --- reading -----------------------------------------------------------------------------------

READ_ACTIONS = {
    # action -> (topic publisher: "own" / "other" machine, channel)
    "receive its own commands": ("own", "cmd/program"),
    "receive another machine's commands": ("other", "cmd/program"),
    "receive another machine's telemetry": ("other", "telemetry"),
    "receive another machine's status": ("other", "status"),
    "receive another machine's replies": ("other", "reply/program"),
    "receive spBv1.0": ("spb", "spBv1.0/acl/NDATA/node1"),
}
ALLOWED_READ = {
    "service": set(READ_ACTIONS),
    "machine": {"receive its own commands"},
    "gateway": {"receive its own commands"},
}


@pytest.mark.parametrize("action", list(READ_ACTIONS))
@pytest.mark.parametrize("role", ["service", "machine", "gateway"])
def test_read(principals: Principals, role: str, action: str) -> None:
    which, channel = READ_ACTIONS[action]
    own = principals.own[role]
    if which == "spb":
        topic = channel
    else:
        topic = principals.topic(own if which == "own" else OTHER, channel)
    payload = f"for {role}: {action}".encode()
    # The reader asks for everything; the broker must hand it only what its ACL lets it read.
    sentinel = principals.topic(own, "cmd/sentinel"), payload + b" (sentinel)"
    with MqttConn(principals.endpoints[role]) as reader:
        assert reader.connect() == 0
        granted = reader.subscribe("#", "arbor/#", "spBv1.0/#")
        assert all(code < 128 for code in granted)  # Mosquitto 2.0 filters per message
        with MqttConn(principals.endpoints["service"]) as sender:
            assert sender.connect() == 0
            assert sender.publish(topic, payload) < 128
            assert sender.publish(*sentinel) < 128
        reader.wait_for(*sentinel)
        got = reader.received(topic, payload)
    assert got == (action in ALLOWED_READ[role]), f"{role} / {action}"
