"""A validated fast path for the common telemetry shape, straight to `sample` rows.

``protocol.decode_telemetry`` builds a pydantic model per message and calls back into Python
for every sample's values (~2-3 µs per value here); ingest then walks the model again to build
the wide rows. Almost every message ingest sees has one shape: catalogue telemetry signals with
finite numbers (or null). :func:`fast_telemetry` decodes exactly that shape with ``msgspec``
into typed structs whose fields are the `sample` columns, so the types, the unknown names, the
bounds and the timestamp shape are all checked in C while the JSON is parsed, and a row is one
C-level ``astuple`` (~0.1 µs per value in all, a sixth of the ``orjson`` + Python walk before).

It only ever *accepts* a payload that ``decode_telemetry`` accepts, with the same rows; anything
it is not sure of (vendor signals, strings, booleans, a bad field, a payload too large, not
JSON ...) returns ``None`` and the caller runs the protocol's decoder, which decides and words
the error. So acceptance rules and error messages stay the protocol's by construction;
``tests/ingest/test_fast.py`` checks the equivalence with hypothesis.

Rows carry NaN for a signal the sample does not have (msgspec's default for an absent field)
and ``None`` for an explicit null; both are stored as NULL (``ingest.copybinary``), and NaN can
never be a value: JSON has no NaN and the protocol refuses non-finite numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from ingest.records import WIDE_SIGNALS, WideRow
from protocol import CATALOGUE, MAX_SAMPLES, MAX_SIGNALS_PER_SAMPLE, Dtype, SignalChannel

__all__ = ["ABSENT", "FastTelemetry", "fast_telemetry"]

# The fast path's columns must all be float telemetry signals (an int is a valid value for them,
# converted exactly as float(); a bool or a string is not, and makes msgspec refuse).
assert all(
    name in CATALOGUE
    and CATALOGUE[name].channel is SignalChannel.TELEMETRY
    and CATALOGUE[name].dtype is Dtype.FLOAT
    for name in WIDE_SIGNALS
), "a non-float sample column needs its own type in _Values"
assert len(WIDE_SIGNALS) <= MAX_SIGNALS_PER_SAMPLE

#: What a row holds for a signal the sample does not carry (one object: counted by identity).
ABSENT = float("nan")
_SEQ_MAX = 2**63 - 1
# protocol.models.SessionId's pattern; msgspec searches, so both ends are anchored (\Z: a
# trailing newline is not the end).
_SESSION = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z"
# The timestamps producers send (``Z``, up to µs, ASCII digits): a subset of what
# ``protocol.timestamps.parse_timestamp`` accepts, read by the C parser with the same result.
# Anything else (offsets, nanoseconds, other digits) goes the slow way.
_TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z\Z"

_Values = msgspec.defstruct(
    "_Values",
    [(name, float | None, ABSENT) for name in WIDE_SIGNALS],
    forbid_unknown_fields=True,
)


class _Sample(msgspec.Struct, forbid_unknown_fields=True):
    ts: Annotated[str, msgspec.Meta(pattern=_TIMESTAMP)]
    values: _Values  # type: ignore[valid-type]


class _Telemetry(msgspec.Struct, forbid_unknown_fields=True):
    v: Literal[1]
    session: Annotated[str, msgspec.Meta(pattern=_SESSION)]
    seq: Annotated[int, msgspec.Meta(ge=0, le=_SEQ_MAX)]
    samples: Annotated[list[_Sample], msgspec.Meta(min_length=1, max_length=MAX_SAMPLES)]
    historical: bool = False


_decode = msgspec.json.Decoder(_Telemetry).decode
_astuple = msgspec.structs.astuple
_from_iso = datetime.fromisoformat
_N_COLUMNS = len(WIDE_SIGNALS)


@dataclass(slots=True)
class FastTelemetry:
    """A valid telemetry message as `sample` rows (``(ts, value per WIDE_SIGNALS column...)``)."""

    session: str
    seq: int
    historical: bool
    rows: list[WideRow]
    first: datetime  # the first sample's timestamp (the ledger key's)
    lo: datetime  # earliest and latest sample timestamps (the accepted time range check)
    hi: datetime
    n_values: int


def fast_telemetry(payload: bytes, max_bytes: int) -> FastTelemetry | None:
    """The rows of ``payload`` if it is valid telemetry of the common shape, else ``None``
    (which says nothing about validity: run ``protocol.decode_telemetry`` to know)."""
    if len(payload) > max_bytes:
        return None
    try:
        msg = _decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    rows: list[WideRow] = []
    n = 0
    absent = ABSENT
    try:
        for sample in msg.samples:
            values: tuple[Any, ...] = _astuple(sample.values)
            present = _N_COLUMNS - values.count(absent)
            if not present:  # "values": {} (the protocol refuses an empty sample)
                return None
            n += present
            rows.append((_from_iso(sample.ts), *values))
    except ValueError:  # 2024-02-30 and the like: the slow path words the error
        return None
    stamps = [r[0] for r in rows]
    return FastTelemetry(
        msg.session, msg.seq, msg.historical, rows, stamps[0], min(stamps), max(stamps), n
    )
