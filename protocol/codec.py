"""The v1 JSON codec (orjson): models to bytes and back, with precise errors.

``decode_*`` functions take the raw MQTT payload and return a validated model or raise
:class:`~protocol.errors.PayloadError` whose message names each offending field by path, e.g.
``samples[3].values.spindle_speed: expected number, got string 'abc'``. Nothing else escapes them:
bad UTF-8, bad JSON, NaN/Infinity (not JSON), a non-object, the wrong version, a payload over
``max_bytes`` (:class:`~protocol.errors.PayloadTooLargeError`).

:func:`decode` dispatches on the topic's channel.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "Message",
    "decode",
    "decode_command",
    "decode_event",
    "decode_reply",
    "decode_status",
    "decode_telemetry",
    "encode",
]

import re
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from protocol.errors import FieldIssue, PayloadError, PayloadTooLargeError, TopicError
from protocol.models import (
    VALUE_ERROR_TYPE,
    Command,
    Event,
    ProgramCommand,
    RebirthCommand,
    Reply,
    Status,
    Telemetry,
    describe,
)
from protocol.topics import Channel, Topic, parse_topic

DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024

#: Any decoded v1 message.
Message = Status | Telemetry | Event | Command | ProgramCommand | RebirthCommand | Reply

#: Commands with a typed model; other command names decode as the generic :class:`Command`.
COMMAND_MODELS: dict[str, type[Command] | type[ProgramCommand] | type[RebirthCommand]] = {
    "program": ProgramCommand,
    "rebirth": RebirthCommand,
}

M = TypeVar("M", bound=BaseModel)

# Union tags that pydantic puts in error paths; they are not fields, so they are dropped.
_TAGS = frozenset({"ValueEvent", "ConditionEvent"})


def encode(model: BaseModel) -> bytes:
    """Serialise a model to compact JSON bytes (timestamps as ``...Z`` strings).

    Raises :class:`~protocol.errors.PayloadError` if a free-form field (``args``, ``result``)
    holds something JSON cannot carry, e.g. an integer beyond 64 bits.
    """
    try:
        return orjson.dumps(model.model_dump(mode="json"))
    except orjson.JSONEncodeError as exc:
        raise PayloadError(f"cannot encode {type(model).__name__}: {exc}") from None


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _path(loc: tuple[int | str, ...]) -> str:
    """``samples[3].values.spindle_speed``; keys that are not plain names are quoted:
    ``args["a b"]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _TAGS:
            continue
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{orjson.dumps(part).decode()}]"
    return out


_MESSAGES = {
    "missing": "field required",
    "extra_forbidden": "unknown field (not part of the v1 contract)",
}


def _issues(exc: ValidationError) -> list[FieldIssue]:
    issues: list[FieldIssue] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        ctx = err.get("ctx") or {}
        if kind == VALUE_ERROR_TYPE:
            loc = (*loc, str(ctx["field"]))
            message = str(ctx["detail"])
        elif kind in _MESSAGES:
            message = _MESSAGES[kind]
        elif kind == "value_error":
            message = err["msg"].removeprefix("Value error, ")
        elif kind.startswith("arbor_"):
            message = err["msg"]
        else:
            message = f"{err['msg'][:1].lower()}{err['msg'][1:]}, got {describe(err['input'])}"
        issues.append(FieldIssue(_path(loc), message))
    return issues


# A JSON ``\u0000`` escape that is not itself escaped (an odd run of backslashes before ``u``).
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


_NUL_MESSAGE = "strings must not contain NUL (\\u0000): it cannot be stored"


def _nul_path(node: Any, path: str = "") -> str | None:
    """The path of the first string (value or key) holding U+0000, as FieldIssue paths read."""
    if isinstance(node, str):
        return path if "\x00" in node else None
    if isinstance(node, list):
        for i, item in enumerate(node):
            found = _nul_path(item, f"{path}[{i}]")
            if found is not None:
                return found
    elif isinstance(node, dict):
        for key, value in node.items():
            shown = key.replace("\x00", "\\u0000")
            here = f"{path}.{shown}" if path else shown
            if "\x00" in key:
                return here
            found = _nul_path(value, here)
            if found is not None:
                return found
    return None


