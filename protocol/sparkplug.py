"""Sparkplug B (spBv1.0) support: topics, protobuf payloads (decode and encode), session tracking.

* :func:`parse_sparkplug_topic` parses ``spBv1.0/<group>/<type>/<edge_node>[/<device>]`` and the
  host ``spBv1.0/STATE/<host_id>`` topic; :func:`parse_state_payload` reads STATE payloads.
* :func:`decode_payload` / :func:`encode_payload` convert between protobuf bytes and plain frozen
  dataclasses (:class:`Payload`, :class:`Metric`, ...). The protobuf classes are built at import
  time from a ``FileDescriptorProto`` equal to Eclipse Tahu's ``sparkplug_b.proto`` (no protoc
  needed), in a private descriptor pool.
* :class:`SparkplugSessions` is a pure state machine (no I/O) that ingest drives with every message:
  bdSeq per edge node, alias tables from NBIRTH/DBIRTH, the 0..255 ``seq`` shared by a node and its
  devices; it answers with a :class:`Verdict` (ok, gap, needs_rebirth, death, stale_death, ignored).

Values: signed integers travel two's-complement in the unsigned protobuf fields (Int8/16/32 in
``int_value`` as 32-bit, Int64 in ``long_value``); decoding reads the low 8/16/32/64 bits, so both
sign-extended and width-limited encodings decode correctly. DateTime is ms since the epoch (int).
Arrays (types 22-34) travel little-endian packed in ``bytes_value``; BooleanArray is a 4-byte
little-endian count followed by the bits, most significant bit first; StringArray is NUL-terminated
UTF-8 strings.
"""

from __future__ import annotations

__all__ = [
    "BDSEQ_METRIC",
    "COMPRESSED_UUID",
    "REBIRTH_METRIC",
    "UNDECLARED",
    "DataSet",
    "DataType",
    "HostState",
    "MessageType",
    "MetaData",
    "Metric",
    "Parameter",
    "Payload",
    "PropertyValue",
    "ResolvedMetric",
    "SparkplugSessions",
    "SparkplugTopic",
    "Template",
    "Verdict",
    "VerdictKind",
    "decode_payload",
    "encode_payload",
    "interpret",
    "parse_sparkplug_topic",
    "parse_state_payload",
    "rebirth_payload",
    "sparkplug_topic",
    "with_datatype",
]

import math
import struct
import zlib
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum
from typing import Any

import orjson

# protobuf ships no type stubs (types-protobuf is not a dependency); its objects are Any here.
from google.protobuf import (  # type: ignore[import-untyped]
    descriptor_pb2,
    descriptor_pool,
    message_factory,
)
from google.protobuf.message import (  # type: ignore[import-untyped]
    DecodeError,
    EncodeError,
)

from protocol.errors import SparkplugPayloadError, SparkplugTopicError

NAMESPACE = "spBv1.0"
BDSEQ_METRIC = "bdSeq"
REBIRTH_METRIC = "Node Control/Rebirth"

# ------------------------------------------------------------------------------------------------
# Data types


class DataType(IntEnum):
    """Sparkplug B datatype codes."""

    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14
    UUID = 15
    DATASET = 16
    BYTES = 17
    FILE = 18
    TEMPLATE = 19
    PROPERTY_SET = 20
    PROPERTY_SET_LIST = 21
    INT8_ARRAY = 22
    INT16_ARRAY = 23
    INT32_ARRAY = 24
    INT64_ARRAY = 25
    UINT8_ARRAY = 26
    UINT16_ARRAY = 27
    UINT32_ARRAY = 28
    UINT64_ARRAY = 29
    FLOAT_ARRAY = 30
    DOUBLE_ARRAY = 31
    BOOLEAN_ARRAY = 32
    STRING_ARRAY = 33
    DATETIME_ARRAY = 34


_SIGNED_BITS = {DataType.INT8: 8, DataType.INT16: 16, DataType.INT32: 32, DataType.INT64: 64}
_UNSIGNED_BITS = {DataType.UINT8: 8, DataType.UINT16: 16, DataType.UINT32: 32, DataType.UINT64: 64}
_INT_FIELD_TYPES = {DataType.INT8, DataType.INT16, DataType.INT32}
_INT_FIELD_TYPES |= {DataType.UINT8, DataType.UINT16, DataType.UINT32}
_LONG_FIELD_TYPES = {DataType.INT64, DataType.UINT64, DataType.DATETIME}
_STRING_TYPES = {DataType.STRING, DataType.TEXT, DataType.UUID}
_BYTES_TYPES = {DataType.BYTES, DataType.FILE}
_ARRAY_FORMATS = {
    DataType.INT8_ARRAY: "b",
    DataType.INT16_ARRAY: "h",
    DataType.INT32_ARRAY: "i",
    DataType.INT64_ARRAY: "q",
    DataType.UINT8_ARRAY: "B",
    DataType.UINT16_ARRAY: "H",
    DataType.UINT32_ARRAY: "I",
    DataType.UINT64_ARRAY: "Q",
    DataType.FLOAT_ARRAY: "f",
    DataType.DOUBLE_ARRAY: "d",
    DataType.DATETIME_ARRAY: "q",
}


def _to_signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


# ------------------------------------------------------------------------------------------------
# The protobuf schema (Eclipse Tahu sparkplug_b.proto, proto2), built without protoc

_PKG = "org.eclipse.tahu.protobuf"
_F = descriptor_pb2.FieldDescriptorProto
_MAX_EXT = 536870912  # 2**29: protobuf's exclusive upper bound for "extensions N to max"

_SCALARS: dict[str, int] = {
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
    "bool": _F.TYPE_BOOL,
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
}


def _message(
    parent: Any,
    name: str,
    fields: list[tuple[str, str, int, str]],
    *,
    extensions_from: int | None = None,
    oneof: bool = False,
) -> descriptor_pb2.DescriptorProto:
    """Add a message type. Each field is (label, type, number, name); label ``optional``,
    ``repeated`` or ``oneof`` (a member of the message's single ``value`` oneof); a type that is not
    a scalar is a message type name relative to the package."""
    msg: descriptor_pb2.DescriptorProto = parent.add(name=name)
    if oneof:
        msg.oneof_decl.add(name="value")
    for label, ftype, number, fname in fields:
        f = msg.field.add(name=fname, number=number)
        f.label = _F.LABEL_REPEATED if label == "repeated" else _F.LABEL_OPTIONAL
        if ftype in _SCALARS:
            f.type = _SCALARS[ftype]
        else:
            f.type = _F.TYPE_MESSAGE
            f.type_name = f".{_PKG}.{ftype}"
        if label == "oneof":
            f.oneof_index = 0
    if extensions_from is not None:
        msg.extension_range.add(start=extensions_from, end=_MAX_EXT)
    return msg


