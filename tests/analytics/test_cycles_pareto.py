"""Cycles from execution events, statistics per program and the downtime Pareto."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.cycles import (
    COMPLETED,
    INTERRUPTED,
    OPEN,
    condition_intervals,
    cycle_stats,
    find_cycles,
    pareto,
)
from analytics.intervals import IntervalSet
from analytics.oee import counter_increments
from analytics.states import EXECUTION, state_intervals

X = {w: k for k, w in enumerate(EXECUTION)}


def stream(events: list[tuple[float, str]], end: float) -> object:
    t = np.array([e[0] for e in events], dtype=float)
    c = np.array([X[e[1]] for e in events])
    return state_intervals(t, c, EXECUTION, start=0, end=end)


def test_completed_interrupted_and_open_cycles() -> None:
    exe = stream(
        [
            (0, "READY"),
            (10, "ACTIVE"),
            (40, "FEED_HOLD"),
            (45, "ACTIVE"),
            (70, "PROGRAM_COMPLETED"),
            (80, "ACTIVE"),
            (90, "STOPPED"),
            (100, "ACTIVE"),
        ],
        end=130,
    )
    part_t, parts = counter_increments([0, 71, 131], [5, 6, 7])
    cyc = find_cycles(exe, part_times=part_t, part_increments=parts)  # type: ignore[arg-type]
    assert cyc.status.tolist() == [COMPLETED, INTERRUPTED, OPEN]
    assert cyc.duration.tolist() == [60, 10, 30]
    assert cyc.active_time[0] == 55 and cyc.paused_time[0] == 5
    assert cyc.parts.tolist() == [1, 0, 0]  # counted 1 s after PROGRAM_COMPLETED


def test_program_change_interrupts_a_cycle() -> None:
    exe = stream([(0, "ACTIVE")], end=100)
    prog = state_intervals([0, 50], [0, 1], ("O1", "O2"), start=0, end=100)
    cyc = find_cycles(exe, prog)  # type: ignore[arg-type]
    assert cyc.status.tolist() == [INTERRUPTED, OPEN]
    assert [r["program"] for r in cyc.to_records()] == ["O1", "O2"]


def test_no_data_interrupts_a_cycle() -> None:
    exe = stream(
        [(0, "ACTIVE"), (20, "UNAVAILABLE"), (30, "ACTIVE"), (50, "PROGRAM_COMPLETED")], end=60
    )
    cyc = find_cycles(exe)  # type: ignore[arg-type]
    assert cyc.status.tolist() == [INTERRUPTED, COMPLETED]


def test_stats_median_spread_and_outliers() -> None:
    rng = np.random.default_rng(0)
    durations = 300 + rng.normal(0, 3, 40)
    durations[17] = 420  # a tool change inside one cycle
    events: list[tuple[float, str]] = []
    t = 0.0
    for d in durations:
        events += [(t, "ACTIVE"), (t + d, "PROGRAM_COMPLETED")]
        t += d + 20
    exe = stream(events, end=t)
    stats = cycle_stats(find_cycles(exe))["unknown"]  # type: ignore[arg-type]
    assert stats.count == 40
    assert stats.median == pytest.approx(np.median(durations))
    assert stats.spread_mad == pytest.approx(3, rel=0.4)
    assert stats.outliers == [17]


def test_condition_intervals_and_pareto() -> None:
    al = condition_intervals(
        [0, 10, 20, 30, 40, 50],
        ["1001", "2002", "1001", "3003", "", "1001"],
        ["FAULT", "FAULT", "NORMAL", "FAULT", "NORMAL", "FAULT"],
        end=100,
    )
    rows = pareto(al.code, al.start, al.end)
    assert [(r.label, r.seconds, r.count) for r in rows] == [
        ("1001", 70, 2),
        ("2002", 30, 1),
        ("3003", 10, 1),
    ]
    assert rows[-1].cumulative_share == pytest.approx(1.0)
    inside = pareto(al.code, al.start, al.end, within=IntervalSet.span(0, 15))
    assert [(r.label, r.seconds) for r in inside] == [("1001", 15), ("2002", 5)]