def _load(data: bytes | bytearray | memoryview | str, max_bytes: int) -> dict[str, Any]:
    size = len(data)
    if size > max_bytes:
        raise PayloadTooLargeError(size, max_bytes)
    raw = data.encode() if isinstance(data, str) else bytes(data)
    # PostgreSQL text and jsonb cannot hold U+0000, so a message carrying one could never be
    # stored whole: refuse it here, with its reason, instead of failing at the database. Raw NUL
    # bytes are not valid inside JSON strings and orjson refuses them already.
    nul = b"\\u0000" in raw and _NUL_ESCAPE.search(raw) is not None
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"not valid JSON: {exc}") from None
    if nul:
        try:
            where = _nul_path(obj)
        except RecursionError:  # orjson allows deeper nesting than Python's default stack
            where = None
        raise PayloadError([FieldIssue(where or "(payload)", _NUL_MESSAGE)])
    if not isinstance(obj, dict):
        raise PayloadError(f"payload must be a JSON object, got {describe(obj)}")
    if "v" not in obj:
        raise PayloadError([FieldIssue("v", "field required (the message version, 1)")])
    version = obj["v"]
    if type(version) is not int or version != 1:
        # A different version is a different contract: report only that.
        problem = (
            f"unsupported message version {version} (this library speaks v1)"
            if type(version) is int
            else f"expected the integer 1, got {describe(version)}"
        )
        raise PayloadError([FieldIssue("v", problem)])
    return obj


def _validate(model: type[M], obj: dict[str, Any]) -> M:
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise PayloadError(_issues(exc)) from None
    except RecursionError:
        raise PayloadError("payload is nested too deeply") from None


def decode_status(data: bytes, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Status:
    """Decode a ``status`` payload (birth or Last Will)."""
    return _validate(Status, _load(data, max_bytes))


def decode_telemetry(data: bytes, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Telemetry:
    """Decode a ``telemetry`` payload; values are checked against the catalogue."""
    return _validate(Telemetry, _load(data, max_bytes))


def decode_event(data: bytes, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Event:
    """Decode an ``event`` payload; enum values are checked against the MTConnect vocabulary."""
    return _validate(Event, _load(data, max_bytes))


def decode_command(
    data: bytes, name: str | None = None, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> Command | ProgramCommand | RebirthCommand:
    """Decode a ``cmd/{name}`` payload: typed for ``program`` and ``rebirth``, generic otherwise."""
    model = COMMAND_MODELS.get(name, Command) if name is not None else Command
    return _validate(model, _load(data, max_bytes))


def decode_reply(data: bytes, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Reply:
    """Decode a ``reply/{name}`` payload."""
    return _validate(Reply, _load(data, max_bytes))


def decode(
    topic: str | Topic, data: bytes, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> Message:
    """Decode ``data`` as the message its topic's channel carries.

    Raises :class:`~protocol.errors.TopicError` for a bad topic (including the alerts topic,
    whose payload this codec does not define) and :class:`~protocol.errors.PayloadError` for a
    bad payload.
    """
    parsed = topic if isinstance(topic, Topic) else parse_topic(topic)
    channel = parsed.channel
    if channel is Channel.TELEMETRY:
        return decode_telemetry(data, max_bytes=max_bytes)
    if channel is Channel.EVENT:
        return decode_event(data, max_bytes=max_bytes)
    if channel is Channel.STATUS:
        return decode_status(data, max_bytes=max_bytes)
    if channel is Channel.CMD:
        return decode_command(data, parsed.command, max_bytes=max_bytes)
    if channel is Channel.REPLY:
        return decode_reply(data, max_bytes=max_bytes)
    raise TopicError(f"no v1 payload model for channel {channel.value!r}", str(parsed))
