"""Sparkplug B sessions as real edge nodes publish them, through ingest's decoder and host.

Sources (expected values are read from them):

* The Eclipse Sparkplug 3.0 specification, chapter 6 "Payloads" (github.com/eclipse-sparkplug/
  sparkplug, EPL-2.0): the "Sparkplug B Devices" / "Raspberry Pi" / "Pibrella" NBIRTH, DBIRTH,
  NDATA, DDATA and NDEATH examples (names, datatypes, values, timestamp 1486144502122).
* Eclipse Tahu's Python example (github.com/eclipse/tahu, python/examples/example.py, EPL-2.0):
  "Python Edge Node 1" / "Emulated Device" with node controls, a null metric, a DataSet, a
  property, the "_types_/Custom_Motor" template and its instance, alias-only DDATA with a
  Quality property of 500 (STALE).

Each payload is built field by field with the protobuf classes, as the edge node would.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ingest.config import IngestSettings
from ingest.decode import Decoder
from ingest.records import WIDE_INDEX, Accepted, Ack, DecodedBatch, Raw
from ingest.sparkplug import arbor_id
from protocol.sparkplug import DataType, PayloadPb
from tests.conftest import MqttSettings
from tests.ingest.helpers import (
    Publisher,
    metric,
    rows,
    scalar,
    wait_ready,
    wait_until,
    worker_env,
    workers,
)
from tests.servers import free_port

T = 1486144502122  # the spec examples' timestamp (2017-02-03T17:55:02.122Z)
SPEC_TIME = datetime(2017, 2, 3, 17, 55, 2, 122000, tzinfo=UTC)


def _decoder(**update: Any) -> Decoder:
    # The spec's examples are from 2017: widen the accepted past so their timestamps are kept.
    settings = IngestSettings(
        database_url="postgresql://unused",
        mqtt_url="mqtt://unused",
        max_past=timedelta(days=365 * 30),
        sparkplug_metric_map={"Supply Voltage": "power"},
    )
    return Decoder(settings.model_copy(update=update))


def _raw(topic: str, pb: Any, i: int = 0, received: float | None = None) -> Raw:
    data = pb if isinstance(pb, bytes) else pb.SerializeToString()
    return Raw(topic, data, Ack(i, 1, 1), received if received is not None else time.time())


def _add(container: Any, name: str | None, dtype: DataType, value: Any, **kw: Any) -> Any:
    m = container.metrics.add(datatype=int(dtype), **kw)
    if name is not None:
        m.name = name
    if value is None:
        m.is_null = True
    elif dtype is DataType.BOOLEAN:
        m.boolean_value = value
    elif dtype is DataType.FLOAT:
        m.float_value = value
    elif dtype is DataType.DOUBLE:
        m.double_value = value
    elif dtype in (DataType.STRING, DataType.TEXT, DataType.UUID):
        m.string_value = value
    elif dtype in (DataType.INT64, DataType.UINT64, DataType.DATETIME):
        m.long_value = value
    elif dtype in (DataType.BYTES, DataType.FILE) or dtype >= DataType.INT8_ARRAY:
        m.bytes_value = value
    else:
        m.int_value = value
    return m


def _extra(acc: Accepted) -> dict[str, Any]:
    return {name: text if text is not None else value for _ts, name, value, text in acc.extra}


# --- the specification's examples --------------------------------------------------------------

GROUP = "Sparkplug B Devices"
NODE = f"spBv1.0/{GROUP}/{{}}/Raspberry Pi"
DEVICE = f"spBv1.0/{GROUP}/{{}}/Raspberry Pi/Pibrella"


def _spec_nbirth() -> Any:
    pb = PayloadPb(timestamp=T, seq=0)
    _add(pb, "bdSeq", DataType.UINT64, 0, timestamp=T)
    _add(pb, "Node Control/Reboot", DataType.BOOLEAN, False, timestamp=T)
    _add(pb, "Node Control/Rebirth", DataType.BOOLEAN, False, timestamp=T)
    _add(pb, "Node Control/Next Server", DataType.BOOLEAN, False, timestamp=T)
    _add(pb, "Node Control/Scan Rate", DataType.INT64, 3000, timestamp=T)
    _add(pb, "Properties/Hardware Make", DataType.STRING, "Raspberry Pi", timestamp=T)
    _add(pb, "Properties/Hardware Model", DataType.STRING, "Pi 3 Model B", timestamp=T)
    _add(pb, "Properties/OS", DataType.STRING, "Raspbian", timestamp=T)
    _add(pb, "Properties/OS Version", DataType.STRING, "Jessie with PIXEL/11.01.2017", timestamp=T)
    _add(pb, "Supply Voltage", DataType.FLOAT, 12.1, timestamp=T)
    return pb


def _spec_dbirth() -> Any:
    pb = PayloadPb(timestamp=T, seq=1)
    names = ["Inputs/A", "Inputs/B", "Inputs/C", "Inputs/D", "Inputs/Button", "Outputs/E"]
    names += ["Outputs/F", "Outputs/G", "Outputs/H", "Outputs/LEDs/Green", "Outputs/LEDs/Red"]
    names += ["Outputs/LEDs/Yellow", "Outputs/Buzzer"]
    for name in names:
        _add(pb, name, DataType.BOOLEAN, False, timestamp=T)
    _add(pb, "Properties/Hardware Make", DataType.STRING, "Pibrella", timestamp=T)
    return pb


def test_the_specifications_session_is_stored() -> None:
    """Every message of the spec's example session is accepted: ids with capitals and spaces
    become Arbor ids, node controls and bdSeq are not data, the Float 12.1 stays 12.1."""
    ndata = PayloadPb(timestamp=T + 1000, seq=2)
    _add(ndata, "Supply Voltage", DataType.FLOAT, 12.3, timestamp=T + 1000)
    # The spec's DDATA example says seq 0; in a real session it follows the NDATA: 3.
    ddata = PayloadPb(timestamp=T + 2000, seq=3)
    _add(ddata, "Inputs/A", DataType.BOOLEAN, True, timestamp=T + 2000)
    _add(ddata, "Inputs/C", DataType.BOOLEAN, True, timestamp=T + 2000)
    ndeath = PayloadPb(timestamp=T + 3000)
    _add(ndeath, "bdSeq", DataType.UINT64, 0, timestamp=T + 3000)
    dec = _decoder()
    out = dec.decode(
        [
            _raw(NODE.format("NBIRTH"), _spec_nbirth()),
            _raw(DEVICE.format("DBIRTH"), _spec_dbirth(), 1),
            _raw(NODE.format("NDATA"), ndata, 2),
            _raw(DEVICE.format("DDATA"), ddata, 3),
            _raw(NODE.format("NDEATH"), ndeath, 4),
        ]
    )
    assert out.dead == [] and out.gaps == [] and out.rebirths == []
    assert [(a.site, a.machine, a.channel, a.seq) for a in out.accepted] == [
        ("sparkplug-b-devices", "raspberry-pi", "nbirth", 0),
        ("sparkplug-b-devices", "pibrella", "dbirth", 1),
        ("sparkplug-b-devices", "raspberry-pi", "ndata", 2),
        ("sparkplug-b-devices", "pibrella", "ddata", 3),
        ("sparkplug-b-devices", "raspberry-pi", "ndeath", -2),
    ]
    nbirth, dbirth, data, ddata_acc, death = out.accepted
    assert nbirth.session == f"spb-0-{T}"
    assert _extra(nbirth) == {
        "Properties/Hardware Make": "Raspberry Pi",
        "Properties/Hardware Model": "Pi 3 Model B",
        "Properties/OS": "Raspbian",
        "Properties/OS Version": "Jessie with PIXEL/11.01.2017",
    }
    power = 1 + WIDE_INDEX["power"]  # "Supply Voltage" is mapped to power in _decoder()
    assert [(r[0], r[power]) for r in nbirth.wide] == [(SPEC_TIME, 12.1)]
    assert [(r[0], r[power]) for r in data.wide] == [(SPEC_TIME + timedelta(seconds=1), 12.3)]
    assert nbirth.n_values == 5  # four properties and the voltage; no bdSeq, no Node Control
    inputs = {n: v for n, v in _extra(dbirth).items() if n != "Properties/Hardware Make"}
    assert len(inputs) == 13 and set(inputs.values()) == {0.0}
    assert _extra(dbirth)["Properties/Hardware Make"] == "Pibrella"
    assert _extra(ddata_acc) == {"Inputs/A": 1.0, "Inputs/C": 1.0}
    assert [(s.machine, s.online) for s in nbirth.status + dbirth.status] == [
        ("raspberry-pi", True),
        ("pibrella", True),
    ]
    assert [(s.machine, s.online, s.reason) for s in death.status] == [
        ("raspberry-pi", False, "node death"),
        ("pibrella", False, "node death"),
    ]
    assert dec.sparkplug.skipped == {}


# --- Tahu's Python example ---------------------------------------------------------------------

TAHU_NODE = "spBv1.0/Sparkplug B Devices/{}/Python Edge Node 1"
TAHU_DEVICE = "spBv1.0/Sparkplug B Devices/{}/Python Edge Node 1/Emulated Device"


def _tahu_births(now: int) -> tuple[Any, Any]:
    nb = PayloadPb(timestamp=now, seq=0)
    _add(nb, "bdSeq", DataType.INT64, 0, timestamp=now)
    for alias, name in ((0, "Next Server"), (1, "Rebirth"), (2, "Reboot")):
        _add(nb, f"Node Control/{name}", DataType.BOOLEAN, False, alias=alias, timestamp=now)
    _add(nb, "Node Metric0", DataType.STRING, "hello node", alias=4, timestamp=now)
    _add(nb, "Node Metric1", DataType.BOOLEAN, True, alias=5, timestamp=now)
    _add(nb, "Node Metric3", DataType.INT32, None, alias=7, timestamp=now)  # addNullMetric
    ds = nb.metrics.add(name="DataSet", alias=3, timestamp=now, datatype=16).dataset_value
    ds.num_of_columns = 3
    ds.columns.extend(["Int8s", "Int16s", "Int32s"])
    ds.types.extend([1, 2, 3])
    for row in ((0, 1, 2), (3, 4, 5)):
        r = ds.rows.add()
        for v in row:
            r.elements.add().int_value = v
    m2 = _add(nb, "Node Metric2", DataType.INT16, 13, alias=6, timestamp=now)
    m2.properties.keys.append("engUnit")
    m2.properties.values.add(type=int(DataType.STRING)).string_value = "MyCustomUnits"
    tdef = nb.metrics.add(name="_types_/Custom_Motor", timestamp=now, datatype=19).template_value
    tdef.is_definition = True
    tdef.parameters.add(name="Index", type=int(DataType.STRING)).string_value = "0"
    for member in ("RPMs", "AMPs"):
        _add(tdef, member, DataType.INT32, 0, timestamp=now)
    db = PayloadPb(timestamp=now, seq=1)
    _add(db, "input/Device Metric0", DataType.STRING, "hello device", alias=8, timestamp=now)
    _add(db, "input/Device Metric1", DataType.BOOLEAN, True, alias=9, timestamp=now)
    _add(db, "output/Device Metric2", DataType.INT16, 16, alias=10, timestamp=now)
    _add(db, "output/Device Metric3", DataType.BOOLEAN, True, alias=11, timestamp=now)
    inst = db.metrics.add(name="My_Custom_Motor", alias=12, timestamp=now, datatype=19)
    inst.template_value.template_ref = "Custom_Motor"
    inst.template_value.is_definition = False
    inst.template_value.parameters.add(name="Index", type=12).string_value = "1"
    _add(inst.template_value, "RPMs", DataType.INT32, 123, timestamp=now)
    _add(inst.template_value, "AMPs", DataType.INT32, 456, timestamp=now)
    return nb, db


def test_tahu_python_example_session() -> None:
    now = int(time.time() * 1000)
    nb, db = _tahu_births(now)
    ddata = PayloadPb(timestamp=now + 1, seq=2)
    _add(ddata, None, DataType.STRING, "qwertyuiopas", alias=8, timestamp=now + 1)
    stale = _add(ddata, None, DataType.BOOLEAN, False, alias=9, timestamp=now + 1)
    stale.properties.keys.append("Quality")
    stale.properties.values.add(type=int(DataType.INT32)).int_value = 500
    _add(ddata, None, DataType.INT16, 2**32 - 7, alias=10, timestamp=now + 1)  # Java (Short) -7
    dec = _decoder()
    out = dec.decode(
        [
            _raw(TAHU_NODE.format("NBIRTH"), nb),
            _raw(TAHU_DEVICE.format("DBIRTH"), db, 1),
            _raw(TAHU_DEVICE.format("DDATA"), ddata, 2),
        ]
    )
    assert out.dead == [] and out.rebirths == []
    node, dev, data = out.accepted
    assert (node.site, node.machine, dev.machine) == (
        "sparkplug-b-devices",
        "python-edge-node-1",
        "emulated-device",
    )
    assert _extra(node) == {
        "Node Metric0": "hello node",
        "Node Metric1": 1.0,
        "Node Metric3": None,
        "DataSet": '{"columns":["Int8s","Int16s","Int32s"],"types":["INT8","INT16","INT32"],'
        '"rows":[[0,1,2],[3,4,5]]}',
        "Node Metric2": 13.0,
    }
    assert _extra(dev) == {
        "input/Device Metric0": "hello device",
        "input/Device Metric1": 1.0,
        "output/Device Metric2": 16.0,
        "output/Device Metric3": 1.0,
        "My_Custom_Motor/RPMs": 123.0,
        "My_Custom_Motor/AMPs": 456.0,
    }
    # The STALE value is not stored; the others of its message are.
    assert _extra(data) == {"input/Device Metric0": "qwertyuiopas", "output/Device Metric2": -7.0}
    assert dec.sparkplug.skipped == {"quality": 1}


# --- one unusual metric does not cost the message ----------------------------------------------


def test_unusual_metrics_are_skipped_the_rest_is_stored() -> None:
    now = int(time.time() * 1000)
    nb = PayloadPb(timestamp=now, seq=0)
    _add(nb, "bdSeq", DataType.INT64, 4, timestamp=now)
    _add(nb, "Spindle/Speed", DataType.DOUBLE, 0.0, alias=1, timestamp=now)
    _add(nb, "Future", DataType.INT32, 1, alias=2, timestamp=now).datatype = 40  # not a type
    _add(nb, "Counts", DataType.INT32_ARRAY, b"", alias=3, timestamp=now)
    _add(nb, "Big", DataType.UINT64, 0, alias=4, timestamp=now)
    _add(nb, "Stamp", DataType.DATETIME, now, alias=5, timestamp=now)
    _add(nb, "Execution", DataType.STRING, "READY", alias=6, timestamp=now)
    nd = PayloadPb(timestamp=now + 10, seq=1)
    _add(nd, None, DataType.DOUBLE, 1200.0, alias=1, timestamp=now + 10)
    nd.metrics.add(alias=2, timestamp=now + 10).int_value = 5  # declared with type 40
    nd.metrics.add(alias=3, timestamp=now + 10).bytes_value = b"\x01\x00\x00"  # 3 of 4 bytes
    nd.metrics.add(alias=99, timestamp=now + 10).double_value = 1.0  # never declared
    nd.metrics.add(alias=4, timestamp=now + 10).long_value = 2**64 - 1  # UInt64 > 2**63
    nd.metrics.add(alias=5, timestamp=now + 10).long_value = T
    _add(nd, "Blob", DataType.BYTES, b"\x00\x01", timestamp=now + 10)
    _add(nd, "Nan", DataType.DOUBLE, float("nan"), timestamp=now + 10)
    _add(nd, "Nul", DataType.STRING, "a\x00b", timestamp=now + 10)
    _add(nd, "Scratch", DataType.DOUBLE, 5.0, timestamp=now + 10, is_transient=True)
    _add(nd, "Old", DataType.DOUBLE, 5.0, timestamp=now - 40 * 86_400_000, is_historical=True)
    _add(nd, "Ints", DataType.INT16_ARRAY, bytes.fromhex("D08A3075"), timestamp=now + 10)
    # Back-filled (store and forward) execution: stored as history.
    _add(nd, None, DataType.STRING, "ACTIVE", alias=6, timestamp=now - 60_000, is_historical=True)
    dec = _decoder(max_past=timedelta(days=30))
    out = dec.decode(
        [_raw("spBv1.0/plant/NBIRTH/cnc-7", nb), _raw("spBv1.0/plant/NDATA/cnc-7", nd, 1)]
    )
    assert out.dead == []
    assert [a.channel for a in out.accepted] == ["nbirth", "ndata"]
    assert out.rebirths == [("plant", "cnc-7")], "the undeclared alias asks for a rebirth"
    data = out.accepted[1]
    speed = 1 + WIDE_INDEX["spindle_speed"]
    assert [r[speed] for r in data.wide] == [1200.0]
    assert _extra(data) == {
        "Big": float(2**64 - 1),
        "Stamp": "2017-02-03T17:55:02.122Z",
        "Ints": "[-30000,30000]",
    }
    assert [(e[1], e[2], e[-1]) for e in data.events] == [("execution", "ACTIVE", True)]
    assert not data.historical  # live values too; a message of history only is historical
    assert dec.sparkplug.skipped == {
        "bad_value": 3,  # Future (birth type 40) in the birth and the data, Counts' 3 bytes
        "undeclared": 1,
        "binary": 1,
        "non_finite": 1,
        "nul": 1,
        "transient": 1,
        "timestamp_range": 1,
    }
    assert data.n_values == 5


def test_device_messages_share_the_node_seq_across_the_wrap() -> None:
    now = int(time.time() * 1000)
    nb = PayloadPb(timestamp=now, seq=0)
    _add(nb, "bdSeq", DataType.INT64, 1, timestamp=now)
    _add(nb, "Spindle/Speed", DataType.DOUBLE, 0.0, alias=2, timestamp=now)
    db = PayloadPb(timestamp=now, seq=1)
    _add(db, "Spindle/Load", DataType.FLOAT, 0.0, alias=1, timestamp=now)
    batch = [_raw("spBv1.0/plant/NBIRTH/gw", nb), _raw("spBv1.0/plant/DBIRTH/gw/cnc-1", db)]
    for seq in range(2, 260):
        pb = PayloadPb(timestamp=now + seq, seq=seq % 256)
        if seq % 2:  # the device's Spindle/Load (alias 1 of the DBIRTH)
            pb.metrics.add(alias=1, timestamp=now + seq).float_value = float(seq % 100)
        else:  # the node's Spindle/Speed (alias 2 of the NBIRTH)
            pb.metrics.add(alias=2, timestamp=now + seq).double_value = float(seq)
        kind = "DDATA/gw/cnc-1" if seq % 2 else "NDATA/gw"
        batch.append(_raw(f"spBv1.0/plant/{kind}", pb, seq))
    ddeath = PayloadPb(timestamp=now + 260, seq=260 % 256)
    batch.append(_raw("spBv1.0/plant/DDEATH/gw/cnc-1", ddeath, 260))
    out = _decoder().decode(batch)
    assert out.dead == [] and out.gaps == [] and out.rebirths == []
    assert [a.seq for a in out.accepted] == list(range(261))
    assert [(s.machine, s.online, s.reason) for s in out.accepted[-1].status] == [
        ("cnc-1", False, "device death")
    ]
    out.accepted.pop()
    assert {a.key_machine for a in out.accepted} == {"gw"}
    dev = [a for a in out.accepted if a.machine == "cnc-1"]
    node = [a for a in out.accepted if a.machine == "gw"]
    loads = [r[1 + WIDE_INDEX["spindle_load"]] for a in dev for r in a.wide]
    assert loads == [0.0] + [float(s % 100) for s in range(3, 260, 2)]
    speeds = [r[1 + WIDE_INDEX["spindle_speed"]] for a in node for r in a.wide]
    assert speeds == [0.0] + [float(s) for s in range(2, 260, 2)]


def test_host_state_and_commands_are_not_data() -> None:
    batch = [
        _raw("spBv1.0/STATE/Ignition Primary", b'{"online":true,"timestamp":1668114759262}'),
        _raw("spBv1.0/plant/NCMD/gw", PayloadPb(timestamp=1), 1),
        _raw("spBv1.0/plant/DCMD/gw/cnc-1", PayloadPb(timestamp=1), 2),
    ]
    out: DecodedBatch = _decoder().decode(batch)
    assert (out.accepted, out.dead, out.ignored) == ([], [], 3)


def test_sparkplug_ids_become_arbor_ids() -> None:
    assert arbor_id("cnc-7") == "cnc-7"
    assert arbor_id("Sparkplug B Devices") == "sparkplug-b-devices"
    assert arbor_id("Emulated Device") == "emulated-device"
    assert arbor_id("Line 1.Cell_2") == "line-1-cell_2"
    assert arbor_id("Température") == "temp-rature"
    assert arbor_id("***").startswith("x-") and len(arbor_id("***")) == 10
    long = arbor_id("Edge " * 30)
    assert len(long) <= 64 and long.startswith("edge-edge-")
    now = int(time.time() * 1000)
    nb = PayloadPb(timestamp=now, seq=0)
    _add(nb, "bdSeq", DataType.INT64, 0, timestamp=now)
    out = _decoder().decode(
        [_raw("spBv1.0/plant/NBIRTH/Line 1", nb), _raw("spBv1.0/plant/NBIRTH/line-1", nb, 1)]
    )
    assert [a.machine for a in out.accepted] == ["line-1"]
    assert [d.kind for d in out.dead] == ["bad_topic"]
    reason = out.dead[0].reason
    assert "'line-1' maps to the Arbor id 'line-1', which 'Line 1' already has" in reason


def test_unknown_datatype_in_the_birth_does_not_loop_rebirths() -> None:
    """A metric of a datatype this host does not know is declared (name, alias), so its DATA
    values are skipped as bad values instead of being 'undeclared' (rebirth, forever)."""
    now = int(time.time() * 1000)
    nb = PayloadPb(timestamp=now, seq=0)
    _add(nb, "bdSeq", DataType.INT64, 0, timestamp=now)
    _add(nb, "Future", DataType.INT32, 1, alias=1, timestamp=now).datatype = 77
    nd = PayloadPb(timestamp=now, seq=1)
    nd.metrics.add(alias=1, timestamp=now).int_value = 2
    dec = _decoder()
    out = dec.decode([_raw("spBv1.0/plant/NBIRTH/gw", nb), _raw("spBv1.0/plant/NDATA/gw", nd, 1)])
    assert out.dead == [] and out.rebirths == []
    assert dec.sparkplug.skipped == {"bad_value": 2}


def test_rebirths_without_a_payload_timestamp_are_new_sessions() -> None:
    """A rebirth keeps its bdSeq; the NBIRTH timestamp tells the sessions apart in the ledger.
    A node that leaves it out (the spec requires it) must not reuse one session key, or the
    rebirth's messages would be dropped as copies of the previous birth's."""
    now = int(time.time() * 1000)
    births = []
    for k in range(2):
        with_stamps = PayloadPb(seq=0)
        _add(with_stamps, "bdSeq", DataType.INT64, 3, timestamp=now + k)
        _add(with_stamps, "Spindle/Speed", DataType.DOUBLE, float(k), alias=1, timestamp=now + k)
        births.append(with_stamps)
    for k in range(2):
        bare = PayloadPb(seq=0)
        _add(bare, "bdSeq", DataType.INT64, 3)
        _add(bare, "Spindle/Speed", DataType.DOUBLE, float(k), alias=1)
        births.append(bare)
    out = _decoder().decode([_raw("spBv1.0/plant/NBIRTH/gw", b, i) for i, b in enumerate(births)])
    sessions = [a.session for a in out.accepted]
    assert sessions[:2] == [f"spb-3-{now}", f"spb-3-{now + 1}"]
    assert sessions[2].startswith("spb-3-h") and len(set(sessions)) == 4


def test_a_compressed_session_is_stored() -> None:
    """Tahu's Java PayloadUtil.compress / JavaScript sparkplug-client: uuid SPBV1.0_COMPRESSED,
    the payload DEFLATE-compressed in body, the algorithm as the String metric 'algorithm'."""
    import zlib

    now = int(time.time() * 1000)
    nb = PayloadPb(timestamp=now, seq=0)
    _add(nb, "bdSeq", DataType.INT64, 0, timestamp=now)
    _add(nb, "Spindle/Speed", DataType.DOUBLE, 0.0, alias=1, timestamp=now)
    nd = PayloadPb(timestamp=now + 1, seq=1)
    _add(nd, None, DataType.DOUBLE, 2400.0, alias=1, timestamp=now + 1)

    def compressed(pb: Any) -> Any:
        outer = PayloadPb(uuid="SPBV1.0_COMPRESSED", body=zlib.compress(pb.SerializeToString()))
        outer.metrics.add(name="algorithm", datatype=12).string_value = "DEFLATE"
        return outer

    out = _decoder().decode(
        [
            _raw("spBv1.0/plant/NBIRTH/gw", compressed(nb)),
            _raw("spBv1.0/plant/NDATA/gw", compressed(nd), 1),
        ]
    )
    assert out.dead == [] and [a.seq for a in out.accepted] == [0, 1]
    assert [r[1 + WIDE_INDEX["spindle_speed"]] for r in out.accepted[1].wide] == [2400.0]


def test_a_metric_name_the_birth_did_not_declare_is_stored_and_asks_for_a_rebirth() -> None:
    """Sparkplug 2.x nodes send names in DATA; a name the birth did not have is usable (its
    datatype travels with it), but the spec's host asks for a rebirth (NCMD section)."""
    now = int(time.time() * 1000)
    nb = PayloadPb(timestamp=now, seq=0)
    _add(nb, "bdSeq", DataType.INT64, 0, timestamp=now)
    _add(nb, "Spindle/Speed", DataType.DOUBLE, 0.0, timestamp=now)
    nd = PayloadPb(timestamp=now, seq=1)
    _add(nd, "Spindle/Speed", DataType.DOUBLE, 10.0, timestamp=now)
    nd2 = PayloadPb(timestamp=now, seq=2)
    _add(nd2, "Coolant/Level", DataType.INT16, 2**32 - 3, timestamp=now)
    out = _decoder().decode(
        [
            _raw("spBv1.0/plant/NBIRTH/gw", nb),
            _raw("spBv1.0/plant/NDATA/gw", nd, 1),
            _raw("spBv1.0/plant/NDATA/gw", nd2, 2),
        ]
    )
    assert out.dead == [] and out.rebirths == [("plant", "gw")]
    assert _extra(out.accepted[2]) == {"Coolant/Level": -3.0}


