"""How the telemetry route splits a window between rollups and raw samples (api/telemetry.py):
the bucket width and its chain of sources, and each source's share of the window given the
watermarks. Pure functions; the route's answers are in test_machines.py."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from api.telemetry import Segment, plan, segments


def _t(day: int, hhmmss: str) -> datetime:
    h, m, s = (int(x) for x in hhmmss.split(":"))
    return datetime(2026, 11, day, h, m, s, tzinfo=UTC)


@pytest.mark.parametrize(
    ("window_s", "points", "bucket_s", "chain"),
    [
        (7 * 86400, 500, 1500, ["sample_5m", "sample_1m"]),  # the bench's week: 1210 s -> 25 min
        (30 * 86400, 500, 7200, ["sample_1h", "sample_5m", "sample_1m"]),
        (86400, 500, 180, ["sample_1m"]),  # 173 s: 3 minutes, no 5-minute grid
        (86400, 200, 600, ["sample_5m", "sample_1m"]),  # 432 s -> 10 min
        (3600, 500, 8, []),  # raw only
        (3600 * 500, 500, 3600, ["sample_1h", "sample_5m", "sample_1m"]),
    ],
)
def test_the_plan_and_its_chain(
    window_s: float, points: int, bucket_s: int, chain: list[str]
) -> None:
    p = plan(window_s, points)
    assert (p.bucket_s, p.chain) == (bucket_s, chain)


def test_a_lagging_hour_rollup_is_followed_by_the_finer_ones() -> None:
    """2-hour buckets over 30 days: the hour rollup's watermark an hour behind the 5-minute one,
    which is 4 minutes behind the minute one; raw samples after that."""
    start, end = _t(1, "00:00:00"), _t(21, "11:37:30")
    marks = {
        "sample_1h": _t(21, "10:00:00"),
        "sample_5m": _t(21, "11:30:00"),
        "sample_1m": _t(21, "11:34:00"),
    }
    assert segments(start, end, plan(30 * 86400, 500).chain, marks) == [
        Segment("sample_1h", start, _t(21, "10:00:00")),
        Segment("sample_5m", _t(21, "10:00:00"), _t(21, "11:30:00")),
        Segment("sample_1m", _t(21, "11:30:00"), _t(21, "11:34:00")),
        Segment("sample", _t(21, "11:34:00"), end),
    ]


def test_an_unaligned_start_is_read_from_finer_sources_up_to_the_coarse_grid() -> None:
    start, end = _t(2, "08:02:30"), _t(2, "20:00:00")
    marks = {"sample_5m": _t(2, "19:00:00"), "sample_1m": _t(2, "19:57:00")}
    assert segments(start, end, ["sample_5m", "sample_1m"], marks) == [
        Segment("sample", start, _t(2, "08:03:00")),
        Segment("sample_1m", _t(2, "08:03:00"), _t(2, "08:05:00")),
        Segment("sample_5m", _t(2, "08:05:00"), _t(2, "19:00:00")),
        Segment("sample_1m", _t(2, "19:00:00"), _t(2, "19:57:00")),
        Segment("sample", _t(2, "19:57:00"), end),
    ]


def test_missing_or_stale_watermarks_fall_through_to_raw_samples() -> None:
    start, end = _t(2, "08:00:00"), _t(2, "20:00:00")
    assert segments(start, end, ["sample_5m", "sample_1m"], {}) == [Segment("sample", start, end)]
    # a watermark before the window: nothing of that rollup
    old = {"sample_5m": _t(1, "00:00:00"), "sample_1m": _t(2, "09:00:30")}
    assert segments(start, end, ["sample_5m", "sample_1m"], old) == [
        Segment("sample_1m", start, _t(2, "09:00:00")),
        Segment("sample", _t(2, "09:00:00"), end),
    ]
    # a watermark past the window's end: the rollup up to the last whole bucket in the window
    late = {"sample_5m": _t(3, "00:00:00")}
    assert segments(start, end - timedelta(minutes=2), ["sample_5m"], late) == [
        Segment("sample_5m", start, _t(2, "19:55:00")),
        Segment("sample", _t(2, "19:55:00"), end - timedelta(minutes=2)),
    ]


def test_the_segments_tile_the_window() -> None:
    """Whatever the watermarks, the segments are contiguous, in order and cover [start, end)."""
    rng = random.Random(5)
    chain = ["sample_1h", "sample_5m", "sample_1m"]
    for _ in range(500):
        start = _t(1, "00:00:00") + timedelta(seconds=rng.uniform(0, 86400 * 3))
        end = start + timedelta(seconds=rng.uniform(1, 86400 * 3))
        marks = {
            t: start + timedelta(seconds=rng.uniform(-3600, 86400 * 4))
            for t in chain
            if rng.random() < 0.8
        }
        parts = segments(start, end, chain, marks)
        assert parts[0].lo == start and parts[-1].hi == end
        for a, b in itertools.pairwise(parts):
            assert a.hi == b.lo
        for p in parts:
            assert p.lo < p.hi
            if p.table != "sample":
                assert p.hi <= (marks[p.table] or end)
