"""State intervals, the ISO 22400 time model and the utilisation conventions on streams whose
answers can be counted by hand."""

from __future__ import annotations

from datetime import UTC, datetime, time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.calendar import Shift, ShiftCalendar
from analytics.intervals import IntervalSet
from analytics.oee import (
    classical_oee,
    classify_iso22400,
    counter_increments,
    in_cycle_utilisation,
    iso22400_kpis,
    kpis_by_window,
    microstops,
    time_by_key,
    time_model,
)
from analytics.states import (
    CONTROLLER_MODE,
    EXECUTION,
    UNKNOWN,
    durations_by_group,
    state_intervals,
)

X = {w: k for k, w in enumerate(EXECUTION)}
T0 = datetime(2024, 3, 4, tzinfo=UTC).timestamp()  # a Monday


def execution(events: list[tuple[float, str]], start: float = 0, end: float = 100, **kw: float):
    t = np.array([e[0] for e in events], dtype=float)
    c = np.array([X[e[1]] for e in events], dtype=np.int64)
    return state_intervals(t, c, EXECUTION, start=start, end=end, **kw)


def test_each_state_lasts_until_the_next_change() -> None:
    s = execution([(10, "ACTIVE"), (30, "READY"), (60, "ACTIVE")])
    d = s.durations()
    assert (d["ACTIVE"], d["READY"], d["unknown"]) == (60.0, 30.0, 10.0)


def test_window_cuts_an_interval_that_started_before_it() -> None:
    s = execution([(-50, "ACTIVE"), (20, "READY")], start=0, end=100)
    assert s.durations()["ACTIVE"] == 20.0
    assert s.durations()["unknown"] == 0.0


def test_no_data_is_unknown_never_idle_or_running() -> None:
    s = execution([(0, "ACTIVE"), (40, "UNAVAILABLE"), (70, "READY")], until=90)
    d = s.durations()
    assert d["ACTIVE"] == 40.0 and d["READY"] == 20.0
    assert d["unknown"] == 40.0  # 30 s UNAVAILABLE + 10 s after the data horizon
    u = in_cycle_utilisation(s, IntervalSet.span(0, 100))
    assert u.utilisation == pytest.approx(40 / 60)


def test_out_of_order_and_duplicate_events() -> None:
    ordered = execution([(0, "READY"), (10, "ACTIVE"), (50, "READY")])
    shuffled = execution([(50, "READY"), (10, "ACTIVE"), (0, "READY"), (10, "ACTIVE")])
    np.testing.assert_array_equal(ordered.start, shuffled.start)
    np.testing.assert_array_equal(ordered.code, shuffled.code)


def test_equal_timestamps_last_arrival_wins() -> None:
    s = execution([(0, "READY"), (10, "ACTIVE"), (10, "FEED_HOLD")])
    assert s.durations()["ACTIVE"] == 0.0 and s.durations()["FEED_HOLD"] == 90.0


def test_int64_nanoseconds_and_float_seconds_agree() -> None:
    t = np.array([T0, T0 + 30.5])
    c = np.array([X["ACTIVE"], X["READY"]])
    a = state_intervals(t, c, EXECUTION, start=T0, end=T0 + 60)
    b = state_intervals((t * 1e9).astype(np.int64), c, EXECUTION, start=T0, end=T0 + 60)
    assert a.durations() == b.durations()


def test_bad_codes_are_rejected() -> None:
    with pytest.raises(ValueError, match="codes must lie in"):
        state_intervals([0.0], [42], EXECUTION, start=0, end=1)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-20, 120, allow_nan=False), st.integers(0, len(EXECUTION) - 1)),
        max_size=30,
    ),
    st.floats(0, 100),
)
def test_intervals_tile_the_window(events: list[tuple[float, int]], until: float) -> None:
    t = np.array([e[0] for e in events], dtype=float)
    c = np.array([e[1] for e in events], dtype=np.int64)
    s = state_intervals(t, c, EXECUTION, start=0, end=100, until=until)
    assert s.start[0] == 0 and s.end[-1] == 100
    np.testing.assert_array_equal(s.start[1:], s.end[:-1])
    assert np.all(s.code[1:] != s.code[:-1])
    assert sum(s.durations().values()) == pytest.approx(100.0)
    assert s.durations()["unknown"] >= 100 - until - 1e-9