def test_history_rows_come_oldest_first_and_a_history_only_message_is_historical() -> None:
    now = int(time.time() * 1000)
    nb = PayloadPb(timestamp=now, seq=0)
    _add(nb, "bdSeq", DataType.INT64, 0, timestamp=now)
    _add(nb, "Spindle/Speed", DataType.DOUBLE, 0.0, alias=1, timestamp=now)
    live = PayloadPb(timestamp=now, seq=1)  # live value first, then the back-filled ones
    _add(live, None, DataType.DOUBLE, 3.0, alias=1, timestamp=now)
    for k in (2, 1):
        _add(live, None, DataType.DOUBLE, float(k), alias=1, timestamp=now - k * 1000,
             is_historical=True)  # fmt: skip
    backfill = PayloadPb(timestamp=now, seq=2)
    _add(backfill, None, DataType.DOUBLE, 9.0, alias=1, timestamp=now - 5000, is_historical=True)
    out = _decoder().decode(
        [
            _raw("spBv1.0/plant/NBIRTH/gw", nb),
            _raw("spBv1.0/plant/NDATA/gw", live, 1),
            _raw("spBv1.0/plant/NDATA/gw", backfill, 2),
        ]
    )
    speed = 1 + WIDE_INDEX["spindle_speed"]
    mixed, history = out.accepted[1:]
    assert [r[speed] for r in mixed.wide] == [2.0, 1.0, 3.0]  # by time: the last is the newest
    assert (mixed.historical, history.historical) == (False, True)


