"""The numpy binary COPY encoder against asyncpg's, on the real server: the same rows stored.

What a user would see if it broke: wrong values or timestamps in `sample`, a NULL turned into a
number (or the reverse), rows of one machine stored under another, or a worker retrying a batch
it can never encode instead of isolating it.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.copybinary import SampleEncodeError, sample_copy
from ingest.fast import ABSENT
from ingest.records import WIDE_SIGNALS
from ingest.worker import _is_data_error
from ingest.writer import SAMPLE_COLUMNS

WIDTH = len(WIDE_SIGNALS)
BASE = datetime(2026, 3, 1, 12, tzinfo=UTC)

values = st.one_of(
    st.none(),
    st.just(ABSENT),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308, -1e-300]),
)
zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)


def _row(draw: st.DrawFn, ts: datetime, sparse: bool) -> tuple[Any, ...]:
    if sparse:  # most columns absent, as producers send them
        cells: list[Any] = [ABSENT] * WIDTH
        for i in draw(st.lists(st.integers(0, WIDTH - 1), max_size=6)):
            cells[i] = draw(values)
        return (ts, *cells)
    return (ts, *draw(st.lists(values, min_size=WIDTH, max_size=WIDTH)))


@st.composite
def batches(draw: st.DrawFn, wide_time: bool) -> tuple[list[int], list[tuple[Any, ...]]]:
    n = draw(st.integers(min_value=1, max_value=30))
    sparse = draw(st.booleans())
    rows = []
    for _ in range(n):
        if wide_time:  # before PostgreSQL's epoch (2000) and far after it, any µs
            ts = draw(
                st.datetimes(
                    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=zones
                )
            )
        else:  # within the hypertable's few chunks
            ts = BASE + timedelta(microseconds=draw(st.integers(0, 3 * 3600 * 10**6)))
        rows.append(_row(draw, ts, sparse))
    ids = draw(st.lists(st.integers(1, 2**31 - 1), min_size=n, max_size=n))
    return ids, rows


def _as_records(ids: list[int], rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The same rows as asyncpg's encoder takes them (NULL as None, numbers as they are)."""
    return [
        (i, r[0], *(None if x is None or (isinstance(x, float) and math.isnan(x)) else x
                    for x in r[1:]))
        for i, r in zip(ids, rows, strict=True)
    ]  # fmt: skip


async def _stored_both_ways(
    url: str, table: str, ids: list[int], rows: list[tuple[Any, ...]]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(url)
    # table: "sample" or "sample_plain", this module's own
    order = f"SELECT * FROM {table} ORDER BY machine_id, ts, {', '.join(WIDE_SIGNALS)}"  # noqa: S608
    try:
        await conn.execute(f"TRUNCATE {table}")
        copy = sample_copy(ids, rows)
        assert copy.rows == len(rows)
        await conn.copy_to_table(table, source=copy.source(), columns=copy.columns, format="binary")
        ours = [tuple(r) for r in await conn.fetch(order)]
        await conn.execute(f"TRUNCATE {table}")
        await conn.copy_records_to_table(
            table, records=_as_records(ids, rows), columns=SAMPLE_COLUMNS
        )
        theirs = [tuple(r) for r in await conn.fetch(order)]
        return ours, theirs
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def plain_table(db: str) -> str:
    """`sample`'s columns in a plain table: any timestamp without creating chunks for it."""

    async def make() -> None:
        conn = await asyncpg.connect(db)
        try:
            await conn.execute("CREATE TABLE sample_plain (LIKE sample INCLUDING DEFAULTS)")
        finally:
            await conn.close()

    asyncio.run(make())
    return db


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches(wide_time=True))
def test_any_row_is_stored_as_asyncpgs_encoder_stores_it(
    plain_table: str, batch: tuple[list[int], list[tuple[Any, ...]]]
) -> None:
    ours, theirs = asyncio.run(_stored_both_ways(plain_table, "sample_plain", *batch))
    assert ours == theirs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches(wide_time=False))
def test_rows_land_in_the_sample_hypertable_as_asyncpg_would_store_them(
    db: str, batch: tuple[list[int], list[tuple[Any, ...]]]
) -> None:
    ours, theirs = asyncio.run(_stored_both_ways(db, "sample", *batch))
    assert ours == theirs


def test_only_columns_with_a_value_in_the_batch_are_sent() -> None:
    spindle = WIDE_SIGNALS.index("spindle_speed")
    rows = [(BASE, *[ABSENT] * WIDTH), (BASE, *[None] * WIDTH)]
    rows[0] = (*rows[0][: spindle + 1], 1500.0, *rows[0][spindle + 2 :])
    copy = sample_copy([1, 2], rows)
    assert copy.columns == ["machine_id", "ts", "spindle_speed"]
    # header 19 + row (2 + 8 + 12 + 12) + row (2 + 8 + 12 + 4: NULL is its length alone) + 2
    assert len(copy.data) == 19 + 34 + 26 + 2


def test_a_batch_of_rows_without_any_value_still_stores_machine_and_time(
    plain_table: str,
) -> None:
    rows: list[tuple[Any, ...]] = [
        (BASE, *[None] * WIDTH),
        (BASE + timedelta(seconds=1), *[ABSENT] * WIDTH),
    ]
    ours, theirs = asyncio.run(_stored_both_ways(plain_table, "sample_plain", [7, 8], rows))
    assert ours == theirs
    assert [(r[0], r[1]) for r in ours] == [(7, BASE), (8, BASE + timedelta(seconds=1))]


@pytest.mark.parametrize(
    ("ids", "row"),
    [
        ([1], (BASE, "fast", *[None] * (WIDTH - 1))),  # not a number
        ([1], (BASE, 10**400, *[None] * (WIDTH - 1))),  # no float8 holds it
        ([1], (datetime(2026, 3, 1), *[1.0] * WIDTH)),  # naive: which instant?
        ([2**31], (BASE, *[1.0] * WIDTH)),  # not an int4 machine id
    ],
)
def test_rows_that_cannot_be_encoded_are_a_data_error_not_a_connection_error(
    ids: list[int], row: tuple[Any, ...]
) -> None:
    with pytest.raises(SampleEncodeError) as exc:
        sample_copy(ids, [row])
    # the worker isolates such a batch message by message instead of retrying it forever
    assert _is_data_error(exc.value)


def _speed_at(ts: datetime) -> tuple[Any, ...]:
    return (ts, 1.0, *([ABSENT] * (len(WIDE_SIGNALS) - 1)))


def test_late_rows_are_found_per_machine_with_their_first_and_last_time() -> None:
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    s = timedelta(seconds=1)
    ago = [5, 300, 0, 90, 100, 7200, 61]
    rows = [_speed_at(now - a * s) for a in ago]
    ids = [1, 2, 1, 2, 2, 3, 1]
    copy = sample_copy(ids, rows)
    assert copy.spans_before(now - 60 * s) == [
        (1, now - 61 * s, now - 61 * s),
        (2, now - 300 * s, now - 90 * s),
        (3, now - 7200 * s, now - 7200 * s),
    ]
    assert copy.spans_before(now - 7201 * s) == []
    assert sample_copy([], []).spans_before(now) == []