def calendar() -> ShiftCalendar:
    return ShiftCalendar(
        [
            Shift("early", time(6), time(14), breaks=((time(10), time(10, 30)),)),
            Shift("late", time(13), time(22)),
        ]
    )


def test_overlapping_shifts_count_once() -> None:
    cal = calendar()
    pot = cal.planned_operation_time(T0, T0 + 86400)
    assert pot.total == 16 * 3600  # 06:00-22:00, the 13:00-14:00 overlap once
    assert cal.planned_busy_time(T0, T0 + 86400).total == 15.5 * 3600
    assert [w.name for w in cal.windows(T0, T0 + 86400)] == ["early", "late"]


def test_night_shift_crosses_midnight() -> None:
    cal = ShiftCalendar([Shift("night", time(22), time(6), weekdays=frozenset({0}))])
    wins = cal.windows(T0, T0 + 2 * 86400)
    assert len(wins) == 1 and wins[0].end - wins[0].start == 8 * 3600


def test_iso22400_time_model_and_kpis_by_hand() -> None:
    # Planned 08:00-10:00 with a 10-minute break at 09:00; machine data from 07:00.
    h = 3600.0
    cal = ShiftCalendar([Shift("day", time(8), time(10), breaks=((time(9), time(9, 10)),))])
    ev = [
        (T0 + 7 * h, "ACTIVE"),  # production before the shift: outside the plan
        (T0 + 8 * h, "READY"),  # 20 min ADOT
        (T0 + 8 * h + 1200, "ACTIVE"),  # 40 min APT (minus nothing: break is 09:00)
        (T0 + 9 * h - 600, "UNAVAILABLE"),  # 10 min unknown, then the break
        (T0 + 9 * h + 600, "ACTIVE"),  # 50 min APT to 10:00
    ]
    exe = execution(ev, start=T0 + 7 * h, end=T0 + 10 * h)
    mode = state_intervals([T0], [0], CONTROLLER_MODE, start=T0 + 7 * h, end=T0 + 10 * h)
    fault = IntervalSet.span(T0 + 9.5 * h, T0 + 9.5 * h + 300)  # 5 min alarm while ACTIVE
    cats = classify_iso22400(exe, mode, fault=fault)
    tm = time_model(
        cats, cal.planned_operation_time(T0, T0 + 86400), cal.planned_down_time(T0, T0 + 86400)
    )
    assert tm.POT == 2 * h and tm.PBT == 110 * 60 and tm.planned_down_time == 600
    assert tm.APT == (40 - 10 + 50 - 5) * 60  # 40 min run cut by 10 unknown
    assert tm.ADET == 300 and tm.ADOT == 1200 and tm.unknown == 600
    assert tm.APT_outside_plan == h
    k = iso22400_kpis(tm, produced=30, scrap=3, ideal_cycle_time=120)
    assert k.availability == pytest.approx(tm.APT / (110 * 60 - 600))
    assert k.effectiveness == pytest.approx(30 * 120 / tm.APT)
    assert k.quality_ratio == pytest.approx(0.9)
    assert k.oee == pytest.approx(120 * 27 / (110 * 60 - 600))  # OEE = PRU x GQ / PBT_known
    assert k.technical_efficiency == pytest.approx(tm.APT / (tm.APT + 300))
    assert k.scrap_ratio == pytest.approx(0.1)
    assert k.coverage == pytest.approx(100 / 110)
    assert k.availability_min is not None and k.availability_max is not None
    assert k.availability_min < k.availability < k.availability_max


