"""Typed payload models of the Arbor v1 MQTT contract (pydantic v2).

Every model is frozen and strict: no type coercion (``"1"`` is not an int, ``true`` is not a
number), and ``extra="forbid"``: an unknown field is an error, not silently dropped, because a
misspelt field (``"sampels"``) from a producer must surface at once. The contract grows only by a
new version (``v`` and the topic's ``arbor/v2``), so v1 consumers never see fields they do not
know.

Producers (gateway, simulators) build these models and :func:`protocol.codec.encode` them;
consumers (ingest, alerts, api) get them from :mod:`protocol.codec`. The JSON Schemas in
``docs/schemas`` are generated from these classes.
"""

from __future__ import annotations

__all__ = [
    "CONTROLLER_KINDS",
    "MAX_EVENTS",
    "MAX_SAMPLES",
    "MAX_SIGNALS_PER_SAMPLE",
    "MAX_STRING_LENGTH",
    "Command",
    "Condition",
    "ConditionEvent",
    "Controller",
    "ControllerKind",
    "Event",
    "EventItem",
    "ProgramArgs",
    "ProgramCommand",
    "RebirthArgs",
    "RebirthCommand",
    "Reply",
    "ReplyError",
    "Sample",
    "Scalar",
    "Status",
    "Telemetry",
    "ValueEvent",
]

import base64
import binascii
import math
import typing
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    PlainSerializer,
    PlainValidator,
    Tag,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from protocol.catalogue import (
    CATALOGUE,
    CONDITION_SIGNAL,
    SIGNAL_NAME_PATTERN,
    VENDOR_SIGNAL_PATTERN,
    Dtype,
    Signal,
    SignalChannel,
    is_vendor_signal,
)
from protocol.timestamps import check_datetime, format_timestamp, parse_timestamp

#: Bounds that keep one message well inside the default 256 KiB payload limit.
MAX_SAMPLES = 1000
MAX_EVENTS = 1000
MAX_SIGNALS_PER_SAMPLE = 256
MAX_STRING_LENGTH = 1024

#: Error type of value checks; the codec appends ``ctx["field"]`` to the error's path.
VALUE_ERROR_TYPE = "arbor_value"

# --- field types -------------------------------------------------------------------------------


def _validate_ts(value: Any) -> datetime:
    if isinstance(value, str):
        return parse_timestamp(value)
    if isinstance(value, datetime):
        return check_datetime(value)
    raise ValueError(f"expected a timestamp string, got {describe(value)}")


Timestamp = Annotated[
    datetime,
    PlainValidator(_validate_ts),
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]00:00)$",
            "description": "UTC ISO-8601, Z; 0..9 fraction digits, µs kept; written with ms or µs.",
            "examples": ["2024-05-01T12:00:00.123Z"],
        }
    ),
]
"""An aware UTC datetime; on the wire an ISO-8601 string ending in ``Z``."""


def _check_version(value: Any) -> Any:
    if type(value) is not int:
        raise ValueError(f"expected the integer 1, got {describe(value)}")
    if value != 1:
        raise ValueError(f"unsupported message version {value} (this library speaks v1)")
    return value


Version = Annotated[Literal[1], BeforeValidator(_check_version)]

SessionId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$",
        description="Producer session id, new at every birth (e.g. a ULID or UUID).",
    ),
]
RequestId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$",
        description="Request id chosen by the sender of a command; the reply repeats it.",
    ),
]
Seq = Annotated[
    int,
    Field(ge=0, le=2**63 - 1, description="Rises by one per message within a session, from 0."),
]
ShortText = Annotated[str, Field(min_length=1, max_length=64)]
Text = Annotated[str, Field(max_length=MAX_STRING_LENGTH)]

#: A signal value on the wire: JSON number, string, boolean or null (null = unavailable).
Scalar = float | int | str | bool | None

ControllerKind = Literal[
    "five_axis_mc",
    "vertical_mc",
    "horizontal_mc",
    "lathe",
    "turn_mill",
    "grinder",
    "edm",
    "laser",
    "other",
]
CONTROLLER_KINDS: tuple[str, ...] = typing.get_args(ControllerKind)


class _Model(BaseModel):
    model_config = ConfigDict(
        strict=True, extra="forbid", frozen=True, allow_inf_nan=False, validate_default=False
    )


# --- value checks against the catalogue -------------------------------------------------------