@pytest.fixture
def pub(mqtt_settings: MqttSettings) -> Iterator[Publisher]:
    p = Publisher(
        mqtt_settings.host, mqtt_settings.port, mqtt_settings.username, mqtt_settings.password
    )
    yield p
    p.close()


@pytest.mark.services
def test_spec_session_end_to_end(
    db: str, mqtt_settings: MqttSettings, unique_site: str, pub: Publisher
) -> None:
    """The spec's session, under a group id with capitals and a space, through a worker into
    PostgreSQL: compressed NDATA, a DDATA with an array, a DataSet and a DateTime, the death."""
    import zlib

    group = f"{unique_site.upper()} Devices"
    site = f"{unique_site}-devices"
    port = free_port()
    env = worker_env(
        db, mqtt_settings.url, unique_site, f"p{secrets.token_hex(3)}",
        ARBOR_INGEST_SPARKPLUG_FILTER=f"spBv1.0/{group}/#",
        ARBOR_INGEST_METRICS_PORT=str(port),
    )  # fmt: skip
    now = int(time.time() * 1000)
    nbirth = _spec_nbirth()
    nbirth.timestamp = now
    for m in nbirth.metrics:
        m.timestamp = now
    dbirth = _spec_dbirth()
    dbirth.timestamp = now
    for m in dbirth.metrics:
        m.timestamp = now
    _add(dbirth, "Counts", DataType.INT16_ARRAY, b"", alias=20, timestamp=now)
    ndata = PayloadPb(timestamp=now + 1, seq=2)
    _add(ndata, "Supply Voltage", DataType.FLOAT, 12.3, timestamp=now + 1)
    wrapped = PayloadPb(uuid="SPBV1.0_COMPRESSED", body=zlib.compress(ndata.SerializeToString()))
    ddata = PayloadPb(timestamp=now + 2, seq=3)
    _add(ddata, "Inputs/A", DataType.BOOLEAN, True, timestamp=now + 2)
    ddata.metrics.add(alias=20, timestamp=now + 2).bytes_value = bytes.fromhex("D08A3075")
    _add(ddata, "Last Cycle", DataType.DATETIME, T, timestamp=now + 2)
    _add(ddata, "Scratch", DataType.DOUBLE, 5.0, timestamp=now + 2, is_transient=True)
    ds = ddata.metrics.add(name="Tools", datatype=16, timestamp=now + 2).dataset_value
    ds.num_of_columns = 2
    ds.columns.extend(["T", "Life"])
    ds.types.extend([3, 10])
    row = ds.rows.add()
    row.elements.add().int_value = 12
    row.elements.add().double_value = 0.5
    ndeath = PayloadPb(timestamp=now + 3)
    _add(ndeath, "bdSeq", DataType.UINT64, 0, timestamp=now + 3)
    node, device = (
        f"spBv1.0/{group}/{{}}/Raspberry Pi",
        f"spBv1.0/{group}/{{}}/Raspberry Pi/Pibrella",
    )
    extra = (
        "SELECT m.machine, x.signal, x.value, x.value_text FROM sample_extra x "
        "JOIN machine m ON m.id = x.machine_id WHERE m.site = %s ORDER BY x.ts, x.signal"
    )
    with workers(env, 1):
        wait_ready(port)
        for topic, pb in (
            (node.format("NBIRTH"), nbirth),
            (device.format("DBIRTH"), dbirth),
            (node.format("NDATA"), wrapped),
            (device.format("DDATA"), ddata),
        ):
            pub.publish(topic, pb.SerializeToString())
        pub.flush()
        wait_until(lambda: len(rows(db, extra, site)) == 4 + 1 + 14 + 1 + 1 + 4, what="rows")
        got = {(m, s): (v, t) for m, s, v, t in rows(db, extra, site)}
        assert got[("raspberry-pi", "Supply Voltage")] == (12.3, None)
        assert got[("pibrella", "Counts")] == (None, "[-30000,30000]")
        assert got[("pibrella", "Last Cycle")] == (None, "2017-02-03T17:55:02.122Z")
        assert got[("pibrella", "Tools")] == (
            None,
            '{"columns":["T","Life"],"types":["INT32","DOUBLE"],"rows":[[12,0.5]]}',
        )
        assert got[("pibrella", "Inputs/A")] == (1.0, None)
        assert ("pibrella", "Scratch") not in got  # transient: not for a historian
        skipped = "arbor_ingest_sparkplug_skipped_metrics"
        assert metric(port, skipped, reason="transient") == 1
        assert metric(port, skipped, reason="bad_value") == 0
        pub.publish(node.format("NDEATH"), ndeath.SerializeToString())
        pub.flush()
        state = "SELECT status FROM machine WHERE site = %s AND machine = %s"
        wait_until(lambda: scalar(db, state, site, "raspberry-pi") == "offline", what="offline")
        wait_until(lambda: scalar(db, state, site, "pibrella") == "offline", what="dev offline")
        dead = rows(db, "SELECT kind, reason FROM dead_letter WHERE topic LIKE %s",
                    f"spBv1.0/{group}/%")  # fmt: skip
        assert dead == []


