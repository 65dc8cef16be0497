"""`sample` rows as PostgreSQL binary COPY data, built by numpy for a whole batch at once.

asyncpg's ``copy_records_to_table`` encodes every field of every record through its codec
dispatch: ~0.12 µs a field here, and a `sample` row has 29 fields of which a producer typically
fills a dozen (~3.4 µs a row, a fifth of a worker's CPU). The binary format is simple and fixed
for these column types, so the batch is laid out as a numpy structured array instead (one
vectorised assignment per column, whatever the number of rows), and the columns that are NULL in
every row of the batch are left out of the COPY (PostgreSQL fills them with NULL, the column
default), so neither side handles them.

Format (PostgreSQL docs, "COPY", binary format): the 19-byte header, then per row an int16
field count and per field an int32 length (-1: NULL, no data) and the value in network byte
order (int4; timestamptz as int8 µs since 2000-01-01 UTC; float8), then the int16 trailer -1.
``tests/ingest/test_copybinary.py`` checks it against asyncpg's encoder on the real server.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np

from ingest.records import WIDE_SIGNALS, WideRow

__all__ = ["SampleCopy", "SampleEncodeError", "sample_copy"]

_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_TRAILER = b"\xff\xff"
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # PostgreSQL's timestamp epoch
_US = timedelta(microseconds=1)
_WIDTH = len(WIDE_SIGNALS)
_values_of = operator.itemgetter(slice(1, None))
# Bytes before the first value field: count (2), machine_id (4 + 4), ts (4 + 8).
_PREFIX = 22
_FIELD = 12  # length (4) + float8 (8)


class SampleEncodeError(ValueError):
    """A row cannot be encoded (not a number, out of range, a naive timestamp): the rows are
    bad, not the connection, so the worker isolates the batch instead of retrying it."""


class SampleCopy:
    """One batch's binary COPY data and the columns it fills (``machine_id, ts, ...``)."""

    __slots__ = ("columns", "data", "machine_ids", "rows", "stamps")

    def __init__(
        self,
        data: bytes,
        columns: list[str],
        rows: int,
        machine_ids: np.ndarray | None = None,
        stamps: np.ndarray | None = None,
    ) -> None:
        self.data = data
        self.columns = columns
        self.rows = rows
        #: per row: the machine, and the time in microseconds since PostgreSQL's epoch (2000)
        self.machine_ids = np.zeros(0, np.int64) if machine_ids is None else machine_ids
        self.stamps = np.zeros(0, np.int64) if stamps is None else stamps

    def spans_before(self, cutoff: datetime) -> list[tuple[int, datetime, datetime]]:
        """Per machine with rows timed before `cutoff`: its first and last such time (the rows
        that arrive late for the rollups). One comparison over the batch when there are none."""
        limit = (cutoff - _EPOCH) // _US
        if not self.rows or self.stamps.min() >= limit:
            return []
        late = self.stamps < limit
        ids, stamps = self.machine_ids[late], self.stamps[late]
        order = np.lexsort((stamps, ids))
        ids, stamps = ids[order], stamps[order]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        ends = np.r_[starts[1:], len(ids)] - 1
        return [
            (int(ids[a]), _EPOCH + int(stamps[a]) * _US, _EPOCH + int(stamps[b]) * _US)
            for a, b in zip(starts, ends, strict=True)
        ]

    async def source(self) -> AsyncIterator[bytes]:
        """The data as ``copy_to_table(source=...)`` should take it: an async iterable. Given a
        file-like object (``io.BytesIO``) asyncpg reads it through the default executor, and a
        worker's memory then grew ~45 bytes per message without end (1,000-machine soak: +33 MB
        in 10 minutes; with this, flat)."""
        yield self.data


def _values(rows: Sequence[WideRow]) -> np.ndarray:
    """The rows' values as an (n, columns) float64 array, NULL (None, or the fast path's NaN
    for an absent signal) as NaN: valid values are finite, so NaN can only mean NULL."""
    n = len(rows)
    flat = itertools.chain.from_iterable(map(_values_of, rows))
    try:
        out = np.fromiter(flat, dtype=np.float64, count=n * _WIDTH)
    except TypeError:  # an explicit null (None) somewhere: the slower conversion knows it
        nan = float("nan")
        out = np.array(
            [[nan if x is None else float(x) for x in _values_of(r)] for r in rows],
            dtype=np.float64,
        ).ravel()
    return out.reshape(n, _WIDTH)


def sample_copy(machine_ids: Sequence[int], rows: Sequence[WideRow]) -> SampleCopy:
    """Binary COPY data for `sample` rows; ``machine_ids[i]`` is the machine of ``rows[i]``
    (each a ``(ts, value per WIDE_SIGNALS column ...)``, ts timezone-aware)."""
    n = len(rows)
    if len(machine_ids) != n:
        raise ValueError(f"{len(machine_ids)} machine ids for {n} rows")
    if n == 0:
        return SampleCopy(_HEADER + _TRAILER, ["machine_id", "ts"], 0)
    try:
        return _encode(machine_ids, rows)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SampleEncodeError(f"sample rows not encodable: {exc}") from exc


def _encode(machine_ids: Sequence[int], rows: Sequence[WideRow]) -> SampleCopy:
    n = len(rows)
    epoch, us = _EPOCH, _US
    stamps = np.fromiter(((r[0] - epoch) // us for r in rows), dtype=np.int64, count=n)
    values = _values(rows)
    present = ~np.isnan(values)
    used = np.flatnonzero(present.any(axis=0))
    values = values[:, used]
    present = present[:, used]
    k = len(used)
    fields: list[tuple[str, str] | tuple[str, list[tuple[str, str]], tuple[int]]] = [
        ("count", ">i2"), ("id_len", ">i4"), ("id", ">i4"), ("ts_len", ">i4"), ("ts", ">i8"),
    ]  # fmt: skip
    if k:  # a batch whose every value is NULL still stores its rows (machine and time)
        fields.append(("field", [("len", ">i4"), ("value", ">f8")], (k,)))
    layout = np.dtype(fields)
    table = np.empty(n, layout)
    table["count"] = 2 + k
    table["id_len"] = 4
    table["id"] = machine_ids
    table["ts_len"] = 8
    table["ts"] = stamps
    if k:
        table["field"]["len"] = np.where(present, 8, -1)
        table["field"]["value"] = values
    body = table.view(np.uint8).reshape(n, layout.itemsize)
    if present.all():
        data = body.tobytes()
    else:
        # A NULL field is its length alone: drop its 8 value bytes (row-major boolean
        # selection keeps every other byte in order).
        keep = np.ones(body.shape, dtype=bool)
        value_bytes = _PREFIX + _FIELD * np.arange(k)[:, None] + 4 + np.arange(8)[None, :]
        keep[:, value_bytes.ravel()] = np.repeat(present, 8, axis=1)
        data = body[keep].tobytes()
    columns = ["machine_id", "ts", *(WIDE_SIGNALS[i] for i in used)]
    ids = np.asarray(machine_ids, dtype=np.int64)
    return SampleCopy(_HEADER + data + _TRAILER, columns, n, ids, stamps)