def _extension_holder(parent: Any, name: str) -> None:
    holder: descriptor_pb2.DescriptorProto = parent.add(name=name)
    holder.extension_range.add(start=1, end=_MAX_EXT)


def _build_file() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="arbor/sparkplug_b.proto", package=_PKG, syntax="proto2"
    )
    enum = fdp.enum_type.add(name="DataType")
    for dt in DataType:
        enum.value.add(name=dt.name.title().replace("_", ""), number=dt.value)
    payload = fdp.message_type.add(name="Payload")
    nested = payload.nested_type

    template = _message(
        nested,
        "Template",
        [
            ("optional", "string", 1, "version"),
            ("repeated", "Payload.Metric", 2, "metrics"),
            ("repeated", "Payload.Template.Parameter", 3, "parameters"),
            ("optional", "string", 4, "template_ref"),
            ("optional", "bool", 5, "is_definition"),
        ],
        extensions_from=6,
    )
    param = _message(
        template.nested_type,
        "Parameter",
        [
            ("optional", "string", 1, "name"),
            ("optional", "uint32", 2, "type"),
            ("oneof", "uint32", 3, "int_value"),
            ("oneof", "uint64", 4, "long_value"),
            ("oneof", "float", 5, "float_value"),
            ("oneof", "double", 6, "double_value"),
            ("oneof", "bool", 7, "boolean_value"),
            ("oneof", "string", 8, "string_value"),
            ("oneof", "Payload.Template.Parameter.ParameterValueExtension", 9, "extension_value"),
        ],
        oneof=True,
    )
    _extension_holder(param.nested_type, "ParameterValueExtension")

    dataset = _message(
        nested,
        "DataSet",
        [
            ("optional", "uint64", 1, "num_of_columns"),
            ("repeated", "string", 2, "columns"),
            ("repeated", "uint32", 3, "types"),
            ("repeated", "Payload.DataSet.Row", 4, "rows"),
        ],
        extensions_from=5,
    )
    dsv = _message(
        dataset.nested_type,
        "DataSetValue",
        [
            ("oneof", "uint32", 1, "int_value"),
            ("oneof", "uint64", 2, "long_value"),
            ("oneof", "float", 3, "float_value"),
            ("oneof", "double", 4, "double_value"),
            ("oneof", "bool", 5, "boolean_value"),
            ("oneof", "string", 6, "string_value"),
            ("oneof", "Payload.DataSet.DataSetValue.DataSetValueExtension", 7, "extension_value"),
        ],
        oneof=True,
    )
    _extension_holder(dsv.nested_type, "DataSetValueExtension")
    _message(
        dataset.nested_type,
        "Row",
        [("repeated", "Payload.DataSet.DataSetValue", 1, "elements")],
        extensions_from=2,
    )

    pv = _message(
        nested,
        "PropertyValue",
        [
            ("optional", "uint32", 1, "type"),
            ("optional", "bool", 2, "is_null"),
            ("oneof", "uint32", 3, "int_value"),
            ("oneof", "uint64", 4, "long_value"),
            ("oneof", "float", 5, "float_value"),
            ("oneof", "double", 6, "double_value"),
            ("oneof", "bool", 7, "boolean_value"),
            ("oneof", "string", 8, "string_value"),
            ("oneof", "Payload.PropertySet", 9, "propertyset_value"),
            ("oneof", "Payload.PropertySetList", 10, "propertysets_value"),
            ("oneof", "Payload.PropertyValue.PropertyValueExtension", 11, "extension_value"),
        ],
        oneof=True,
    )
    _extension_holder(pv.nested_type, "PropertyValueExtension")
    _message(
        nested,
        "PropertySet",
        [("repeated", "string", 1, "keys"), ("repeated", "Payload.PropertyValue", 2, "values")],
        extensions_from=3,
    )
    _message(
        nested,
        "PropertySetList",
        [("repeated", "Payload.PropertySet", 1, "propertyset")],
        extensions_from=2,
    )
    _message(
        nested,
        "MetaData",
        [
            ("optional", "bool", 1, "is_multi_part"),
            ("optional", "string", 2, "content_type"),
            ("optional", "uint64", 3, "size"),
            ("optional", "uint64", 4, "seq"),
            ("optional", "string", 5, "file_name"),
            ("optional", "string", 6, "file_type"),
            ("optional", "string", 7, "md5"),
            ("optional", "string", 8, "description"),
        ],
        extensions_from=9,
    )
    metric = _message(
        nested,
        "Metric",
        [
            ("optional", "string", 1, "name"),
            ("optional", "uint64", 2, "alias"),
            ("optional", "uint64", 3, "timestamp"),
            ("optional", "uint32", 4, "datatype"),
            ("optional", "bool", 5, "is_historical"),
            ("optional", "bool", 6, "is_transient"),
            ("optional", "bool", 7, "is_null"),
            ("optional", "Payload.MetaData", 8, "metadata"),
            ("optional", "Payload.PropertySet", 9, "properties"),
            ("oneof", "uint32", 10, "int_value"),
            ("oneof", "uint64", 11, "long_value"),
            ("oneof", "float", 12, "float_value"),
            ("oneof", "double", 13, "double_value"),
            ("oneof", "bool", 14, "boolean_value"),
            ("oneof", "string", 15, "string_value"),
            ("oneof", "bytes", 16, "bytes_value"),
            ("oneof", "Payload.DataSet", 17, "dataset_value"),
            ("oneof", "Payload.Template", 18, "template_value"),
            ("oneof", "Payload.Metric.MetricValueExtension", 19, "extension_value"),
        ],
        oneof=True,
    )
    _extension_holder(metric.nested_type, "MetricValueExtension")

    for label, ftype, number, fname in [
        ("optional", "uint64", 1, "timestamp"),
        ("repeated", "Payload.Metric", 2, "metrics"),
        ("optional", "uint64", 3, "seq"),
        ("optional", "string", 4, "uuid"),
        ("optional", "bytes", 5, "body"),
    ]:
        f = payload.field.add(name=fname, number=number)
        f.label = _F.LABEL_REPEATED if label == "repeated" else _F.LABEL_OPTIONAL
        if ftype in _SCALARS:
            f.type = _SCALARS[ftype]
        else:
            f.type = _F.TYPE_MESSAGE
            f.type_name = f".{_PKG}.{ftype}"
    payload.extension_range.add(start=6, end=_MAX_EXT)
    return fdp