def test_an_encoder_that_leaves_out_zeros_like_protobuf_net() -> None:
    """SparkplugNet (github.com/SeppPenner/SparkplugNet, MIT) serialises with protobuf-net,
    whose generated Payload/Metric classes (VersionB/ProtoBuf/ProtobufPayload.cs) hold seq,
    alias and timestamp as plain ulong: a 0 is not written. So the NBIRTH and the message after
    seq 255 carry no seq, and the metric of alias 0 carries neither alias nor (in DATA) a name.
    Its metrics always carry (empty) metadata and properties messages."""
    now = int(time.time() * 1000)

    def metric(container: Any, name: str | None, alias: int, value: float, ts: int) -> None:
        m = container.metrics.add(timestamp=ts, datatype=int(DataType.DOUBLE))
        if name:
            m.name = name
        if alias:
            m.alias = alias
        m.double_value = value
        m.metadata.SetInParent()
        m.properties.SetInParent()

    nb = PayloadPb(timestamp=now)  # seq 0: left out
    bd = nb.metrics.add(name="bdSeq", timestamp=now, datatype=int(DataType.INT64))
    bd.long_value = 0  # a set oneof member is written even when 0
    metric(nb, "Spindle/Speed", 0, 0.0, now)
    metric(nb, "Spindle/Load", 1, 0.0, now)
    batch = [_raw("spBv1.0/plant/NBIRTH/dotnet", nb)]
    for k in range(1, 258):
        pb = PayloadPb(timestamp=now + k)
        if k % 256:
            pb.seq = k % 256
        metric(pb, None, 0, float(k), now + k)
        metric(pb, None, 1, 1.0, now + k)
        batch.append(_raw("spBv1.0/plant/NDATA/dotnet", pb, k))
    out = _decoder().decode(batch)
    assert out.dead == [] and out.gaps == [] and out.rebirths == []
    assert [a.seq for a in out.accepted] == list(range(258))
    speed = 1 + WIDE_INDEX["spindle_speed"]
    assert [r[speed] for a in out.accepted for r in a.wide] == [float(k) for k in range(258)]