def describe(value: Any) -> str:
    """Describe a JSON value for an error message: ``string 'abc'``, ``number 1.5``, ``object``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _value_error(field: str, detail: str) -> PydanticCustomError:
    return PydanticCustomError(VALUE_ERROR_TYPE, "{detail}", {"field": field, "detail": detail})


def check_value(signal: Signal, value: Any) -> str | None:
    """Why ``value`` is not valid for ``signal`` (``None`` if it is). ``null`` is always valid."""
    if value is None:
        return None
    dtype = signal.dtype
    if dtype is Dtype.FLOAT:
        if type(value) is float:
            return None if math.isfinite(value) else f"expected a finite number, got {value!r}"
        if type(value) is int:
            return None
        return f"expected number, got {describe(value)}"
    if dtype is Dtype.INT:
        return None if type(value) is int else f"expected integer, got {describe(value)}"
    if dtype is Dtype.BOOL:
        return None if type(value) is bool else f"expected boolean, got {describe(value)}"
    if type(value) is not str:
        return f"expected string, got {describe(value)}"
    if dtype is Dtype.ENUM:
        assert signal.values is not None
        if value not in signal.values:
            return f"{value!r} is not one of {', '.join(signal.values)}"
        return None
    if len(value) > MAX_STRING_LENGTH:
        return f"string is {len(value)} characters long (at most {MAX_STRING_LENGTH})"
    return None


def _check_vendor_value(value: Any) -> str | None:
    if value is None or type(value) in (int, str, bool):
        if type(value) is str and len(value) > MAX_STRING_LENGTH:
            return f"string is {len(value)} characters long (at most {MAX_STRING_LENGTH})"
        return None
    if type(value) is float:
        return None if math.isfinite(value) else f"expected a finite number, got {value!r}"
    return f"expected number, string, boolean or null, got {describe(value)}"


def _unknown_signal(name: str, channel: SignalChannel) -> str:
    signal = CATALOGUE.get(name)
    if signal is not None:
        return (
            f"{name!r} belongs on the {signal.channel.value} channel; it cannot be sent on the "
            f"{channel.value} channel"
        )
    return (
        f"unknown signal {name!r}: not in the catalogue and not a vendor signal x_<vendor>_<name>"
    )


# Precomputed for the hot path: names of telemetry signals by what they accept.
_TELEMETRY_FLOAT = frozenset(
    s.name
    for s in CATALOGUE.values()
    if s.channel is SignalChannel.TELEMETRY and s.dtype is Dtype.FLOAT
)
_TELEMETRY_INT = frozenset(
    s.name
    for s in CATALOGUE.values()
    if s.channel is SignalChannel.TELEMETRY and s.dtype is Dtype.INT
)


def _check_telemetry_values(values: dict[str, Any]) -> dict[str, Any]:
    if not values:
        raise PydanticCustomError("arbor_empty", "a sample needs at least one value")
    if len(values) > MAX_SIGNALS_PER_SAMPLE:
        raise PydanticCustomError(
            "arbor_too_many",
            "a sample has {n} values (at most {limit})",
            {"n": len(values), "limit": MAX_SIGNALS_PER_SAMPLE},
        )
    floats = _TELEMETRY_FLOAT
    isfinite = math.isfinite
    for name, value in values.items():
        # Fast path (almost every value): a finite number of a float signal, an int of an int one.
        kind = type(value)
        if kind is float:
            if name in floats and isfinite(value):
                continue
        elif kind is int and (name in floats or name in _TELEMETRY_INT):
            continue
        problem = _telemetry_problem(name, value)
        if problem is not None:
            raise _value_error(name, problem)
    return values


def _telemetry_problem(name: str, value: Any) -> str | None:
    signal = CATALOGUE.get(name)
    if signal is not None and signal.channel is SignalChannel.TELEMETRY:
        return check_value(signal, value)
    if is_vendor_signal(name):
        return _check_vendor_value(value)
    return _unknown_signal(name, SignalChannel.TELEMETRY)


def _telemetry_values_schema() -> dict[str, Any]:
    props = {
        s.name: _signal_schema(s)
        for s in CATALOGUE.values()
        if s.channel is SignalChannel.TELEMETRY
    }
    return {
        "type": "object",
        "minProperties": 1,
        "maxProperties": MAX_SIGNALS_PER_SAMPLE,
        "properties": props,
        "patternProperties": {f"^{VENDOR_SIGNAL_PATTERN}$": _VENDOR_VALUE_SCHEMA},
        "additionalProperties": False,
        "description": "Signal name -> value; catalogue telemetry signals or x_<vendor>_<name>.",
    }


_VENDOR_VALUE_SCHEMA: dict[str, Any] = {
    "type": ["number", "string", "boolean", "null"],
    "maxLength": MAX_STRING_LENGTH,
}


def _signal_schema(signal: Signal) -> dict[str, Any]:
    schema: dict[str, Any]
    if signal.dtype is Dtype.FLOAT:
        schema = {"type": ["number", "null"]}
    elif signal.dtype is Dtype.INT:
        schema = {"type": ["integer", "null"]}
    elif signal.dtype is Dtype.BOOL:
        schema = {"type": ["boolean", "null"]}
    elif signal.dtype is Dtype.ENUM:
        assert signal.values is not None
        schema = {"enum": [*signal.values, None]}
    else:
        schema = {"type": ["string", "null"], "maxLength": MAX_STRING_LENGTH}
    unit = f" [{signal.unit}]" if signal.unit else ""
    schema["description"] = f"{signal.description}{unit}"
    return schema


# --- status ------------------------------------------------------------------------------------


class Controller(_Model):
    """The controller behind a machine, as announced in its status."""

    vendor: ShortText = Field(examples=["i5"])
    model: ShortText = Field(examples=["M8"])
    kind: ControllerKind = Field(description="Machine kind.")
    firmware: Annotated[str, Field(max_length=64)] | None = None


class Status(_Model):
    """``status`` (retained): the birth (``online: true``) or, as the Last Will, ``online: false``.

    The Last Will is composed at connect time, so its ``ts`` is the connect time, not the death
    time; consumers use their receive time for the offline transition.
    """

    v: Version = 1
    online: bool
    ts: Timestamp
    session: SessionId
    controller: Controller
    reason: Annotated[str, Field(max_length=200)] | None = Field(
        default=None, description="Why the status changed, e.g. connection_lost, shutdown."
    )


# --- telemetry ---------------------------------------------------------------------------------


class Sample(_Model):
    """The values of several signals at one instant."""

    ts: Timestamp
    values: Annotated[
        dict[str, Any],
        AfterValidator(_check_telemetry_values),
        WithJsonSchema(_telemetry_values_schema()),
    ]


class Telemetry(_Model):
    """``telemetry``: a batch of samples, in time order, from one session."""

    v: Version = 1
    session: SessionId
    seq: Seq
    historical: bool = Field(
        default=False, description="True when replayed from an edge buffer after an outage."
    )
    samples: Annotated[list[Sample], Field(min_length=1, max_length=MAX_SAMPLES)]


# --- events ------------------------------------------------------------------------------------


class ValueEvent(_Model):
    """A change of an event signal (execution, program, part_count, ...); ``null`` = unavailable."""

    ts: Timestamp
    signal: Annotated[
        str,
        Field(
            pattern=f"^({SIGNAL_NAME_PATTERN})$", json_schema_extra={"not": {"const": "condition"}}
        ),
    ]
    value: Scalar

    @model_validator(mode="after")
    def _check_signal_value(self) -> ValueEvent:
        signal = CATALOGUE.get(self.signal)
        if signal is not None and signal.channel is SignalChannel.EVENT:
            problem = check_value(signal, self.value)
            if problem is not None:
                raise _value_error("value", problem)
        elif is_vendor_signal(self.signal):
            problem = _check_vendor_value(self.value)
            if problem is not None:
                raise _value_error("value", problem)
        else:
            raise _value_error("signal", _unknown_signal(self.signal, SignalChannel.EVENT))
        return self


class Condition(_Model):
    """An alarm condition (MTConnect CONDITION).

    ``level`` NORMAL with an empty ``code`` clears every active condition of ``component``;
    with a code it clears that one. Several conditions may be active at once, told apart by code.
    """

    component: ShortText = Field(examples=["spindle", "x_axis", "controller"])
    level: Literal["NORMAL", "WARNING", "FAULT", "UNAVAILABLE"]
    code: Annotated[str, Field(max_length=64)] = Field(description="Native alarm code.")
    native_severity: Annotated[str, Field(max_length=64)] | None = None
    qualifier: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="MTConnect qualifier, e.g. HIGH or LOW."
    )
    text: Text = ""


class ConditionEvent(_Model):
    """A condition (alarm) change; ``signal`` is always ``"condition"``."""

    ts: Timestamp
    signal: Literal["condition"]
    condition: Condition


def _event_tag(value: Any) -> str:
    signal = value.get("signal") if isinstance(value, dict) else getattr(value, "signal", None)
    return "ConditionEvent" if signal == CONDITION_SIGNAL else "ValueEvent"


EventItem = Annotated[
    Annotated[ValueEvent, Tag("ValueEvent")] | Annotated[ConditionEvent, Tag("ConditionEvent")],
    Discriminator(_event_tag),
]
"""One entry of an event message: a :class:`ValueEvent` or a :class:`ConditionEvent`."""


class Event(_Model):
    """``event``: signal changes and conditions, in time order, from one session."""

    v: Version = 1
    session: SessionId
    seq: Seq
    historical: bool = Field(
        default=False, description="True when replayed from an edge buffer after an outage."
    )
    events: Annotated[list[EventItem], Field(min_length=1, max_length=MAX_EVENTS)]


# --- commands and replies ----------------------------------------------------------------------


class ProgramArgs(_Model):
    """Arguments of ``cmd/program``: one chunk of an NC program download.

    A program of ``size`` bytes is sent as ``chunk_count`` messages, chunk ``chunk_index``
    (0-based) carrying its bytes base64-encoded (standard alphabet, padded) in ``data``. Every
    chunk repeats ``name``, ``version``, ``sha256`` (of the whole program) and ``size``, so the
    receiver can reassemble by (name, version, sha256) and check the digest; see
    :func:`protocol.program.split_program` and :func:`protocol.program.assemble_program`.
    """

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")] = Field(
        examples=["O1234", "bracket_op10.nc"]
    )
    version: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="SHA-256 of the whole program, lower-case hex."
    )
    size: Annotated[int, Field(ge=0, le=64 * 1024 * 1024)] = Field(
        description="Size of the whole program in bytes."
    )
    chunk_index: Annotated[int, Field(ge=0)]
    chunk_count: Annotated[int, Field(ge=1, le=65536)]
    data: Annotated[str, Field(max_length=200_000)] = Field(
        description="This chunk's bytes, base64 (RFC 4648, padded)."
    )

    @model_validator(mode="after")
    def _check_chunk(self) -> ProgramArgs:
        if self.chunk_index >= self.chunk_count:
            raise _value_error(
                "chunk_index",
                f"chunk_index {self.chunk_index} is not below chunk_count {self.chunk_count}",
            )
        try:
            base64.b64decode(self.data, validate=True)
        except (binascii.Error, ValueError):
            raise _value_error("data", "not valid base64 (RFC 4648, padded)") from None
        return self

    @property
    def chunk(self) -> bytes:
        """The decoded bytes of this chunk."""
        return base64.b64decode(self.data, validate=True)


class RebirthArgs(_Model):
    """Arguments of ``cmd/rebirth``: ask the machine to publish its status and full state again."""

    reason: Annotated[str, Field(max_length=200)] | None = None


class _CommandBase(_Model):
    v: Version = 1
    id: RequestId
    ts: Timestamp


class Command(_CommandBase):
    """``cmd/{name}`` envelope with free-form ``args`` (commands without a typed model)."""

    args: dict[str, JsonValue] = Field(default_factory=dict)


class ProgramCommand(_CommandBase):
    """``cmd/program``: one chunk of an NC program download."""

    args: ProgramArgs


class RebirthCommand(_CommandBase):
    """``cmd/rebirth``: publish status and the current value of every event signal again."""

    args: RebirthArgs = Field(default_factory=RebirthArgs)


class ReplyError(_Model):
    """Why a command failed. ``code`` is stable and machine-readable; ``message`` is for people.

    Codes in use: ``bad_request``, ``unknown_command``, ``checksum_mismatch``, ``busy``,
    ``rejected`` (the controller refused, e.g. not in EDIT mode), ``storage_full``, ``internal``.
    """

    code: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    message: Text = ""


class Reply(_Model):
    """``reply/{name}``: the answer to the command with the same ``id``.

    ``ok`` true means done, with an optional ``result``; false carries ``error``.
    """

    v: Version = 1
    id: RequestId
    ts: Timestamp
    ok: bool
    error: ReplyError | None = None
    result: dict[str, JsonValue] | None = None

    @model_validator(mode="after")
    def _check_error(self) -> Reply:
        if self.ok and self.error is not None:
            raise _value_error("error", "must be null or absent when ok is true")
        if not self.ok and self.error is None:
            raise _value_error("error", "is required when ok is false")
        return self
