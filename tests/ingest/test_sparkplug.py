"""Sparkplug B through the worker: births, aliases, seq wrap, gaps with a rebirth request, data
before birth, deaths; and the pure host's seq bookkeeping."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ingest.config import IngestSettings
from ingest.decode import Decoder
from ingest.records import Ack, Raw
from ingest.sparkplug import normalise_metric_name
from protocol.sparkplug import (
    DataType,
    Metric,
    Payload,
    decode_payload,
    encode_payload,
)
from tests.conftest import MqttSettings
from tests.ingest.helpers import (
    Publisher,
    rows,
    scalar,
    status,
    wait_ready,
    wait_until,
    worker_env,
    workers,
)
from tests.servers import free_port

GROUP_NODE = "edge1"


def _now_ms() -> int:
    return int(time.time() * 1000)


def nbirth(bdseq: int = 1) -> Payload:
    t = _now_ms()
    return Payload(
        timestamp=t,
        seq=0,
        metrics=(
            Metric(name="bdSeq", datatype=DataType.INT64, value=bdseq, timestamp=t),
            Metric(name="Speed S1", alias=1, datatype=DataType.DOUBLE, value=1000.0, timestamp=t),
            Metric(name="Spindle/Load", alias=2, datatype=DataType.FLOAT, value=10.0, timestamp=t),
            Metric(name="Execution", alias=3, datatype=DataType.STRING, value="READY", timestamp=t),
            Metric(name="Vendor/Temp", alias=4, datatype=DataType.INT32, value=-3, timestamp=t),
        ),
    )


def ndata(seq: int, i: int) -> Payload:
    t = _now_ms() + i  # distinct timestamps per message
    return Payload(
        timestamp=t,
        seq=seq % 256,
        metrics=(
            Metric(alias=1, value=1000.0 + i, timestamp=t),
            Metric(alias=2, value=20.0, timestamp=t),
        ),
    )


def _settings() -> IngestSettings:
    return IngestSettings(
        database_url="postgresql://unused",
        mqtt_url="mqtt://unused",
        sparkplug_metric_map={"Speed S1": "spindle_speed"},
    )


def _raw(topic: str, payload: Payload, i: int = 0) -> Raw:
    return Raw(topic, encode_payload(payload), Ack(i, 1, 1), time.time())


def test_metric_names_normalise_to_the_catalogue() -> None:
    assert normalise_metric_name("Spindle/Load") == "spindle_load"
    assert normalise_metric_name("  Feed Override % ") == "feed_override"


def test_host_maps_births_aliases_and_wrap() -> None:
    dec = Decoder(_settings())
    g = "plant"
    batch = [_raw(f"spBv1.0/{g}/NBIRTH/{GROUP_NODE}", nbirth())]
    batch += [_raw(f"spBv1.0/{g}/NDATA/{GROUP_NODE}", ndata(s, s), s) for s in range(1, 300)]
    out = dec.decode(batch)
    assert out.dead == [] and out.gaps == [] and out.rebirths == []
    keys = [(a.key_machine, a.session, a.seq) for a in out.accepted]
    assert [k[2] for k in keys] == list(range(300)), "extended seq keeps rising across the wrap"
    assert len({k[1] for k in keys}) == 1 and keys[0][1].startswith("spb-1-")
    birth = out.accepted[0]
    assert birth.status and birth.status[0].online
    assert [e[1:3] for e in birth.events] == [("execution", "READY")]
    assert [x[1:3] for x in birth.extra] == [("Vendor/Temp", -3.0)]
    data = out.accepted[5]
    assert len(data.wide) == 1
    row = data.wide[0]
    from ingest.records import WIDE_INDEX

    assert row[1 + WIDE_INDEX["spindle_speed"]] == 1005.0
    assert row[1 + WIDE_INDEX["spindle_load"]] == 20.0


def test_host_records_gaps_and_asks_for_rebirth() -> None:
    dec = Decoder(_settings())
    g = "plant"
    out = dec.decode(
        [
            _raw(f"spBv1.0/{g}/NDATA/{GROUP_NODE}", ndata(5, 5)),  # before any birth
            _raw(f"spBv1.0/{g}/NBIRTH/{GROUP_NODE}", nbirth()),
            _raw(f"spBv1.0/{g}/NDATA/{GROUP_NODE}", ndata(1, 1)),
            _raw(f"spBv1.0/{g}/NDATA/{GROUP_NODE}", ndata(4, 4)),  # 2 and 3 lost
        ]
    )
    assert [d.kind for d in out.dead] == ["sparkplug_no_birth"]
    assert [(x.first_missing, x.last_missing) for x in out.gaps] == [(2, 3)]
    assert out.rebirths == [("plant", GROUP_NODE), ("plant", GROUP_NODE)]
    assert [a.seq for a in out.accepted] == [0, 1, 4], "the data after a gap is still stored"


def test_only_worker_0_dead_letters_a_bad_sparkplug_message() -> None:
    """Every worker sees every Sparkplug message; a dead letter per worker would count one bad
    message N times."""
    batch = [
        _raw(f"spBv1.0/plant/NDATA/{GROUP_NODE}", ndata(5, 5)),  # before any birth
        Raw(f"spBv1.0/plant/NDATA/{GROUP_NODE}", b"not protobuf", Ack(2, 1, 1), time.time()),
    ]
    kinds = ["sparkplug_no_birth", "sparkplug_decode"]
    for index, recorded in ((0, kinds), (1, [])):
        out = Decoder(_settings().model_copy(update={"worker_index": index})).decode(batch)
        assert [d.kind for d in out.dead] == recorded
        assert out.ignored == 2 - len(recorded)
    forced = _settings().model_copy(update={"worker_index": 1, "sparkplug_dead_letters": True})
    assert [d.kind for d in Decoder(forced).decode(batch).dead] == kinds


def test_host_refuses_out_of_range_timestamps_before_they_overflow() -> None:
    """Bug 6 of docs/reliability.md: a metric timestamp of 2**62 ms raised OverflowError and
    became an undocumented `internal` dead letter. Now v1's window: a payload timestamp outside
    it dead-letters the message (`timestamp_range`); a metric's own timestamp outside it skips
    that metric only (counted), the message and its other metrics are stored."""
    dec = Decoder(_settings())
    g = "plant"
    t = _now_ms()
    node = f"spBv1.0/{g}/NDATA/{GROUP_NODE}"

    def data(seq: int, payload_ts: int | None, metric_ts: int | None) -> Payload:
        metrics = (Metric(alias=1, value=1.0, timestamp=metric_ts), Metric(alias=2, value=5.0))
        return Payload(timestamp=payload_ts, seq=seq, metrics=metrics)

    out = dec.decode(
        [
            _raw(f"spBv1.0/{g}/NBIRTH/{GROUP_NODE}", nbirth()),
            _raw(node, data(1, t, 2**62)),  # far beyond datetime's range
            _raw(node, data(2, 2**63 - 1, t)),  # the payload's own timestamp
            _raw(node, data(3, t, t + 10 * 60_000)),  # 10 min ahead (limit 5)
            _raw(node, data(4, t, t - 31 * 86_400_000)),  # 31 days old (limit 30)
            _raw(node, data(5, t, t + 60_000)),  # 1 min ahead: fine
            _raw(f"spBv1.0/{g}/NBIRTH/other", Payload(timestamp=2**62, seq=0, metrics=())),
        ]
    )
    assert [d.kind for d in out.dead] == ["timestamp_range"] * 2
    reasons = [d.reason for d in out.dead]
    assert reasons[0].startswith("payload timestamp") and str(2**63 - 1) in reasons[0]
    assert "in the future" in reasons[1] and str(2**62) in reasons[1]
    assert [a.seq for a in out.accepted] == [0, 1, 3, 4, 5]
    assert dec.sparkplug.skipped == {"timestamp_range": 3}
    from ingest.records import WIDE_INDEX

    load = 1 + WIDE_INDEX["spindle_load"]
    speed = 1 + WIDE_INDEX["spindle_speed"]
    for a in out.accepted[1:4]:  # the metric with the bad timestamp is skipped, not its sibling
        assert [(r[speed], r[load]) for r in a.wide] == [(None, 5.0)]
    assert [(r[speed], r[load]) for r in out.accepted[4].wide] == [(None, 5.0), (1.0, None)]
    # The refused message is a hole in the node's seq: recorded as a gap, rebirth requested.
    assert [(x.first_missing, x.last_missing) for x in out.gaps] == [(2, 2)]
    assert ("plant", GROUP_NODE) in out.rebirths


@pytest.fixture
def pub(mqtt_settings: MqttSettings) -> Iterator[Publisher]:
    p = Publisher(
        mqtt_settings.host, mqtt_settings.port, mqtt_settings.username, mqtt_settings.password
    )
    yield p
    p.close()


@pytest.mark.services
def test_sparkplug_end_to_end(
    db: str, mqtt_settings: MqttSettings, unique_site: str, pub: Publisher
) -> None:
    site = unique_site
    port = free_port()
    env = worker_env(
        db,
        mqtt_settings.url,
        site,
        f"p{secrets.token_hex(3)}",
        ARBOR_INGEST_METRICS_PORT=str(port),
        ARBOR_INGEST_SPARKPLUG_METRIC_MAP='{"Speed S1": "spindle_speed"}',
        ARBOR_INGEST_REBIRTH_MIN_INTERVAL_S="0",
    )
    # Watch the commands the host sends to the edge node.
    ncmds: list[bytes] = []
    got = threading.Event()
    listener = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    listener.username_pw_set(mqtt_settings.username, mqtt_settings.password)

    def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        ncmds.append(m.payload)
        got.set()

    listener.on_message = on_message
    listener.connect(mqtt_settings.host, mqtt_settings.port)
    listener.subscribe(f"spBv1.0/{site}/NCMD/#", qos=1)
    listener.loop_start()
    pub.publish(f"arbor/v1/{site}/probe/status", status("probe", True), retain=True)
    pub.flush()
    node = f"spBv1.0/{site}/{{}}/{GROUP_NODE}"
    try:
        # Two workers: both see every Sparkplug message, the data is stored once (the ledger)
        # and a bad message dead-lettered once (by worker 0).
        with workers(env, 2):
            wait_ready(port)
            wait_ready(port + 1)
            # Data before birth: dead-lettered, and a rebirth is requested.
            pub.publish(node.format("NDATA"), encode_payload(ndata(7, 7)))
            pub.flush()
            assert got.wait(60), "no rebirth request"  # generous: a loaded 2-core machine
            cmd = decode_payload(ncmds[0])
            assert [(m.name, m.value) for m in cmd.metrics] == [("Node Control/Rebirth", True)]
            # Birth, 299 data messages across the 255 -> 0 wrap, a device, a gap, a death.
            pub.publish(node.format("NBIRTH"), encode_payload(nbirth(bdseq=3)))
            for s in range(1, 300):
                pub.publish(node.format("NDATA"), encode_payload(ndata(s, s)))
            t = _now_ms()
            dbirth = Payload(
                timestamp=t,
                seq=300 % 256,
                metrics=(Metric(name="Load", alias=9, datatype=DataType.DOUBLE, value=1.0),),
            )
            pub.publish(f"spBv1.0/{site}/DBIRTH/{GROUP_NODE}/dev1", encode_payload(dbirth))
            ddata = Payload(timestamp=t + 1, seq=301 % 256, metrics=(Metric(alias=9, value=2.5),))
            pub.publish(f"spBv1.0/{site}/DDATA/{GROUP_NODE}/dev1", encode_payload(ddata))
            pub.publish(node.format("NDATA"), encode_payload(ndata(305, 305)))  # 302..304 lost
            pub.flush()
            ledger = (
                "SELECT count(*) FROM message_ledger l JOIN machine m ON m.id = l.machine_id "
                "WHERE m.site = %s AND m.machine = %s"
            )
            wait_until(lambda: scalar(db, ledger, site, GROUP_NODE) == 303, what="303 messages")
            gaps = rows(
                db,
                "SELECT first_missing, last_missing, g.source FROM sequence_gap g "
                "JOIN machine m ON m.id = g.machine_id WHERE m.site = %s",
                site,
            )
            assert gaps == [(302, 304, "sparkplug")]
            samples = rows(
                db,
                "SELECT count(*), count(spindle_speed), count(spindle_load) FROM sample s "
                "JOIN machine m ON m.id = s.machine_id WHERE m.machine = %s",
                GROUP_NODE,
            )
            assert samples == [(301, 301, 301)]  # birth + 299 + the one after the gap
            execution = rows(
                db,
                "SELECT value FROM event e JOIN machine m ON m.id = e.machine_id "
                "WHERE m.machine = %s AND signal = 'execution'",
                GROUP_NODE,
            )
            assert execution == [("READY",)]
            dev = rows(
                db,
                "SELECT signal, value FROM sample_extra x JOIN machine m ON m.id = x.machine_id "
                "WHERE m.site = %s AND m.machine = 'dev1' ORDER BY ts",
                site,
            )
            assert dev == [("Load", 1.0), ("Load", 2.5)]
            wait_until(lambda: len(ncmds) >= 2, what="a rebirth request after the gap")
            # The node dies (its Will): node and device go offline.
            death = Payload(metrics=(Metric(name="bdSeq", datatype=DataType.INT64, value=3),))
            pub.publish(node.format("NDEATH"), encode_payload(death))
            pub.flush()
            state = "SELECT status FROM machine WHERE site = %s AND machine = %s"
            wait_until(lambda: scalar(db, state, site, GROUP_NODE) == "offline", what="offline")
            wait_until(lambda: scalar(db, state, site, "dev1") == "offline", what="dev offline")
            dead = rows(db, "SELECT kind FROM dead_letter WHERE topic LIKE %s", f"spBv1.0/{site}/%")
            assert dead == [("sparkplug_no_birth",)]
    finally:
        listener.loop_stop()
        listener.disconnect()
        pub.publish(f"arbor/v1/{site}/probe/status", b"", retain=True)
        pub.flush()