def test_a_will_ndeath_built_weeks_ago_still_takes_the_node_offline() -> None:
    """NDEATH is the node's MQTT Will, built when it connected: for a node connected for 40
    days, its timestamp is 40 days old (or, from a broken clock, anything). The death is when
    the broker delivers it; its timestamp is not range-checked."""
    now = int(time.time() * 1000)
    old = now - 40 * 86_400_000
    batch = []
    for i, (node, will_ts) in enumerate((("gw-a", old), ("gw-b", 2**62))):
        nb = PayloadPb(timestamp=now, seq=0)
        _add(nb, "bdSeq", DataType.INT64, 7, timestamp=now)
        death = PayloadPb(timestamp=will_ts)
        _add(death, "bdSeq", DataType.INT64, 7, timestamp=will_ts)
        batch += [
            _raw(f"spBv1.0/plant/NBIRTH/{node}", nb, 2 * i),
            _raw(f"spBv1.0/plant/NDEATH/{node}", death, 2 * i + 1),
        ]
    out = _decoder(max_past=timedelta(days=30)).decode(batch)
    assert out.dead == []
    deaths = [a for a in out.accepted if a.channel == "ndeath"]
    assert [(s.machine, s.online) for a in deaths for s in a.status] == [
        ("gw-a", False),
        ("gw-b", False),
    ]
    assert all(abs(a.ts.timestamp() * 1000 - now) < 60_000 for a in deaths)
