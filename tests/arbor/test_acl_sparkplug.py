"""The Sparkplug B edge node role on a real Mosquitto configured by `arbor up`'s own code.

An edge node account (`arbor machines add --sparkplug GROUP/NODE`) lets a real Sparkplug edge node
connect without the service account: it may publish its own births, data and death (NDEATH also as
its Last Will) and those of its devices, read the commands addressed to it and its devices and the
host applications' STATE, and nothing else. Refusals are proved as in test_acl_matrix.py (PUBACK
135 and nobody receives it; a forbidden read is never delivered, shown with a sentinel).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from arbor.cli import main as arbor_main
from protocol.endpoint import MqttEndpoint
from tests.arbor.mqtt_helpers import MqttConn, TlsBroker, wait_until

pytestmark = pytest.mark.services

GROUP, NODE = "plant1", "edge1"


@pytest.fixture(scope="module")
def broker() -> Iterator[TlsBroker]:
    with TlsBroker() as b:
        yield b


@pytest.fixture(scope="module")
def node(broker: TlsBroker) -> MqttEndpoint:
    creds = broker.machines([(GROUP, NODE)], sparkplug=True)
    return broker.endpoint(*creds[(GROUP, NODE)])


@pytest.fixture
def observer(broker: TlsBroker) -> Iterator[MqttConn]:
    with MqttConn(broker.service()) as conn:
        assert conn.connect() == 0
        assert conn.subscribe("arbor/#", "spBv1.0/#") == [1, 1]
        yield conn


def _sentinel(broker: TlsBroker, observer: MqttConn) -> None:
    with MqttConn(broker.service()) as conn:
        assert conn.connect() == 0
        topic, payload = "spBv1.0/sentinel/NDATA/s", conn.client_id.encode()
        assert conn.publish(topic, payload) < 128
    observer.wait_for(topic, payload)


PUBLISH = {
    # topic -> allowed
    f"spBv1.0/{GROUP}/NBIRTH/{NODE}": True,
    f"spBv1.0/{GROUP}/NDATA/{NODE}": True,
    f"spBv1.0/{GROUP}/NDEATH/{NODE}": True,
    f"spBv1.0/{GROUP}/DBIRTH/{NODE}/dev1": True,
    f"spBv1.0/{GROUP}/DDATA/{NODE}/dev1": True,
    f"spBv1.0/{GROUP}/DDEATH/{NODE}/dev1": True,
    f"spBv1.0/{GROUP}/NDATA/edge2": False,  # another node of its group
    f"spBv1.0/plant2/NDATA/{NODE}": False,  # its node id in another group
    f"spBv1.0/{GROUP}/DDATA/edge2/dev1": False,
    f"spBv1.0/{GROUP}/NCMD/{NODE}": False,  # only host applications command
    f"spBv1.0/{GROUP}/DCMD/{NODE}/dev1": False,
    "spBv1.0/STATE/host1": False,
    f"spBv1.0/{GROUP}/DDATA/{NODE}/dev1/extra": False,
    f"arbor/v1/{GROUP}/{NODE}/telemetry": False,  # not an Arbor v1 machine
}


@pytest.mark.parametrize("topic", list(PUBLISH))
def test_publish(broker: TlsBroker, node: MqttEndpoint, observer: MqttConn, topic: str) -> None:
    payload = f"edge node: {topic}".encode()
    with MqttConn(node) as conn:
        assert conn.connect() == 0
        code = conn.publish(topic, payload)
    _sentinel(broker, observer)
    allowed = PUBLISH[topic]
    assert (code < 128, observer.received(topic, payload)) == (allowed, allowed), f"PUBACK {code}"
    if not allowed:
        assert code == 135


@pytest.mark.parametrize(("topic", "allowed"), [
    (f"spBv1.0/{GROUP}/NDEATH/{NODE}", True),
    ("spBv1.0/plant1/NDEATH/edge2", False),
])  # fmt: skip
def test_ndeath_as_last_will(
    broker: TlsBroker, node: MqttEndpoint, observer: MqttConn, topic: str, allowed: bool
) -> None:
    payload = f"will: {topic}".encode()
    conn = MqttConn(node).will(topic, payload)
    try:
        connack = conn.connect()
        if connack == 0:
            conn.disconnect_with_will()
            wait_until(
                lambda: f"Client {conn.client_id} disconnected" in broker.log.read_text(),
                what="the broker to handle the DISCONNECT",
            )
    finally:
        conn.close()
    _sentinel(broker, observer)
    assert observer.received(topic, payload) == allowed, f"CONNACK {connack}"


READ = {
    f"spBv1.0/{GROUP}/NCMD/{NODE}": True,
    f"spBv1.0/{GROUP}/DCMD/{NODE}/dev1": True,
    "spBv1.0/STATE/host1": True,
    f"spBv1.0/{GROUP}/NCMD/edge2": False,
    f"spBv1.0/{GROUP}/NDATA/edge2": False,  # other nodes' data
    f"spBv1.0/{GROUP}/NDATA/{NODE}": False,  # not even its own echo: it has no need
    f"arbor/v1/{GROUP}/m1/telemetry": False,
}


@pytest.mark.parametrize("topic", list(READ))
def test_read(broker: TlsBroker, node: MqttEndpoint, topic: str) -> None:
    payload = f"for the edge node: {topic}".encode()
    sentinel = f"spBv1.0/{GROUP}/NCMD/{NODE}", payload + b" (sentinel)"
    with MqttConn(node) as reader:
        assert reader.connect() == 0
        assert all(code < 128 for code in reader.subscribe("#", "spBv1.0/#"))
        with MqttConn(broker.service()) as sender:
            assert sender.connect() == 0
            assert sender.publish(topic, payload) < 128
            assert sender.publish(*sentinel) < 128
        reader.wait_for(*sentinel)
        assert reader.received(topic, payload) == READ[topic]


def test_arbor_machines_add_sparkplug_writes_the_credentials_file(
    broker: TlsBroker, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARBOR_STATE_DIR", str(broker.settings.state_dir))
    monkeypatch.setenv("ARBOR_MQTT_PORT", str(broker.settings.mqtt_port))
    assert arbor_main(["machines", "add", "--sparkplug", "plant1/edge9"]) == 0
    out = capsys.readouterr().out
    assert "Sparkplug edge node plant1/edge9: broker user spb/plant1/edge9" in out
    secrets = json.loads((broker.settings.secrets_dir / "machines.json").read_text())
    entry = secrets["spBv1.0/plant1/edge9"]
    assert entry["username"] == "spb/plant1/edge9"
    # the account works at once (the CLI reloaded the broker and waited)
    with MqttConn(broker.endpoint(entry["username"], entry["password"])) as conn:
        assert conn.connect() == 0
        assert conn.publish("spBv1.0/plant1/NBIRTH/edge9", b"birth") < 128
    assert arbor_main(["machines", "add", "--sparkplug", "not-a-pair"]) == 2
    assert "expected GROUP/NODE" in capsys.readouterr().err


def test_ignition_default_ids_with_capitals_spaces_and_dots(
    broker: TlsBroker, observer: MqttConn
) -> None:
    """Ignition's MQTT Transmission names its group "Edge Nodes" and its nodes "Edge Node
    <id>"; IP addresses are common node ids. Such a node gets its own account and the same
    rights as any other: its own topics, not its neighbour's."""
    group, node = "Edge Nodes", "Edge Node 10.0.0.7"
    creds = broker.machines([(group, node)], sparkplug=True)
    user, password = creds[(group, node)]
    assert user == f"spb/{group}/{node}"
    own, other = f"spBv1.0/{group}/NBIRTH/{node}", f"spBv1.0/{group}/NBIRTH/Edge Node 10.0.0.8"
    with MqttConn(broker.endpoint(user, password)) as conn:
        assert conn.connect() == 0
        assert conn.publish(own, b"own birth") < 128
        assert conn.publish(other, b"not its own") == 135
    _sentinel(broker, observer)
    assert observer.received(own, b"own birth")
    assert not observer.received(other, b"not its own")
    with pytest.raises(ValueError, match="Sparkplug group and edge node ids"):
        broker.machines([("Edge Nodes", "a:b")], sparkplug=True)
