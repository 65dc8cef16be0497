"""Sparkplug B: topics, protobuf encode/decode, signed ints, sessions (seq, bdSeq, aliases)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import PayloadError, SparkplugPayloadError, SparkplugTopicError, TopicError
from protocol.sparkplug import (
    BDSEQ_METRIC,
    REBIRTH_METRIC,
    DataSet,
    DataType,
    HostState,
    MessageType,
    MetaData,
    Metric,
    Parameter,
    Payload,
    PayloadPb,
    PropertyValue,
    SparkplugSessions,
    SparkplugTopic,
    Template,
    VerdictKind,
    decode_payload,
    encode_payload,
    parse_sparkplug_topic,
    parse_state_payload,
    rebirth_payload,
    sparkplug_topic,
)

# --- topics ------------------------------------------------------------------------------------


def test_parse_node_device_and_state_topics() -> None:
    t = parse_sparkplug_topic("spBv1.0/plant1/NDATA/edge-1")
    assert (t.group, t.message_type, t.edge_node, t.device) == (
        "plant1",
        MessageType.NDATA,
        "edge-1",
        None,
    )
    d = parse_sparkplug_topic("spBv1.0/plant1/DBIRTH/edge-1/cnc 7")
    assert (d.message_type, d.device) == (MessageType.DBIRTH, "cnc 7")
    s = parse_sparkplug_topic("spBv1.0/STATE/scada-host")
    assert (s.message_type, s.host_id) == (MessageType.STATE, "scada-host")
    assert str(d) == "spBv1.0/plant1/DBIRTH/edge-1/cnc 7"
    assert sparkplug_topic("g", "NCMD", "n") == "spBv1.0/g/NCMD/n"


@pytest.mark.parametrize(
    ("topic", "fragment"),
    [
        ("spAv1.0/g/NDATA/n", "namespace must be 'spBv1.0'"),
        ("spBv1.0/g/NDATA", "expected 4 or 5 levels"),
        ("spBv1.0/g/XDATA/n", "unknown message type 'XDATA'"),
        ("spBv1.0/g/DDATA/n", "DDATA needs a device id level"),
        ("spBv1.0/g/NDATA/n/d", "NDATA has no device id level"),
        ("spBv1.0/+/NDATA/n", "group id '+' contains the wildcard"),
        ("spBv1.0//NDATA/n", "group id is empty"),
        ("spBv1.0/g/NBIRTH/#", "edge node id '#'"),
    ],
)
def test_sparkplug_topic_rejections(topic: str, fragment: str) -> None:
    with pytest.raises(SparkplugTopicError) as info:
        parse_sparkplug_topic(topic)
    assert fragment in str(info.value)
    assert isinstance(info.value, TopicError)


def test_state_payloads() -> None:
    assert parse_state_payload(b'{"online": true, "timestamp": 1700000000000}') == HostState(
        True, 1700000000000
    )
    assert parse_state_payload(b"OFFLINE") == HostState(False)
    with pytest.raises(SparkplugPayloadError, match="boolean 'online'"):
        parse_state_payload(b'{"online": "yes"}')
    with pytest.raises(SparkplugPayloadError, match="neither JSON nor ONLINE/OFFLINE"):
        parse_state_payload(b"maybe")


# --- payloads ----------------------------------------------------------------------------------


def test_round_trip_of_every_kind_of_value() -> None:
    payload = Payload(
        timestamp=1_700_000_000_123,
        seq=0,
        uuid="u-1",
        body=b"\x00\x01",
        metrics=(
            Metric(name=BDSEQ_METRIC, datatype=DataType.UINT64, value=3),
            Metric(name="i8", alias=1, datatype=DataType.INT8, value=-128),
            Metric(name="i16", alias=2, datatype=DataType.INT16, value=-2),
            Metric(name="i32", alias=3, datatype=DataType.INT32, value=-(2**31)),
            Metric(name="i64", alias=4, datatype=DataType.INT64, value=-(2**63)),
            Metric(name="u32", datatype=DataType.UINT32, value=2**32 - 1),
            Metric(name="u64", datatype=DataType.UINT64, value=2**64 - 1),
            Metric(name="f", datatype=DataType.FLOAT, value=1.5),
            Metric(name="d", datatype=DataType.DOUBLE, value=-0.1),
            Metric(name="b", datatype=DataType.BOOLEAN, value=False),
            Metric(name="s", datatype=DataType.STRING, value="héllo"),
            Metric(name="t", datatype=DataType.DATETIME, value=1_700_000_000_000),
            Metric(name="raw", datatype=DataType.BYTES, value=b"\xff"),
            Metric(name="n", datatype=DataType.DOUBLE, is_null=True),
            Metric(name="h", datatype=DataType.DOUBLE, value=2.0, is_historical=True, timestamp=5),
            Metric(name="i16a", datatype=DataType.INT16_ARRAY, value=[-1, 0, 32767]),
            Metric(name="da", datatype=DataType.DOUBLE_ARRAY, value=[0.5, -2.0]),
            Metric(name="ba", datatype=DataType.BOOLEAN_ARRAY, value=[True, False, True] * 3),
            Metric(name="sa", datatype=DataType.STRING_ARRAY, value=["a", "", "bc"]),
            Metric(
                name="ds",
                datatype=DataType.DATASET,
                value=DataSet(
                    ("id", "name"), (DataType.INT32, DataType.STRING), ((-1, "x"), (2, None))
                ),
            ),
            Metric(
                name="tpl",
                datatype=DataType.TEMPLATE,
                value=Template(
                    metrics=(Metric(name="inner", datatype=DataType.INT8, value=-3),),
                    parameters=(Parameter("p", DataType.INT32, -7),),
                    version="1.0",
                    template_ref="Spindle",
                ),
            ),
            Metric(
                name="props",
                datatype=DataType.DOUBLE,
                value=1.0,
                metadata=MetaData(description="a metric", size=8),
                properties={
                    "engUnit": PropertyValue(DataType.STRING, "mm"),
                    "low": PropertyValue(DataType.INT32, -5),
                    "nested": PropertyValue(
                        DataType.PROPERTY_SET, {"k": PropertyValue(DataType.BOOLEAN, True)}
                    ),
                    "nil": PropertyValue(DataType.STRING, None),
                },
            ),
        ),
    )
    assert decode_payload(encode_payload(payload)) == payload


def test_signed_ints_travel_twos_complement() -> None:
    data = encode_payload(Payload(metrics=(Metric(name="a", datatype=DataType.INT32, value=-1),)))
    pb = PayloadPb()
    pb.ParseFromString(data)
    assert pb.metrics[0].int_value == 0xFFFFFFFF
    data64 = encode_payload(Payload(metrics=(Metric(name="a", datatype=DataType.INT64, value=-2),)))
    pb.ParseFromString(data64)
    assert pb.metrics[0].long_value == 2**64 - 2
    # An Int8 written width-limited (0xFE) or sign-extended (0xFFFFFFFE) decodes to -2 both ways.
    for raw in (0xFE, 0xFFFFFFFE):
        pb = PayloadPb()
        m = pb.metrics.add(name="x", datatype=1)
        m.int_value = raw
        assert decode_payload(pb.SerializeToString()).metrics[0].value == -2


@settings(max_examples=100)
@given(
    dtype=st.sampled_from([DataType.INT8, DataType.INT16, DataType.INT32, DataType.INT64]),
    data=st.data(),
)
def test_any_signed_int_round_trips(dtype: DataType, data: st.DataObject) -> None:
    bits = {DataType.INT8: 8, DataType.INT16: 16, DataType.INT32: 32, DataType.INT64: 64}[dtype]
    value = data.draw(st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
    payload = Payload(seq=1, metrics=(Metric(name="v", datatype=dtype, value=value),))
    assert decode_payload(encode_payload(payload)).metrics[0].value == value


def test_encode_rejects_values_that_do_not_fit() -> None:
    with pytest.raises(SparkplugPayloadError, match=r"metrics\[0\] \('a'\): 128 is out of range"):
        encode_payload(Payload(metrics=(Metric(name="a", datatype=DataType.INT8, value=128),)))
    with pytest.raises(SparkplugPayloadError, match="BOOLEAN needs a bool"):
        encode_payload(Payload(metrics=(Metric(name="a", datatype=DataType.BOOLEAN, value=1),)))


@settings(max_examples=200)
@given(data=st.binary(max_size=100))
def test_random_bytes_raise_only_sparkplug_payload_error(data: bytes) -> None:
    with contextlib.suppress(SparkplugPayloadError):
        decode_payload(data)


def test_garbage_is_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="not a Sparkplug B payload"):
        decode_payload(b"\x0a\xff\xff")
    pb = PayloadPb()
    pb.metrics.add(name="x", datatype=99)
    good = pb.metrics.add(name="y", datatype=10)
    good.double_value = 2.5
    # One metric of an unknown datatype does not fail the payload: it carries its problem.
    x, y = decode_payload(pb.SerializeToString()).metrics
    assert (x.name, x.value, x.problem) == ("x", None, "unknown datatype code 99")
    assert (y.name, y.value, y.problem) == ("y", 2.5, None)
    with pytest.raises(
        SparkplugPayloadError, match=r"metrics\[0\] \('x'\): unknown datatype code 99"
    ):
        decode_payload(pb.SerializeToString(), strict=True)


def test_rebirth_payload() -> None:
    p = decode_payload(encode_payload(rebirth_payload(123)))
    assert p.metrics[0].name == REBIRTH_METRIC
    assert p.metrics[0].value is True
    assert p.metrics[0].datatype is DataType.BOOLEAN


# --- sessions ----------------------------------------------------------------------------------

G, N = "plant1", "edge-1"


def topic(kind: str, device: str | None = None) -> SparkplugTopic:
    return parse_sparkplug_topic(sparkplug_topic(G, kind, N, device))


def nbirth(bdseq: int = 0) -> Payload:
    return Payload(
        seq=0,
        metrics=(
            Metric(name=BDSEQ_METRIC, datatype=DataType.UINT64, value=bdseq),
            Metric(name="Spindle/Speed", alias=1, datatype=DataType.DOUBLE, value=0.0),
            Metric(name="Axis/X/Offset", alias=2, datatype=DataType.INT32, value=0),
        ),
    )


def data(seq: int, *metrics: Metric) -> Payload:
    return Payload(seq=seq, metrics=metrics)


def test_alias_resolution_applies_birth_datatype() -> None:
    s = SparkplugSessions()
    assert s.observe(topic("NBIRTH"), nbirth()).kind is VerdictKind.OK
    # A DATA message with alias only and no datatype: the raw uint32 becomes a signed Int32.
    raw = decode_payload(
        encode_payload(data(1, Metric(alias=2, value=0xFFFFFFFB), Metric(alias=1, value=99.5)))
    )
    assert s.observe(topic("NDATA"), raw).kind is VerdictKind.OK
    resolved = s.resolve(topic("NDATA"), raw)
    assert [(r.name, r.datatype, r.value) for r in resolved] == [
        ("Axis/X/Offset", DataType.INT32, -5),
        ("Spindle/Speed", DataType.DOUBLE, 99.5),
    ]


def test_seq_wraps_255_to_0() -> None:
    s = SparkplugSessions()
    s.observe(topic("NBIRTH"), nbirth())
    for seq in range(1, 256):
        assert s.observe(topic("NDATA"), data(seq)).kind is VerdictKind.OK
    assert s.observe(topic("NDATA"), data(0)).kind is VerdictKind.OK
    assert s.observe(topic("NDATA"), data(1)).kind is VerdictKind.OK


def test_seq_jump_is_a_gap_then_resyncs() -> None:
    s = SparkplugSessions()
    s.observe(topic("NBIRTH"), nbirth())
    s.observe(topic("NDATA"), data(1))
    verdict = s.observe(topic("NDATA"), data(5))
    assert (verdict.kind, verdict.expected, verdict.got) == (VerdictKind.GAP, 2, 5)
    assert verdict.needs_rebirth
    assert s.observe(topic("NDATA"), data(6)).kind is VerdictKind.OK
    # a repeated seq is also a gap (expected 7)
    again = s.observe(topic("NDATA"), data(6))
    assert (again.kind, again.expected, again.got) == (VerdictKind.GAP, 7, 6)


def test_data_before_birth_needs_rebirth() -> None:
    s = SparkplugSessions()
    verdict = s.observe(topic("NDATA"), data(4, Metric(alias=1, value=1.0)))
    assert verdict.kind is VerdictKind.NEEDS_REBIRTH
    assert verdict.needs_rebirth
    assert s.resolve(topic("NDATA"), data(4, Metric(alias=1, value=1.0))) == []
    s.observe(topic("NBIRTH"), nbirth())
    assert s.observe(topic("DDATA", "cnc1"), data(1)).kind is VerdictKind.NEEDS_REBIRTH
    # An undeclared alias: the message is still usable (its declared metrics are named), the
    # unknown one is reported, and a rebirth is asked for.
    msg = data(2, Metric(alias=77, value=1.0), Metric(alias=1, value=3.0))
    unknown = s.observe(topic("NDATA"), msg)
    assert (unknown.kind, unknown.unresolved, unknown.needs_rebirth) == (VerdictKind.OK, 1, True)
    assert "alias 77" in unknown.reason
    resolved = s.resolve(topic("NDATA"), msg)
    assert [(r.name, r.value, r.problem) for r in resolved] == [
        ("<alias 77>", None, "alias 77 not declared in the birth"),
        ("Spindle/Speed", 3.0, None),
    ]


def test_device_birth_data_and_death_share_the_node_seq() -> None:
    s = SparkplugSessions()
    s.observe(topic("NBIRTH"), nbirth())
    dbirth = Payload(
        seq=1,
        metrics=(Metric(name="execution", alias=10, datatype=DataType.STRING, value="READY"),),
    )
    assert s.observe(topic("DBIRTH", "cnc1"), dbirth).kind is VerdictKind.OK
    assert s.is_online(G, N, "cnc1")
    msg = data(2, Metric(alias=10, value="ACTIVE"))
    assert s.observe(topic("DDATA", "cnc1"), msg).kind is VerdictKind.OK
    assert [r.name for r in s.resolve(topic("DDATA", "cnc1"), msg)] == ["execution"]
    assert s.observe(topic("NDATA"), data(3)).kind is VerdictKind.OK
    assert s.observe(topic("DDEATH", "cnc1"), data(4)).kind is VerdictKind.DEATH
    assert not s.is_online(G, N, "cnc1")
    assert s.is_online(G, N)
    assert s.observe(topic("DDEATH", "cnc1"), data(5)).kind is VerdictKind.STALE_DEATH


def test_ndeath_with_stale_bdseq_is_ignored() -> None:
    s = SparkplugSessions()
    s.observe(topic("NBIRTH"), nbirth(bdseq=4))
    stale = Payload(metrics=(Metric(name=BDSEQ_METRIC, datatype=DataType.UINT64, value=3),))
    verdict = s.observe(topic("NDEATH"), stale)
    assert (verdict.kind, verdict.expected, verdict.got) == (VerdictKind.STALE_DEATH, 4, 3)
    assert s.is_online(G, N)
    assert s.bdseq(G, N) == 4
    current = Payload(metrics=(Metric(name=BDSEQ_METRIC, datatype=DataType.UINT64, value=4),))
    assert s.observe(topic("NDEATH"), current).kind is VerdictKind.DEATH
    assert not s.is_online(G, N)
    assert s.observe(topic("NDATA"), data(1)).kind is VerdictKind.NEEDS_REBIRTH


def test_rebirth_resets_seq_and_aliases() -> None:
    s = SparkplugSessions()
    s.observe(topic("NBIRTH"), nbirth(bdseq=0))
    s.observe(topic("NDATA"), data(1))
    s.observe(topic("NDATA"), data(2))
    assert s.observe(topic("NBIRTH"), nbirth(bdseq=1)).kind is VerdictKind.OK
    assert s.observe(topic("NDATA"), data(1)).kind is VerdictKind.OK
    assert s.observe(topic("NCMD"), rebirth_payload(1)).kind is VerdictKind.IGNORED