def test_setup_in_manual_mode_is_asut() -> None:
    exe = execution([(0, "ACTIVE")])
    mode = state_intervals([0, 50], [1, 0], CONTROLLER_MODE, start=0, end=100)
    tm = time_model(classify_iso22400(exe, mode), IntervalSet.span(0, 100), IntervalSet.empty())
    assert (tm.ASUT, tm.APT) == (50, 50)
    assert iso22400_kpis(tm, produced=1, ideal_cycle_time=10).setup_rate == 0.5


def test_planned_time_longer_than_the_window_is_clamped() -> None:
    res = classical_oee(
        [0, 30],
        [X["ACTIVE"], X["READY"]],
        EXECUTION,
        start=0,
        end=100,
        planned_time=500,
        total_count=3,
        bad_count=1,
        ideal_cycle_time=5,
    )
    assert res.planned_time == 100 and res.planned_time_clamped
    assert res.availability == pytest.approx(0.3)
    assert res.performance == pytest.approx(15 / 30)
    assert res.quality == pytest.approx(2 / 3)


def test_classical_last_event_lasts_to_the_end_of_the_window() -> None:
    res = classical_oee(
        [10, 60],
        [X["READY"], X["ACTIVE"]],
        EXECUTION,
        start=0,
        end=100,
        total_count=0,
        bad_count=0,
        ideal_cycle_time=1,
    )
    assert res.run_time == 40


def test_counter_reset_is_not_negative_production() -> None:
    t, inc = counter_increments([0, 10, 20, 30, 40], [100, 103, 0, 2, 2])
    assert inc.sum() == 5
    np.testing.assert_array_equal(t, [10, 20, 30, 40])


def test_microstops_between_running_periods() -> None:
    s = execution(
        [
            (0, "ACTIVE"),
            (10, "FEED_HOLD"),
            (15, "READY"),
            (20, "ACTIVE"),
            (40, "READY"),
            (90, "ACTIVE"),
        ]
    )
    m = microstops(s, threshold=30)
    assert m.count == 1 and m.total == 10  # FEED_HOLD + READY 10-20; the 50 s stop is not micro
    gap = execution([(0, "ACTIVE"), (10, "UNAVAILABLE"), (12, "ACTIVE")])
    assert microstops(gap, threshold=30).count == 0  # no data is not a stop


def test_grouping_by_program_and_by_shift() -> None:
    exe = execution([(0, "ACTIVE"), (40, "READY"), (50, "ACTIVE")])
    prog = state_intervals([0, 45], [0, 1], ("O100", "O200"), start=0, end=100)
    table = time_by_key(exe, prog)
    assert table["O100"] == {"ACTIVE": 40, "READY": 5}
    assert table["O200"] == {"READY": 5, "ACTIVE": 50}
    cats = classify_iso22400(exe)
    windows = [
        ("a", IntervalSet.span(0, 50), IntervalSet.empty()),
        ("b", IntervalSet.span(50, 100), IntervalSet.empty()),
    ]
    parts_t, parts = counter_increments([0, 30, 80], [0, 1, 3])
    out = kpis_by_window(cats, windows, part_times=parts_t, parts=parts, ideal_cycle_time=10)
    assert out["a"].produced == 1 and out["b"].produced == 2
    assert out["a"].availability == pytest.approx(0.8) and out["b"].availability == 1.0


def test_unknown_code_is_minus_one() -> None:
    assert execution([(50, "ACTIVE")]).code[0] == UNKNOWN


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.floats(-20, 120, allow_nan=False),
            st.integers(0, len(EXECUTION) - 1),
        ),
        max_size=40,
    )
)
def test_fleet_durations_match_per_machine_intervals(events: list[tuple[int, float, int]]) -> None:
    g = np.array([e[0] for e in events], dtype=np.int64)
    t = np.array([e[1] for e in events], dtype=float)
    c = np.array([e[2] for e in events], dtype=np.int64)
    table = durations_by_group(g, t, c, 4, EXECUTION, start=0, end=100)
    for m in range(4):
        d = state_intervals(t[g == m], c[g == m], EXECUTION, start=0, end=100).durations()
        np.testing.assert_allclose(table[m], list(d.values()), atol=1e-9)
