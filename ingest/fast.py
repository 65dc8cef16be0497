"""A validated fast path for the common telemetry shape, straight to `sample` rows.

``protocol.decode_telemetry`` builds a pydantic model per message and calls back into Python
for every sample's values (~2-3 µs per value here); ingest then walks the model again to build
the wide rows. Almost every message ingest sees has one shape: catalogue telemetry signals with
finite numbers (or null). :func:`fast_telemetry` checks exactly that shape on the ``orjson``
objects and builds the rows in the same pass (~0.3 µs per value).

It only ever *accepts* a payload that ``decode_telemetry`` accepts, with the same rows; anything
it is not sure of (vendor signals, strings, booleans, an int signal, a bad field, a payload too
large, not JSON ...) returns ``None`` and the caller runs the protocol's decoder, which decides
and words the error. So acceptance rules and error messages stay the protocol's by construction;
``tests/ingest/test_fast.py`` checks the equivalence with hypothesis.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

import orjson

from ingest.records import WIDE_SIGNALS, WideRow
from protocol import CATALOGUE, MAX_SAMPLES, MAX_SIGNALS_PER_SAMPLE, Dtype, SignalChannel

__all__ = ["FastTelemetry", "fast_telemetry"]

#: Catalogue telemetry signals of type float that have a `sample` column: the only names the
#: fast path accepts (an int is a valid value for them, a bool or a string is not).
_FLOAT_WIDE = frozenset(
    name
    for name in WIDE_SIGNALS
    if name in CATALOGUE
    and CATALOGUE[name].channel is SignalChannel.TELEMETRY
    and CATALOGUE[name].dtype is Dtype.FLOAT
)
_TOP_KEYS = frozenset({"v", "session", "seq", "historical", "samples"})
_REQUIRED = frozenset({"v", "session", "seq", "samples"})
_SAMPLE_KEYS = frozenset({"ts", "values"})
_NUMBERS = frozenset({float, int})
_NUMBERS_OR_NULL = frozenset({float, int, type(None)})
# protocol.models.SessionId's pattern (pydantic's Rust regex: ``$`` is the end of the text).
_SESSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_SEQ_MAX = 2**63 - 1
# A row is built by one C-level lookup of every column in the sample's values laid over nulls.
_NULLS: dict[str, Any] = dict.fromkeys(WIDE_SIGNALS)
_ROW = itemgetter("\0ts", *WIDE_SIGNALS)
# The timestamps producers send (``Z``, up to µs, ASCII digits): a subset of what
# ``protocol.timestamps.parse_timestamp`` accepts, read by the C parser with the same result at
# a third of the cost. Anything else (offsets, nanoseconds, other digits) goes the slow way.
_TS_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z", re.ASCII)
_from_iso = datetime.fromisoformat


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


class _Sessions:
    """Session ids already seen valid (they repeat for every message of a session)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._ok: set[str] = set()
        self._limit = limit

    def valid(self, session: Any) -> bool:
        if type(session) is not str:
            return False
        if session in self._ok:
            return True
        if _SESSION_RE.fullmatch(session) is None:
            return False
        if len(self._ok) >= self._limit:
            self._ok.clear()
        self._ok.add(session)
        return True


_sessions = _Sessions()


def fast_telemetry(payload: bytes, max_bytes: int) -> FastTelemetry | None:
    """The rows of ``payload`` if it is valid telemetry of the common shape, else ``None``
    (which says nothing about validity: run ``protocol.decode_telemetry`` to know)."""
    if len(payload) > max_bytes:
        return None
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or not (_REQUIRED <= obj.keys() <= _TOP_KEYS):
        return None
    v = obj["v"]
    seq = obj["seq"]
    samples = obj["samples"]
    historical = obj.get("historical", False)
    if (
        type(v) is not int
        or v != 1
        or type(seq) is not int
        or not 0 <= seq <= _SEQ_MAX
        or type(historical) is not bool
        or type(samples) is not list
        or not 0 < len(samples) <= MAX_SAMPLES
        or not _sessions.valid(obj["session"])
    ):
        return None
    rows: list[WideRow] = []
    n = 0
    nulls = _NULLS
    row_of = _ROW
    wide = _FLOAT_WIDE
    numbers = _NUMBERS
    ts_shape = _TS_SHAPE.fullmatch
    for sample in samples:
        if type(sample) is not dict or sample.keys() != _SAMPLE_KEYS:
            return None
        values = sample["values"]
        text = sample["ts"]
        if (
            type(values) is not dict
            or not 0 < len(values) <= MAX_SIGNALS_PER_SAMPLE
            or not values.keys() <= wide
            or type(text) is not str
        ):
            return None
        kinds = set(map(type, values.values()))
        if kinds <= numbers:
            # orjson never yields NaN or infinity; the check stays in case that ever changes
            # (a sum of finite numbers that overflows only sends the message the slow way).
            if not math.isfinite(sum(values.values())):
                return None
        elif kinds <= _NUMBERS_OR_NULL:
            if not math.isfinite(sum(x for x in values.values() if x is not None)):
                return None
        else:
            return None
        if ts_shape(text) is None:
            return None
        try:
            ts = _from_iso(text)
        except ValueError:  # 2024-02-30 and the like: the slow path words the error
            return None
        merged = {**nulls, **values}
        merged["\0ts"] = ts
        rows.append(row_of(merged))
        n += len(values)
    stamps = [r[0] for r in rows]
    return FastTelemetry(
        obj["session"], seq, historical, rows, stamps[0], min(stamps), max(stamps), n
    )