def _build_classes() -> dict[str, Any]:
    # A private pool, so we never clash with another copy of sparkplug_b.proto in the process.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_build_file())
    names = ["Payload", "Payload.Metric"]
    return {
        n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PKG}.{n}")) for n in names
    }


_PB = _build_classes()
#: The generated protobuf message class ``org.eclipse.tahu.protobuf.Payload``.
PayloadPb: Any = _PB["Payload"]

# ------------------------------------------------------------------------------------------------
# Plain data model


@dataclass(frozen=True, slots=True)
class PropertyValue:
    """A typed property (``type`` is a :class:`DataType`; PropertySet values are dicts)."""

    type: DataType
    value: Any = None


@dataclass(frozen=True, slots=True)
class MetaData:
    """Metric metadata (mostly for files and multi-part bytes)."""

    is_multi_part: bool | None = None
    content_type: str | None = None
    size: int | None = None
    seq: int | None = None
    file_name: str | None = None
    file_type: str | None = None
    md5: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class DataSet:
    """A table: column names, their datatypes, and rows of values."""

    columns: tuple[str, ...]
    types: tuple[DataType, ...]
    rows: tuple[tuple[Any, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class Parameter:
    """A template parameter."""

    name: str
    type: DataType
    value: Any = None


@dataclass(frozen=True, slots=True)
class Template:
    """A template definition (``is_definition``) or instance (``template_ref``)."""

    metrics: tuple[Metric, ...] = ()
    parameters: tuple[Parameter, ...] = ()
    version: str | None = None
    template_ref: str | None = None
    is_definition: bool = False


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric. ``timestamp`` is ms since the epoch.

    ``value`` is the Python value for ``datatype`` (``None`` when ``is_null``). A DATA message
    often carries only ``alias`` and the value; with ``datatype`` absent the value is the raw field
    content (integers unsigned) until :meth:`SparkplugSessions.resolve` applies the birth datatype.
    """

    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None
    datatype: DataType | None = None
    value: Any = None
    is_historical: bool = False
    is_transient: bool = False
    is_null: bool = False
    metadata: MetaData | None = None
    properties: dict[str, PropertyValue] | None = None
    #: Why the value could not be decoded (unknown datatype code, malformed array or DataSet);
    #: ``None`` for a good metric. Decoding never fails a whole payload for one metric.
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Payload:
    """A Sparkplug B payload. ``timestamp`` is ms since the epoch; ``seq`` 0..255."""

    metrics: tuple[Metric, ...] = ()
    timestamp: int | None = None
    seq: int | None = None
    uuid: str | None = None
    body: bytes | None = None


# ------------------------------------------------------------------------------------------------
# Decoding


def _unpack_array(datatype: DataType, raw: bytes) -> list[Any]:
    if datatype is DataType.STRING_ARRAY:
        if not raw:
            return []
        # Each string is NUL-terminated; a missing last NUL is tolerated (the string ends there).
        body = raw[:-1] if raw.endswith(b"\x00") else raw
        return [s.decode("utf-8", "replace") for s in body.split(b"\x00")]
    if datatype is DataType.BOOLEAN_ARRAY:
        if len(raw) < 4:
            raise ValueError("BooleanArray shorter than its 4-byte count")
        (count,) = struct.unpack_from("<I", raw)
        bits = raw[4:]
        if len(bits) * 8 < count:
            raise ValueError(f"BooleanArray holds {len(bits) * 8} bits, count says {count}")
        return [bool(bits[i // 8] >> (7 - i % 8) & 1) for i in range(count)]
    fmt = _ARRAY_FORMATS[datatype]
    size = struct.calcsize(fmt)
    if len(raw) % size:
        raise ValueError(f"{datatype.name} length {len(raw)} is not a multiple of {size}")
    return list(struct.unpack(f"<{len(raw) // size}{fmt}", raw))


def interpret(datatype: DataType | None, raw: Any) -> Any:
    """Turn a raw protobuf field value into the Python value for ``datatype``.

    Signed integers are read two's-complement from the low bits; arrays unpacked from bytes; a
    Boolean sent as an integer is its truth value; text that is not valid UTF-8 is decoded with
    U+FFFD for the bad bytes. Unknown or absent datatypes return ``raw`` unchanged. Raises
    ``ValueError`` for a malformed array.
    """
    if raw is None or datatype is None:
        return raw
    if datatype in _SIGNED_BITS and isinstance(raw, int):
        return _to_signed(raw, _SIGNED_BITS[datatype])
    if datatype in _UNSIGNED_BITS and isinstance(raw, int):
        return raw & ((1 << _UNSIGNED_BITS[datatype]) - 1)
    if datatype is DataType.BOOLEAN and isinstance(raw, int):
        return bool(raw)
    if datatype in _STRING_TYPES and isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    if (datatype in _ARRAY_FORMATS or datatype in _BOOL_STR_ARRAYS) and isinstance(raw, bytes):
        values = _unpack_array(datatype, raw)
        if datatype is DataType.FLOAT_ARRAY:
            return [_float32(v) for v in values]
        return values
    return raw


_BOOL_STR_ARRAYS = {DataType.BOOLEAN_ARRAY, DataType.STRING_ARRAY}
_F32 = struct.Struct("<f")


def _float32(value: float) -> float:
    """The shortest decimal that is the same 32-bit float: a Float metric of 12.1 travels as
    12.100000381469727 and decodes back to 12.1 (and re-encodes to the same bits)."""
    if value != value or value in (math.inf, -math.inf):
        return value
    for digits in (6, 7, 8):
        short = float(f"{value:.{digits}g}")
        if _F32.unpack(_F32.pack(short))[0] == value:
            return short
    return value


def _text(value: Any) -> Any:
    """A proto2 ``string`` field holding bytes that are not UTF-8 arrives as bytes."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _datatype(code: int) -> DataType:
    try:
        return DataType(code)
    except ValueError:
        raise ValueError(f"unknown datatype code {code}") from None


def _oneof_raw(pb: Any) -> Any:
    which = pb.WhichOneof("value")
    if which is None:
        return None
    value = getattr(pb, which)
    if which == "float_value":
        value = _float32(value)
    elif which == "string_value":
        value = _text(value)
    return (which, value)


def _property_set(pb: Any) -> dict[str, PropertyValue]:
    """Lenient: properties describe a value, they are not the value. Keys without a value (or
    values without a key) are dropped, a value of an unknown type keeps its raw content."""
    return {_text(k): _property_value(v) for k, v in zip(pb.keys, pb.values, strict=False)}


def _property_value(pb: Any) -> PropertyValue:
    try:
        dtype = DataType(pb.type)
    except ValueError:
        dtype = DataType.UNKNOWN
    if pb.is_null:
        return PropertyValue(dtype, None)
    raw = _oneof_raw(pb)
    if raw is None:
        return PropertyValue(dtype, None)
    which, value = raw
    if which == "propertyset_value":
        return PropertyValue(dtype, _property_set(value))
    if which == "propertysets_value":
        return PropertyValue(dtype, [_property_set(s) for s in value.propertyset])
    if which == "extension_value":
        return PropertyValue(dtype, None)
    try:
        return PropertyValue(dtype, interpret(dtype, value))
    except (ValueError, struct.error):
        return PropertyValue(dtype, None)


def _dataset(pb: Any) -> DataSet:
    types = tuple(_datatype(t) for t in pb.types)
    columns = tuple(_text(c) for c in pb.columns)
    if len(types) != len(columns):
        raise ValueError(f"DataSet has {len(columns)} columns and {len(types)} types")
    rows = []
    for r, row in enumerate(pb.rows):
        if len(row.elements) != len(columns):
            raise ValueError(f"DataSet row {r} has {len(row.elements)} of {len(columns)} values")
        values = []
        for t, element in zip(types, row.elements, strict=True):
            raw = _oneof_raw(element)
            values.append(None if raw is None else interpret(t, raw[1]))
        rows.append(tuple(values))
    return DataSet(columns, types, tuple(rows))


def _template(pb: Any) -> Template:
    params = []
    for p in pb.parameters:
        try:
            dtype = DataType(p.type)
        except ValueError:
            dtype = DataType.UNKNOWN
        raw = _oneof_raw(p)
        try:
            value = None if raw is None or raw[0] == "extension_value" else interpret(dtype, raw[1])
        except (ValueError, struct.error):
            value = None
        params.append(Parameter(_text(p.name), dtype, value))
    return Template(
        metrics=tuple(_metric(m) for m in pb.metrics),
        parameters=tuple(params),
        version=_text(pb.version) if pb.HasField("version") else None,
        template_ref=_text(pb.template_ref) if pb.HasField("template_ref") else None,
        is_definition=pb.is_definition,
    )


def _metric(pb: Any) -> Metric:
    """One metric; what makes its value unusable (an unknown datatype code, a malformed array or
    DataSet) is kept in ``problem`` instead of failing the whole payload."""
    problem: str | None = None
    datatype: DataType | None = None
    if pb.HasField("datatype"):
        try:
            datatype = _datatype(pb.datatype)
        except ValueError as exc:
            problem = str(exc)
    value: Any = None
    if problem is None and not pb.is_null:
        raw = _oneof_raw(pb)
        try:
            if raw is None:
                pass
            elif raw[0] == "dataset_value":
                value = _dataset(raw[1])
            elif raw[0] == "template_value":
                value = _template(raw[1])
            elif raw[0] == "extension_value":
                value = None
            else:
                value = interpret(datatype, raw[1])
        except (ValueError, struct.error) as exc:
            problem = str(exc)
            value = None
    md = pb.metadata
    return Metric(
        name=_text(pb.name) if pb.HasField("name") and pb.name else None,
        alias=pb.alias if pb.HasField("alias") else None,
        timestamp=pb.timestamp if pb.HasField("timestamp") else None,
        datatype=datatype,
        value=value,
        is_historical=pb.is_historical,
        is_transient=pb.is_transient,
        is_null=pb.is_null,
        metadata=MetaData(**{f: _text(getattr(md, f)) for f in _METADATA_FIELDS if md.HasField(f)})
        if pb.HasField("metadata")
        else None,
        properties=_property_set(pb.properties) if pb.HasField("properties") else None,
        problem=problem,
    )


_METADATA_FIELDS = MetaData.__dataclass_fields__.keys()


#: ``Payload.uuid`` of a compressed payload (Eclipse Tahu's Java ``PayloadUtil`` and JavaScript
#: ``sparkplug-client``): ``body`` is the real payload, DEFLATE (zlib) or GZIP as the String metric
#: ``algorithm`` says (DEFLATE when it is absent).
COMPRESSED_UUID = "SPBV1.0_COMPRESSED"
#: Decompressed payloads larger than this are refused (a small body can inflate without end).
MAX_DECOMPRESSED_BYTES = 2 * 1024 * 1024


def _parse(data: bytes) -> Any:
    pb: Any = PayloadPb()
    try:
        pb.ParseFromString(bytes(data))
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise SparkplugPayloadError(f"not a Sparkplug B payload: {exc}") from None
    return pb


def _decompress(pb: Any) -> Any:
    algorithm = "DEFLATE"
    for m in pb.metrics:
        if m.name == "algorithm" and m.WhichOneof("value") == "string_value":
            algorithm = str(_text(m.string_value)).upper()
    if algorithm not in ("DEFLATE", "GZIP"):
        raise SparkplugPayloadError(f"compressed payload: unknown algorithm {algorithm!r}")
    # DEFLATE is zlib-wrapped (Java's Deflater, pako.deflate); accept raw deflate and gzip too.
    attempts = (47, -15) if algorithm == "DEFLATE" else (31,)
    for wbits in attempts:
        d = zlib.decompressobj(wbits)
        try:
            inner = d.decompress(pb.body, MAX_DECOMPRESSED_BYTES)
        except zlib.error:
            continue
        if d.unconsumed_tail:
            raise SparkplugPayloadError(
                f"compressed payload inflates beyond {MAX_DECOMPRESSED_BYTES} bytes"
            )
        if not d.eof:
            continue  # truncated, or not this format
        found = _parse(inner)
        if not found.HasField("seq") and pb.HasField("seq"):
            found.seq = pb.seq
        if not found.HasField("timestamp") and pb.HasField("timestamp"):
            found.timestamp = pb.timestamp
        return found
    raise SparkplugPayloadError(f"compressed payload: body is not complete {algorithm} data")


def decode_payload(data: bytes, *, strict: bool = False) -> Payload:
    """Decode a Sparkplug B protobuf payload (a compressed one, ``uuid`` =
    ``SPBV1.0_COMPRESSED``, is inflated first).

    Raises :class:`~protocol.errors.SparkplugPayloadError` for bytes that are not a valid
    Payload. A metric whose value cannot be read (an unknown datatype code, a malformed DataSet
    or array) does not fail the payload: it keeps its name, alias and flags, its value is
    ``None`` and :attr:`Metric.problem` says why (with ``strict``, it raises instead).
    Malformed properties are dropped or kept raw, never an error.
    """
    pb = _parse(data)
    if pb.HasField("uuid") and pb.uuid == COMPRESSED_UUID and pb.HasField("body"):
        pb = _decompress(pb)
    metrics = []
    for i, m in enumerate(pb.metrics):
        try:
            metric = _metric(m)
        except (ValueError, UnicodeDecodeError, struct.error) as exc:  # pragma: no cover
            metric = Metric(problem=str(exc))
        if strict and metric.problem is not None:
            label = f"metrics[{i}]" + (f" ({metric.name!r})" if metric.name else "")
            raise SparkplugPayloadError(f"{label}: {metric.problem}")
        metrics.append(metric)
    return Payload(
        metrics=tuple(metrics),
        timestamp=pb.timestamp if pb.HasField("timestamp") else None,
        seq=pb.seq if pb.HasField("seq") else None,
        uuid=_text(pb.uuid) if pb.HasField("uuid") else None,
        body=pb.body if pb.HasField("body") else None,
    )


# ------------------------------------------------------------------------------------------------
# Encoding


def _pack_array(datatype: DataType, values: Any) -> bytes:
    items = list(values)
    if datatype is DataType.STRING_ARRAY:
        return b"".join(str(s).encode("utf-8") + b"\x00" for s in items)
    if datatype is DataType.BOOLEAN_ARRAY:
        bits = bytearray((len(items) + 7) // 8)
        for i, b in enumerate(items):
            if b:
                bits[i // 8] |= 1 << (7 - i % 8)
        return struct.pack("<I", len(items)) + bytes(bits)
    fmt = _ARRAY_FORMATS[datatype]
    return struct.pack(f"<{len(items)}{fmt}", *items)


def _check_int(datatype: DataType, value: Any) -> int:
    if type(value) is not int:
        raise ValueError(f"{datatype.name} needs an int, got {type(value).__name__}")
    if datatype in _SIGNED_BITS:
        bits = _SIGNED_BITS[datatype]
        if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
            raise ValueError(f"{value} is out of range for {datatype.name}")
        # Two's complement in the unsigned field: 32 bits for int_value, 64 for long_value.
        return value & (0xFFFFFFFFFFFFFFFF if bits == 64 else 0xFFFFFFFF)
    bits = _UNSIGNED_BITS.get(datatype, 64)
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{value} is out of range for {datatype.name}")
    return value


def _set_value(pb: Any, datatype: DataType | None, value: Any, prefix: str = "") -> None:
    """Write ``value`` into the oneof field of ``pb`` that ``datatype`` uses.

    ``prefix`` is "" for Metric-like messages; field names are the same in every message type.
    """
    if datatype is None:
        datatype = _infer(value)
        if datatype is None:
            raise ValueError(f"cannot infer a datatype for {type(value).__name__}")
    if datatype in _INT_FIELD_TYPES:
        pb.int_value = _check_int(datatype, value)
    elif datatype in _LONG_FIELD_TYPES:
        pb.long_value = _check_int(datatype, value)
    elif datatype is DataType.FLOAT:
        pb.float_value = float(value)
    elif datatype is DataType.DOUBLE:
        pb.double_value = float(value)
    elif datatype is DataType.BOOLEAN:
        if type(value) is not bool:
            raise ValueError(f"BOOLEAN needs a bool, got {type(value).__name__}")
        pb.boolean_value = value
    elif datatype in _STRING_TYPES:
        if not isinstance(value, str):
            raise ValueError(f"{datatype.name} needs a str, got {type(value).__name__}")
        pb.string_value = value
    elif datatype in _BYTES_TYPES:
        pb.bytes_value = bytes(value)
    elif datatype in _ARRAY_FORMATS or datatype in _BOOL_STR_ARRAYS:
        pb.bytes_value = _pack_array(datatype, value)
    elif datatype is DataType.DATASET:
        _fill_dataset(pb.dataset_value, value)
    elif datatype is DataType.TEMPLATE:
        _fill_template(pb.template_value, value)
    else:
        raise ValueError(f"cannot encode a value of datatype {datatype.name}")


def _infer(value: Any) -> DataType | None:
    if isinstance(value, bool):
        return DataType.BOOLEAN
    if isinstance(value, int):
        return DataType.INT64 if value < 0 else DataType.UINT64
    if isinstance(value, float):
        return DataType.DOUBLE
    if isinstance(value, str):
        return DataType.STRING
    if isinstance(value, bytes):
        return DataType.BYTES
    if isinstance(value, DataSet):
        return DataType.DATASET
    if isinstance(value, Template):
        return DataType.TEMPLATE
    return None


def _fill_dataset(pb: Any, ds: DataSet) -> None:
    if len(ds.columns) != len(ds.types):
        raise ValueError(f"DataSet has {len(ds.columns)} columns and {len(ds.types)} types")
    pb.num_of_columns = len(ds.columns)
    pb.columns.extend(ds.columns)
    pb.types.extend(int(t) for t in ds.types)
    for r, row in enumerate(ds.rows):
        if len(row) != len(ds.columns):
            raise ValueError(f"DataSet row {r} has {len(row)} of {len(ds.columns)} values")
        prow = pb.rows.add()
        for t, v in zip(ds.types, row, strict=True):
            element = prow.elements.add()
            if v is not None:
                _set_value(element, t, v)


def _fill_template(pb: Any, tpl: Template) -> None:
    if tpl.version is not None:
        pb.version = tpl.version
    if tpl.template_ref is not None:
        pb.template_ref = tpl.template_ref
    pb.is_definition = tpl.is_definition
    for m in tpl.metrics:
        _fill_metric(pb.metrics.add(), m)
    for p in tpl.parameters:
        pp = pb.parameters.add(name=p.name, type=int(p.type))
        if p.value is not None:
            _set_value(pp, p.type, p.value)


def _fill_property_set(pb: Any, props: dict[str, PropertyValue]) -> None:
    for key, pv in props.items():
        pb.keys.append(key)
        out = pb.values.add(type=int(pv.type))
        if pv.value is None:
            out.is_null = True
        elif pv.type is DataType.PROPERTY_SET:
            _fill_property_set(out.propertyset_value, pv.value)
        elif pv.type is DataType.PROPERTY_SET_LIST:
            for ps in pv.value:
                _fill_property_set(out.propertysets_value.propertyset.add(), ps)
        else:
            _set_value(out, pv.type, pv.value)


def _fill_metric(pb: Any, m: Metric) -> None:
    if m.name is not None:
        pb.name = m.name
    if m.alias is not None:
        pb.alias = m.alias
    if m.timestamp is not None:
        pb.timestamp = m.timestamp
    if m.datatype is not None:
        pb.datatype = int(m.datatype)
    if m.is_historical:
        pb.is_historical = True
    if m.is_transient:
        pb.is_transient = True
    if m.is_null or m.value is None:
        if m.is_null:
            pb.is_null = True
    else:
        _set_value(pb, m.datatype, m.value)
    if m.metadata is not None:
        for f in _METADATA_FIELDS:
            v = getattr(m.metadata, f)
            if v is not None:
                setattr(pb.metadata, f, v)
    if m.properties is not None:
        _fill_property_set(pb.properties, m.properties)


def encode_payload(payload: Payload) -> bytes:
    """Encode a :class:`Payload` to protobuf bytes.

    Values are written to the field their datatype uses (signed ints two's-complement); a metric
    without a datatype gets one inferred from its Python type for the field choice only (the
    datatype field stays absent, as in alias-only DATA messages). Raises
    :class:`~protocol.errors.SparkplugPayloadError` for a value that does not fit its datatype.
    """
    pb: Any = PayloadPb()
    if payload.timestamp is not None:
        pb.timestamp = payload.timestamp
    if payload.seq is not None:
        pb.seq = payload.seq
    if payload.uuid is not None:
        pb.uuid = payload.uuid
    if payload.body is not None:
        pb.body = payload.body
    for i, m in enumerate(payload.metrics):
        try:
            _fill_metric(pb.metrics.add(), m)
        except (ValueError, TypeError, OverflowError, struct.error) as exc:
            label = f"metrics[{i}]" + (f" ({m.name!r})" if m.name else "")
            raise SparkplugPayloadError(f"{label}: {exc}") from None
    try:
        return bytes(pb.SerializeToString())
    except EncodeError as exc:  # pragma: no cover - every field is optional
        raise SparkplugPayloadError(f"cannot serialise: {exc}") from None


def rebirth_payload(timestamp: int) -> Payload:
    """The NCMD payload that asks an edge node to rebirth (``Node Control/Rebirth = true``)."""
    return Payload(
        timestamp=timestamp,
        metrics=(
            Metric(name=REBIRTH_METRIC, timestamp=timestamp, datatype=DataType.BOOLEAN, value=True),
        ),
    )


# ------------------------------------------------------------------------------------------------
# Topics


class MessageType(StrEnum):
    """Sparkplug message types (the third topic level), plus host ``STATE``."""

    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    NDATA = "NDATA"
    DDATA = "DDATA"
    NCMD = "NCMD"
    DCMD = "DCMD"
    STATE = "STATE"


_DEVICE_TYPES = {MessageType.DBIRTH, MessageType.DDEATH, MessageType.DDATA, MessageType.DCMD}


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    """A parsed spBv1.0 topic. For STATE, only ``host_id`` is set and ``group`` is ``""``."""

    group: str
    message_type: MessageType
    edge_node: str = ""
    device: str | None = None
    host_id: str | None = None

    def __str__(self) -> str:
        if self.message_type is MessageType.STATE:
            return f"{NAMESPACE}/STATE/{self.host_id}"
        tail = f"/{self.device}" if self.device is not None else ""
        return f"{NAMESPACE}/{self.group}/{self.message_type.value}/{self.edge_node}{tail}"

    @property
    def node_key(self) -> tuple[str, str]:
        """(group, edge node): the key of the node's session."""
        return (self.group, self.edge_node)


def _check_spb_id(kind: str, value: str, topic: str) -> None:
    if not value:
        raise SparkplugTopicError(f"{kind} is empty", topic)
    for bad in ("+", "#"):
        if bad in value:
            raise SparkplugTopicError(f"{kind} {value!r} contains the wildcard {bad!r}", topic)


def parse_sparkplug_topic(topic: str) -> SparkplugTopic:
    """Parse ``spBv1.0/<group>/<type>/<edge_node>[/<device>]``, ``spBv1.0/STATE/<host_id>``
    (Sparkplug 3.0) or ``STATE/<host_id>`` (2.2)."""
    levels = topic.split("/")
    if len(levels) == 2 and levels[0] == "STATE":
        # Sparkplug B 2.2 hosts published their state on ``STATE/<host_id>``, outside spBv1.0.
        _check_spb_id("host id", levels[1], topic)
        return SparkplugTopic("", MessageType.STATE, host_id=levels[1])
    if levels[0] != NAMESPACE:
        raise SparkplugTopicError(f"namespace must be {NAMESPACE!r}, got {levels[0]!r}", topic)
    if len(levels) == 3 and levels[1] == "STATE":
        _check_spb_id("host id", levels[2], topic)
        return SparkplugTopic("", MessageType.STATE, host_id=levels[2])
    if len(levels) not in (4, 5):
        raise SparkplugTopicError(
            f"expected 4 or 5 levels (namespace/group/type/node[/device]), got {len(levels)}",
            topic,
        )
    group, kind, node = levels[1], levels[2], levels[3]
    _check_spb_id("group id", group, topic)
    try:
        message_type = MessageType(kind)
    except ValueError:
        message_type = None
    if message_type is None or message_type is MessageType.STATE:
        raise SparkplugTopicError(f"unknown message type {kind!r}", topic)
    _check_spb_id("edge node id", node, topic)
    device: str | None = None
    if message_type in _DEVICE_TYPES:
        if len(levels) != 5:
            raise SparkplugTopicError(f"{kind} needs a device id level", topic)
        device = levels[4]
        _check_spb_id("device id", device, topic)
    elif len(levels) != 4:
        raise SparkplugTopicError(f"{kind} has no device id level", topic)
    return SparkplugTopic(group, message_type, node, device)


def sparkplug_topic(
    group: str, message_type: MessageType | str, edge_node: str, device: str | None = None
) -> str:
    """Build a spBv1.0 topic string (validated by parsing it back)."""
    kind = MessageType(message_type)
    tail = f"/{device}" if device is not None else ""
    text = f"{NAMESPACE}/{group}/{kind.value}/{edge_node}{tail}"
    parse_sparkplug_topic(text)
    return text


@dataclass(frozen=True, slots=True)
class HostState:
    """A primary host's STATE: online or not, and its timestamp (ms) when given."""

    online: bool
    timestamp: int | None = None


def parse_state_payload(data: bytes) -> HostState:
    """Parse a STATE payload: Sparkplug 3.0 JSON ``{"online": bool, "timestamp": ms}``, or the
    older plain ``ONLINE`` / ``OFFLINE``."""
    text = bytes(data).strip()
    if text in (b"ONLINE", b"OFFLINE"):
        return HostState(text == b"ONLINE")
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise SparkplugPayloadError(
            f"STATE payload is neither JSON nor ONLINE/OFFLINE: {exc}"
        ) from None
    if not isinstance(obj, dict) or type(obj.get("online")) is not bool:
        raise SparkplugPayloadError("STATE payload needs a boolean 'online'")
    ts = obj.get("timestamp")
    if ts is not None and type(ts) is not int:
        raise SparkplugPayloadError("STATE 'timestamp' must be an integer (ms)")
    return HostState(obj["online"], ts)


# ------------------------------------------------------------------------------------------------
# Sessions


class VerdictKind(StrEnum):
    """What ingest should do with a message, as judged by :class:`SparkplugSessions`."""

    OK = "ok"  # in order; use it
    GAP = "gap"  # usable, but messages were lost (expected != got): record and request rebirth
    NEEDS_REBIRTH = "needs_rebirth"  # cannot be interpreted (no birth, unknown alias): rebirth
    DEATH = "death"  # the node (NDEATH, matching bdSeq) or device (DDEATH) went offline
    STALE_DEATH = "stale_death"  # an NDEATH whose bdSeq is not the current session's: ignore
    IGNORED = "ignored"  # not an edge-node message (NCMD, DCMD, STATE)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judgement on one message; ``expected``/``got`` are set for gaps."""

    kind: VerdictKind
    expected: int | None = None
    got: int | None = None
    reason: str = ""
    #: Metrics of a DATA message whose alias (or name) the birth did not declare. The message is
    #: still usable (its other metrics are named; a metric sent by a new name is usable too),
    #: but the host should ask for a rebirth.
    unresolved: int = 0

    @property
    def needs_rebirth(self) -> bool:
        """True if the node should be asked to rebirth (gap, uninterpretable message, or metrics
        the birth did not declare)."""
        return self.kind in (VerdictKind.GAP, VerdictKind.NEEDS_REBIRTH) or self.unresolved > 0


_OK = Verdict(VerdictKind.OK)


@dataclass(frozen=True, slots=True)
class ResolvedMetric:
    """A metric with its name and datatype known (from the message or the birth) and its value
    interpreted for that datatype. A member of a template instance is resolved as its own metric
    named ``<instance>/<member>``. ``problem`` says why the value cannot be used (``None`` when
    it can): an undeclared alias, an unknown datatype, a malformed value."""

    name: str
    datatype: DataType | None
    value: Any
    timestamp: int | None
    is_historical: bool
    is_null: bool
    is_transient: bool = False
    properties: dict[str, PropertyValue] | None = None
    problem: str | None = None
    alias: int | None = None


#: The problem of a DATA metric whose alias the birth did not declare.
UNDECLARED = "not declared in the birth"


@dataclass
class _Aliases:
    """A birth's metric table: alias -> (name, datatype, problem) and name -> (datatype,
    problem), where ``problem`` is the birth's unknown datatype code (kept, so that the DATA
    values of that metric are skipped rather than guessed); template definitions by name."""

    by_alias: dict[int, tuple[str, DataType | None, str | None]] = field(default_factory=dict)
    by_name: dict[str, tuple[DataType | None, str | None]] = field(default_factory=dict)
    templates: dict[str, Template] = field(default_factory=dict)

    @classmethod
    def from_birth(cls, metrics: tuple[Metric, ...]) -> _Aliases:
        table = cls()
        unaliased: list[Metric] = []
        for m in metrics:
            if m.name is None:
                continue
            bad = m.problem if m.datatype is None and m.problem is not None else None
            table.by_name[m.name] = (m.datatype, bad)
            if m.alias is not None:
                table.by_alias[m.alias] = (m.name, m.datatype, bad)
            elif not _is_control(m):
                unaliased.append(m)
            if isinstance(m.value, Template) and m.value.is_definition:
                # Instances refer to a definition by its metric name; Ignition names definitions
                # "_types_/<UDT>" and refers to them as "<UDT>".
                table.templates[m.name] = m.value
                if m.name.startswith("_types_/"):
                    table.templates.setdefault(m.name[len("_types_/") :], m.value)
        if table.by_alias and 0 not in table.by_alias and len(unaliased) == 1:
            # Encoders with proto3 semantics leave out an alias of 0: in a birth whose other
            # metrics have aliases, the one data metric without an alias is alias 0.
            name = unaliased[0].name
            assert name is not None
            table.by_alias[0] = (name, *table.by_name[name])
        return table

    def lookup(self, m: Metric) -> tuple[str, DataType | None, str | None] | None:
        if m.name is not None:
            if m.datatype is not None:
                return m.name, m.datatype, None
            dtype, bad = self.by_name.get(m.name, (None, None))
            return m.name, dtype, bad
        # No name and no alias: alias 0 as an encoder with proto3 semantics sends it.
        alias = m.alias if m.alias is not None else 0
        if alias in self.by_alias:
            name, dtype, bad = self.by_alias[alias]
            if m.datatype is not None:
                return name, m.datatype, None
            return name, dtype, bad
        return None


def _is_control(m: Metric) -> bool:
    """bdSeq, Node/Device Control metrics and template definitions: often sent without an
    alias in a birth whose data metrics have one."""
    name = m.name or ""
    return (
        name == BDSEQ_METRIC
        or name.startswith(("Node Control/", "Device Control/"))
        or (isinstance(m.value, Template) and m.value.is_definition)
    )


@dataclass
class _Node:
    bdseq: int | None
    seq: int
    aliases: _Aliases
    devices: dict[str, _Aliases] = field(default_factory=dict)


def _bdseq(payload: Payload) -> int | None:
    for m in payload.metrics:
        if m.name == BDSEQ_METRIC and isinstance(m.value, int) and not isinstance(m.value, bool):
            return m.value
    return None


class SparkplugSessions:
    """Session state of every edge node seen (pure: feed it messages, read verdicts).

    One instance per ingest worker; not thread-safe. Call :meth:`observe` for each message in
    arrival order, then :meth:`resolve` to name the metrics of an accepted message.
    """

    def __init__(self) -> None:
        self._nodes: dict[tuple[str, str], _Node] = {}

    def is_online(self, group: str, edge_node: str, device: str | None = None) -> bool:
        """True if the node (and the device, if given) has a current birth."""
        node = self._nodes.get((group, edge_node))
        if node is None:
            return False
        return device is None or device in node.devices

    def bdseq(self, group: str, edge_node: str) -> int | None:
        """The bdSeq of the node's current session, if it is online and declared one."""
        node = self._nodes.get((group, edge_node))
        return node.bdseq if node is not None else None

    def _check_seq(self, node: _Node, payload: Payload) -> Verdict:
        got = payload.seq
        expected = (node.seq + 1) % 256
        if got is None and expected == 0:
            # Encoders with proto3 semantics (protobuf-net in SparkplugNet, proto3 ports of
            # sparkplug_b.proto) leave out fields holding 0: the seq after 255 arrives absent.
            got = 0
        if got is None or not 0 <= got <= 255:
            return Verdict(VerdictKind.NEEDS_REBIRTH, expected, got, f"bad seq {got!r}")
        node.seq = got
        if got != expected:
            return Verdict(VerdictKind.GAP, expected, got, f"expected seq {expected}, got {got}")
        return _OK

    def observe(self, topic: SparkplugTopic, payload: Payload) -> Verdict:
        """Update the session state with one message and judge it."""
        kind = topic.message_type
        key = topic.node_key
        node = self._nodes.get(key)
        if kind is MessageType.NBIRTH:
            self._nodes[key] = _Node(
                bdseq=_bdseq(payload),
                seq=payload.seq if payload.seq is not None else 0,
                aliases=_Aliases.from_birth(payload.metrics),
            )
            if payload.seq not in (0, None):
                return Verdict(VerdictKind.OK, 0, payload.seq, "NBIRTH seq should be 0")
            return _OK
        if kind is MessageType.NDEATH:
            if node is None:
                return Verdict(VerdictKind.STALE_DEATH, reason="node is not online")
            dead = _bdseq(payload)
            if node.bdseq is not None and dead != node.bdseq:
                return Verdict(
                    VerdictKind.STALE_DEATH,
                    node.bdseq,
                    dead,
                    f"NDEATH bdSeq {dead} does not match the current session's {node.bdseq}",
                )
            del self._nodes[key]
            return Verdict(VerdictKind.DEATH, reason="node offline")
        if kind in (MessageType.NCMD, MessageType.DCMD, MessageType.STATE):
            return Verdict(VerdictKind.IGNORED)
        if node is None:
            return Verdict(VerdictKind.NEEDS_REBIRTH, reason=f"{kind.value} before NBIRTH")
        verdict = self._check_seq(node, payload)
        device = topic.device
        if kind is MessageType.DBIRTH:
            assert device is not None
            node.devices[device] = _Aliases.from_birth(payload.metrics)
            return verdict
        if kind is MessageType.DDEATH:
            assert device is not None
            if node.devices.pop(device, None) is None:
                return Verdict(VerdictKind.STALE_DEATH, reason=f"device {device!r} is not online")
            return Verdict(VerdictKind.DEATH, verdict.expected, verdict.got, "device offline")
        # NDATA / DDATA
        if device is not None and device not in node.devices:
            return Verdict(VerdictKind.NEEDS_REBIRTH, reason=f"DDATA before DBIRTH of {device!r}")
        table = node.aliases if device is None else node.devices[device]
        # A metric the birth did not declare: an unknown alias (its value cannot be named), or
        # a name the birth did not have (usable, its datatype travels with it). Either way the
        # spec's host asks for a rebirth.
        unknown = [
            f"alias {m.alias}" if m.name is None else repr(m.name)
            for m in payload.metrics
            if (m.name is None and table.lookup(m) is None)
            or (m.name is not None and m.name not in table.by_name)
        ]
        if unknown:
            what = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            reason = f"metric {what} {UNDECLARED}"
            if verdict.reason:
                reason = f"{verdict.reason}; {reason}"
            return replace(verdict, reason=reason, unresolved=len(unknown))
        return verdict

    def resolve(self, topic: SparkplugTopic, payload: Payload) -> list[ResolvedMetric]:
        """Name every metric of a message of a born node/device (alias -> name, birth datatype
        applied to raw values), template instances expanded into their members. A metric that
        cannot be named or read is returned with its ``problem`` set; template definitions are
        left out (they describe metrics, they are no values)."""
        node = self._nodes.get(topic.node_key)
        if node is None:
            return []
        table = node.aliases if topic.device is None else node.devices.get(topic.device)
        if table is None:
            return []
        out: list[ResolvedMetric] = []
        for m in payload.metrics:
            found = table.lookup(m)
            if found is None:
                label = f"alias {m.alias}" if m.alias is not None else "a metric without name"
                out.append(_problem(m, f"<{label}>", None, f"{label} {UNDECLARED}"))
                continue
            name, dtype, bad = found
            _resolve(m, name, dtype, bad, (table, node.aliases), out)
        return out


def _problem(m: Metric, name: str, dtype: DataType | None, problem: str) -> ResolvedMetric:
    return ResolvedMetric(name, dtype, None, m.timestamp, m.is_historical, m.is_null,
                          m.is_transient, m.properties, problem, m.alias)  # fmt: skip


def _resolve(
    m: Metric,
    name: str,
    dtype: DataType | None,
    bad: str | None,
    tables: tuple[_Aliases, _Aliases],
    out: list[ResolvedMetric],
) -> None:
    """Append ``m`` (named ``name``, its datatype ``dtype``) to ``out``; a template instance as
    its members, which inherit its timestamp and flags. ``tables`` are the device's (or node's)
    birth table and the node's, where template definitions are looked up (a DBIRTH instance may
    use a definition of the NBIRTH)."""
    timestamp = m.timestamp
    historical, transient = m.is_historical, m.is_transient
    problem = m.problem or bad
    value = m.value
    if problem is None and m.datatype is None and not m.is_null:
        try:
            value = interpret(dtype, value)
        except (ValueError, struct.error) as exc:
            problem, value = str(exc), None
    if problem is None and isinstance(value, Template):
        if value.is_definition:
            return
        ref = value.template_ref or ""
        definition = tables[0].templates.get(ref) or tables[1].templates.get(ref)
        declared = (
            {d.name: d.datatype for d in definition.metrics if d.name is not None}
            if definition is not None
            else {}
        )
        for member in value.metrics:
            if member.name is None:
                out.append(ResolvedMetric(f"{name}/<member without name>", None, None,
                                          timestamp, historical, member.is_null, transient,
                                          member.properties, "template member without a name",
                                          m.alias))  # fmt: skip
                continue
            mdtype = member.datatype if member.datatype is not None else declared.get(member.name)
            inner = replace(member, timestamp=member.timestamp if member.timestamp is not None
                            else timestamp, is_historical=member.is_historical or historical,
                            is_transient=member.is_transient or transient)  # fmt: skip
            _resolve(inner, f"{name}/{member.name}", mdtype, None, tables, out)
        return
    out.append(ResolvedMetric(name, dtype, None if problem else value, timestamp, historical,
                              m.is_null, transient, m.properties, problem, m.alias))  # fmt: skip


def with_datatype(metric: Metric, datatype: DataType) -> Metric:
    """A copy of ``metric`` with ``datatype`` set and its raw value interpreted for it."""
    return replace(metric, datatype=datatype, value=interpret(datatype, metric.value))
