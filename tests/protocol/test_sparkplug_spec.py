"""Sparkplug B payloads as the specification and the reference implementations write them.

Sources (expected values below are read from them, not from our encoder):

* Eclipse Sparkplug 3.0 specification, chapter 6 "Payloads" and its "Sparkplug Array Types"
  appendix (github.com/eclipse-sparkplug/sparkplug, specification/, EPL-2.0): datatype codes,
  the byte examples of the array types, the NBIRTH/DBIRTH/NDATA examples, Quality codes.
* Eclipse Tahu (github.com/eclipse/tahu, EPL-2.0): the Java encoder
  (java/lib/core/.../SparkplugBPayloadEncoder.java: Int8/16/32 sign-extended into int_value,
  UInt32 in long_value, arrays little-endian, BooleanArray = 4-byte LE count + bits MSB first,
  a null DataSet value = an empty DataSetValue) and the Python core
  (python/core/sparkplug_b.py: negative Int8/16/32 width-limited, e.g. -2 -> 0xFE) and example
  (python/examples/example.py: the "_types_/Custom_Motor" template and its instance).

Payloads are built field by field with the protobuf classes (``PayloadPb``), as an edge node
would, and decoded with :func:`decode_payload` / resolved with :class:`SparkplugSessions`.

Spec errata met on the way (we follow the normative text and Tahu): the appendix's FloatArray
and DoubleArray examples list big-endian bytes (1.23f -> 3F 9D 70 A4) although the text and
Tahu say little-endian; its Int8Array example gives 0xEF for -23 (0xE9); its DateTimeArray
example drops the two zero high bytes of each 8-byte value.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from protocol.sparkplug import (
    DataSet,
    DataType,
    HostState,
    MessageType,
    PayloadPb,
    SparkplugSessions,
    VerdictKind,
    decode_payload,
    parse_sparkplug_topic,
    parse_state_payload,
)

# --- arrays: the appendix's examples ------------------------------------------------------------

SPEC_ARRAYS: list[tuple[DataType, str, list[Any]]] = [
    (DataType.INT16_ARRAY, "D0 8A 30 75", [-30000, 30000]),
    (DataType.INT32_ARRAY, "FF FF FF FF FA AF CB 12", [-1, 315338746]),
    (
        DataType.INT64_ARRAY,
        "CE 06 72 AC 18 9C BA C4 C4 BA 9C 18 AC 72 06 CE",
        [-4270929666821191986, -3601064768563266876],
    ),
    (DataType.UINT8_ARRAY, "17 FA", [23, 250]),
    (DataType.UINT16_ARRAY, "1E 00 88 CC", [30, 52360]),
    (DataType.UINT32_ARRAY, "34 00 00 00 49 FB 55 C4", [52, 3293969225]),
    (
        DataType.UINT64_ARRAY,
        "34 00 00 00 00 00 00 00 D9 9E 02 D1 B2 76 37 E4",
        [52, 16444743074749521625],
    ),
    (
        DataType.BOOLEAN_ARRAY,
        "0C 00 00 00 34 D0",
        [False, False, True, True, False, True, False, False, True, True, False, True],
    ),
    (DataType.STRING_ARRAY, "41 42 43 00 68 65 6c 6c 6f 00", ["ABC", "hello"]),
    # Erratum fixed (see the module docstring): little-endian, as the text and Tahu say.
    (DataType.INT8_ARRAY, "E9 7B", [-23, 123]),
    (DataType.FLOAT_ARRAY, "A4 70 9D 3F 98 AE B2 42", [1.23, 89.341]),
    (
        DataType.DOUBLE_ARRAY,
        "D7 A2 05 68 5B B5 28 40 8E 17 1C 6F 4C F7 8F 40",
        [12.354213, 1022.9123213],
    ),
    (
        DataType.DATETIME_ARRAY,
        "C7 D0 90 75 24 01 00 00 B8 BA B8 97 81 01 00 00",
        [1256102875335, 1656107875000],
    ),
]


@pytest.mark.parametrize(("dtype", "hexbytes", "expected"), SPEC_ARRAYS)
def test_array_types_decode_the_spec_examples(
    dtype: DataType, hexbytes: str, expected: list[Any]
) -> None:
    pb = PayloadPb()
    m = pb.metrics.add(name="a", alias=7, datatype=int(dtype), timestamp=1)
    m.bytes_value = bytes.fromhex(hexbytes)
    [metric] = decode_payload(pb.SerializeToString()).metrics
    assert (metric.value, metric.problem) == (expected, None)


def test_alias_only_array_takes_its_datatype_from_the_birth() -> None:
    s = SparkplugSessions()
    birth = PayloadPb(seq=0)
    b = birth.metrics.add(name="Flags", alias=3, datatype=int(DataType.BOOLEAN_ARRAY))
    b.bytes_value = bytes.fromhex("0C 00 00 00 00 00")
    topic = parse_sparkplug_topic("spBv1.0/g/NBIRTH/n")
    s.observe(topic, decode_payload(birth.SerializeToString()))
    data = PayloadPb(seq=1)
    data.metrics.add(alias=3).bytes_value = bytes.fromhex("0C 00 00 00 34 D0")
    ndata = parse_sparkplug_topic("spBv1.0/g/NDATA/n")
    payload = decode_payload(data.SerializeToString())
    assert s.observe(ndata, payload).kind is VerdictKind.OK
    [r] = s.resolve(ndata, payload)
    assert (r.name, r.datatype, r.problem) == ("Flags", DataType.BOOLEAN_ARRAY, None)
    assert r.value == [False, False, True, True, False, True, False, False, True, True, False, True]


def test_string_array_without_the_last_nul_is_read() -> None:
    pb = PayloadPb()
    pb.metrics.add(name="s", datatype=int(DataType.STRING_ARRAY)).bytes_value = b"ABC\x00hello"
    assert decode_payload(pb.SerializeToString()).metrics[0].value == ["ABC", "hello"]


# --- scalars as the reference implementations write them -------------------------------------


def test_values_as_tahu_java_and_python_encode_them() -> None:
    pb = PayloadPb(timestamp=1486144502122, seq=0)

    def add(name: str, dtype: DataType, field: str, raw: Any) -> None:
        m = pb.metrics.add(name=name, datatype=int(dtype), timestamp=1486144502122)
        setattr(m, field, raw)

    add("java int8", DataType.INT8, "int_value", 0xFFFFFFFE)  # (Byte) -2, sign-extended
    add("python int8", DataType.INT8, "int_value", 0xFE)  # -2 + 2**8
    add("python int16", DataType.INT16, "int_value", 2**16 - 30000)
    add("java int64", DataType.INT64, "long_value", 2**64 - 5)
    add("java uint32", DataType.UINT32, "long_value", 3293969225)  # UInt32 in long_value
    add("uint64", DataType.UINT64, "long_value", 16444743074749521625)  # > 2**63
    add("Supply Voltage", DataType.FLOAT, "float_value", 12.1)  # the spec's NBIRTH example
    add("when", DataType.DATETIME, "long_value", 1486144502122)
    add("uuid", DataType.UUID, "string_value", "f81d4fae-7dec-11d0-a765-00a0c91e6bf6")
    add("text", DataType.TEXT, "string_value", "line 1\nline 2")
    add("bool in an int", DataType.BOOLEAN, "int_value", 1)
    add("file", DataType.FILE, "bytes_value", b"%PDF-1.4")
    values = {m.name: m.value for m in decode_payload(pb.SerializeToString()).metrics}
    assert values == {
        "java int8": -2,
        "python int8": -2,
        "python int16": -30000,
        "java int64": -5,
        "java uint32": 3293969225,
        "uint64": 16444743074749521625,
        "Supply Voltage": 12.1,  # not 12.100000381469727: the shortest float32 decimal
        "when": 1486144502122,
        "uuid": "f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
        "text": "line 1\nline 2",
        "bool in an int": True,
        "file": b"%PDF-1.4",
    }
    # float32 shortening keeps the bits: 12.1 encodes to the same float the edge node sent.
    assert struct.pack("<f", values["Supply Voltage"]) == struct.pack("<f", 12.100000381469727)


def test_flags_null_and_properties_as_sent() -> None:
    pb = PayloadPb(seq=3)
    h = pb.metrics.add(name="h", datatype=int(DataType.DOUBLE), is_historical=True, timestamp=5)
    h.double_value = 1.5
    pb.metrics.add(name="t", datatype=int(DataType.DOUBLE), is_transient=True).double_value = 2.0
    pb.metrics.add(name="n", datatype=int(DataType.INT32), is_null=True)  # Tahu addNullMetric
    q = pb.metrics.add(alias=9, datatype=int(DataType.BOOLEAN))  # Tahu example: STALE
    q.boolean_value = True
    q.properties.keys.append("Quality")
    q.properties.values.add(type=int(DataType.INT32)).int_value = 500
    h2, t, n, stale = decode_payload(pb.SerializeToString()).metrics
    assert (h2.is_historical, h2.timestamp, h2.value) == (True, 5, 1.5)
    assert (t.is_transient, t.value) == (True, 2.0)
    assert (n.is_null, n.value, n.datatype) == (True, None, DataType.INT32)
    assert stale.properties is not None and stale.properties["Quality"].value == 500


def test_one_bad_metric_does_not_fail_the_payload() -> None:
    pb = PayloadPb(seq=1)
    pb.metrics.add(name="future type", datatype=35).int_value = 1
    pb.metrics.add(name="short", datatype=int(DataType.INT32_ARRAY)).bytes_value = b"\x01\x02\x03"
    pb.metrics.add(
        name="count lies", datatype=int(DataType.BOOLEAN_ARRAY)
    ).bytes_value = b"\x10\x00\x00\x00\xff"  # 16 booleans announced, 8 sent
    ds = pb.metrics.add(name="ragged", datatype=int(DataType.DATASET)).dataset_value
    ds.num_of_columns = 2
    ds.columns.extend(["a", "b"])
    ds.types.extend([3, 12])
    ds.rows.add().elements.add().int_value = 1  # 1 of 2 values
    odd = pb.metrics.add(name="odd props", datatype=int(DataType.DOUBLE))
    odd.double_value = 7.0
    odd.properties.keys.extend(["engUnit", "orphan"])  # 2 keys, 1 value
    odd.properties.values.add(type=99).string_value = "mm"  # unknown property type
    pb.metrics.add(name="fine", datatype=int(DataType.DOUBLE)).double_value = 3.5
    metrics = decode_payload(pb.SerializeToString()).metrics
    problems = {m.name: m.problem for m in metrics}
    assert problems == {
        "future type": "unknown datatype code 35",
        "short": "INT32_ARRAY length 3 is not a multiple of 4",
        "count lies": "BooleanArray holds 8 bits, count says 16",
        "ragged": "DataSet row 0 has 1 of 2 values",
        "odd props": None,
        "fine": None,
    }
    assert metrics[4].value == 7.0 and metrics[4].properties is not None
    assert metrics[4].properties["engUnit"].value == "mm"
    assert "orphan" not in metrics[4].properties
    assert metrics[5].value == 3.5


def test_text_that_is_not_utf8_is_read_with_replacement_characters() -> None:
    # A proto2 string field is not checked on the wire; a C edge node may send Latin-1.
    metric = b"\x0a\x07Temp \xb0C" + b"\x20\x0c" + b"\x7a\x04\xb0\x43\x20\x31"
    payload = b"\x18\x01\x12" + bytes([len(metric)]) + metric
    [m] = decode_payload(payload).metrics
    assert (m.name, m.value, m.problem) == ("Temp \ufffdC", "\ufffdC 1", None)


def test_dataset_of_the_tahu_python_example_and_a_java_null() -> None:
    pb = PayloadPb(seq=0)
    ds = pb.metrics.add(name="DataSet", alias=3, datatype=int(DataType.DATASET)).dataset_value
    ds.num_of_columns = 3
    ds.columns.extend(["Int8s", "Int16s", "Int32s"])
    ds.types.extend([1, 2, 3])
    for row in ((0, 1, 2), (3, 4, 5)):
        r = ds.rows.add()
        for v in row:
            r.elements.add().int_value = v
    r = ds.rows.add()
    r.elements.add().int_value = 0xFFFFFFFF  # Java (Byte) -1
    r.elements.add()  # Java: a null value is an empty DataSetValue
    r.elements.add().int_value = 7
    [m] = decode_payload(pb.SerializeToString()).metrics
    assert m.value == DataSet(
        ("Int8s", "Int16s", "Int32s"),
        (DataType.INT8, DataType.INT16, DataType.INT32),
        ((0, 1, 2), (3, 4, 5), (-1, None, 7)),
    )


# --- templates: the Tahu Python example --------------------------------------------------------


def _template_births() -> tuple[bytes, bytes]:
    nbirth = PayloadPb(timestamp=1, seq=0)
    nbirth.metrics.add(name="bdSeq", datatype=int(DataType.INT64)).long_value = 0
    definition = nbirth.metrics.add(name="_types_/Custom_Motor", datatype=19).template_value
    definition.is_definition = True
    p = definition.parameters.add(name="Index", type=int(DataType.STRING))
    p.string_value = "0"
    for member in ("RPMs", "AMPs"):
        definition.metrics.add(name=member, datatype=int(DataType.INT32)).int_value = 0
    dbirth = PayloadPb(timestamp=2, seq=1)
    instance = dbirth.metrics.add(name="My_Custom_Motor", alias=12, datatype=19, timestamp=2)
    tv = instance.template_value
    tv.template_ref = "Custom_Motor"
    tv.is_definition = False
    p = tv.parameters.add(name="Index", type=int(DataType.STRING))
    p.string_value = "1"
    tv.metrics.add(name="RPMs", datatype=int(DataType.INT32)).int_value = 123
    tv.metrics.add(name="AMPs", datatype=int(DataType.INT32)).int_value = 456
    return nbirth.SerializeToString(), dbirth.SerializeToString()


def test_template_definition_and_instance_members() -> None:
    s = SparkplugSessions()
    nbirth, dbirth = _template_births()
    node = parse_sparkplug_topic("spBv1.0/Sparkplug B Devices/NBIRTH/Python Edge Node 1")
    dev = parse_sparkplug_topic(
        "spBv1.0/Sparkplug B Devices/DBIRTH/Python Edge Node 1/Emulated Device"
    )
    p_node, p_dev = decode_payload(nbirth), decode_payload(dbirth)
    assert s.observe(node, p_node).kind is VerdictKind.OK
    assert [r.name for r in s.resolve(node, p_node)] == ["bdSeq"]  # definitions are no values
    assert s.observe(dev, p_dev).kind is VerdictKind.OK
    assert [(r.name, r.value, r.timestamp) for r in s.resolve(dev, p_dev)] == [
        ("My_Custom_Motor/RPMs", 123, 2),
        ("My_Custom_Motor/AMPs", 456, 2),
    ]
    # DDATA by alias, one member changed and sent without its datatype: the definition's
    # Int32 applies (the NBIRTH's definition, for an instance born in a DBIRTH).
    ddata = PayloadPb(timestamp=3, seq=2)
    inst = ddata.metrics.add(alias=12, timestamp=3).template_value
    inst.template_ref = "Custom_Motor"
    inst.metrics.add(name="RPMs").int_value = 0xFFFFFFFF
    topic = parse_sparkplug_topic(
        "spBv1.0/Sparkplug B Devices/DDATA/Python Edge Node 1/Emulated Device"
    )
    payload = decode_payload(ddata.SerializeToString())
    assert s.observe(topic, payload).kind is VerdictKind.OK
    [r] = s.resolve(topic, payload)
    assert (r.name, r.datatype, r.value, r.timestamp) == (
        "My_Custom_Motor/RPMs",
        DataType.INT32,
        -1,
        3,
    )


# --- host STATE, both generations --------------------------------------------------------------


def test_state_of_sparkplug_3_and_2_2_hosts() -> None:
    t = parse_sparkplug_topic("spBv1.0/STATE/scada-primary")
    assert (t.message_type, t.host_id) == (MessageType.STATE, "scada-primary")
    assert parse_state_payload(b'{"online" : true, "timestamp" : 1668114759262}') == HostState(
        True, 1668114759262
    )
    old = parse_sparkplug_topic("STATE/Ignition SCADA")  # 2.2: outside spBv1.0, plain text
    assert (old.message_type, old.host_id) == (MessageType.STATE, "Ignition SCADA")
    assert parse_state_payload(b"ONLINE") == HostState(True)
    assert parse_state_payload(b"OFFLINE") == HostState(False)


# --- compressed payloads (Tahu's Java PayloadUtil and JavaScript sparkplug-client) -------------


def _inner() -> bytes:
    pb = PayloadPb(timestamp=1486144502122, seq=7)
    m = pb.metrics.add(alias=1, timestamp=1486144502122)
    m.double_value = 12.5
    return pb.SerializeToString()


@pytest.mark.parametrize("algorithm", [None, "DEFLATE", "GZIP", "deflate", "raw"])
def test_compressed_payloads_are_inflated(algorithm: str | None) -> None:
    import gzip
    import zlib

    raw = _inner()
    if algorithm is None or algorithm.upper() == "DEFLATE":
        body = zlib.compress(raw)  # java.util.zip.Deflater / pako.deflate: zlib-wrapped
    elif algorithm == "GZIP":
        body = gzip.compress(raw)
    else:
        c = zlib.compressobj(wbits=-15)  # raw deflate, no zlib header
        body = c.compress(raw) + c.flush()
    outer = PayloadPb(uuid="SPBV1.0_COMPRESSED", body=body)
    if algorithm not in (None, "raw"):
        outer.metrics.add(name="algorithm", datatype=int(DataType.STRING)).string_value = algorithm
    p = decode_payload(outer.SerializeToString())
    assert (p.seq, p.timestamp) == (7, 1486144502122)
    assert [(m.alias, m.value) for m in p.metrics] == [(1, 12.5)]


def test_bad_compressed_payloads_are_payload_errors() -> None:
    import zlib

    from protocol.errors import SparkplugPayloadError

    cases = [
        (PayloadPb(uuid="SPBV1.0_COMPRESSED", body=b"not deflate"), "not complete DEFLATE"),
        (PayloadPb(uuid="SPBV1.0_COMPRESSED", body=zlib.compress(b"\x00" * 20_000_000)), "beyond"),
    ]
    lzma = PayloadPb(uuid="SPBV1.0_COMPRESSED", body=b"x")
    lzma.metrics.add(name="algorithm").string_value = "LZMA"
    cases.append((lzma, "unknown algorithm 'LZMA'"))
    for pb, fragment in cases:
        with pytest.raises(SparkplugPayloadError, match=fragment):
            decode_payload(pb.SerializeToString())


# --- encoders that leave out zeros (protobuf-net in SparkplugNet) ---------------------------------


def test_absent_seq_is_zero_only_where_zero_is_due() -> None:
    s = SparkplugSessions()
    birth = PayloadPb(timestamp=1)  # NBIRTH seq 0, left out
    birth.metrics.add(name="bdSeq", datatype=4).long_value = 0
    nbirth = parse_sparkplug_topic("spBv1.0/g/NBIRTH/n")
    s.observe(nbirth, decode_payload(birth.SerializeToString()))
    ndata = parse_sparkplug_topic("spBv1.0/g/NDATA/n")
    for seq in range(1, 256):
        assert s.observe(ndata, decode_payload(PayloadPb(seq=seq).SerializeToString())).kind is (
            VerdictKind.OK
        )
    after_255 = decode_payload(PayloadPb(timestamp=2).SerializeToString())
    assert s.observe(ndata, after_255).kind is VerdictKind.OK  # the 0 after 255, left out
    verdict = s.observe(ndata, after_255)  # but where 1 is due, a missing seq is no seq
    assert (verdict.kind, verdict.reason) == (VerdictKind.NEEDS_REBIRTH, "bad seq None")


def _alias_birth(*metrics: tuple[str, int | None]) -> SparkplugSessions:
    s = SparkplugSessions()
    pb = PayloadPb(timestamp=1)
    pb.metrics.add(name="bdSeq", datatype=4).long_value = 0
    pb.metrics.add(name="Node Control/Rebirth", datatype=11).boolean_value = False
    for name, alias in metrics:
        m = pb.metrics.add(name=name, datatype=int(DataType.DOUBLE))
        if alias is not None:
            m.alias = alias
        m.double_value = 0.0
    s.observe(parse_sparkplug_topic("spBv1.0/g/NBIRTH/n"), decode_payload(pb.SerializeToString()))
    return s


@pytest.mark.parametrize(
    ("birth", "expected"),
    [
        ((("A", None), ("B", 1)), "A"),  # the one data metric without an alias is alias 0
        ((("A", 0), ("B", 1), ("C", None)), "A"),  # an explicit alias 0 (Tahu) is kept
        ((("A", None), ("C", None), ("B", 1)), None),  # two candidates: no guess
    ],
)
def test_a_metric_without_name_and_alias_is_alias_0(
    birth: tuple[tuple[str, int | None], ...], expected: str | None
) -> None:
    s = _alias_birth(*birth)
    data = PayloadPb(seq=1)
    data.metrics.add(timestamp=2).double_value = 4.5  # alias 0 left out, no name
    topic = parse_sparkplug_topic("spBv1.0/g/NDATA/n")
    payload = decode_payload(data.SerializeToString())
    verdict = s.observe(topic, payload)
    [r] = s.resolve(topic, payload)
    if expected is None:
        assert verdict.unresolved == 1 and r.problem is not None
    else:
        assert (verdict.unresolved, r.name, r.value) == (0, expected, 4.5)
