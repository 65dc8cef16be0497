"""Tool-life counters, Taylor, the wear indicator and RUL validated on simulated ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.intervals import IntervalSet
from analytics.states import state_intervals
from analytics.tools import (
    cutting_speed,
    fit_taylor,
    taylor_consumed,
    taylor_life,
    tool_life_status,
    tool_usage,
)
from analytics.wear import detect_breakage, override_factor, remaining_useful_life, wear_ratio
from tests.analytics.wear_truth import LIMIT_RATIO, PASS_MINUTES, TAYLOR_C, TAYLOR_N, simulate_tool


def test_counter_status_up_and_down() -> None:
    up = tool_life_status([0, 50, 85, 100], warning=80, limit=100)
    assert up.status == ["NEW", "USED", "WARNING", "EXPIRED"]
    np.testing.assert_allclose(up.remaining, [100, 50, 15, 0])
    down = tool_life_status([100, 50, 15, 0], warning=20, limit=100, count_direction="DOWN")
    assert down.status == ["NEW", "USED", "WARNING", "EXPIRED"]


def test_usage_minutes_parts_and_mounts() -> None:
    tool = state_intervals([0, 600, 900, 1200], [0, 1, 0, 1], ("T1", "T2"), start=0, end=1800)
    in_cut = IntervalSet.from_intervals([60, 700, 1000], [360, 760, 1060])
    usage = tool_usage(tool, in_cut, part_times=[500, 1500], part_increments=[1, 2])
    assert usage.minutes_in_cut == {"T1": 6.0, "T2": 1.0}
    assert usage.usages == {"T1": 2, "T2": 1}
    assert usage.parts == {"T1": 1.0, "T2": 2.0}


def test_taylor_round_trip() -> None:
    v = cutting_speed(20.0, [2000, 3000, 4000])
    assert v[0] == pytest.approx(np.pi * 20 * 2000 / 1000)
    t = taylor_life(v, 0.25, 400)
    n, c = fit_taylor(v, t)
    assert (n, c) == pytest.approx((0.25, 400))
    assert taylor_consumed(v, t / 3, 0.25, 400) == pytest.approx(1.0)


def test_override_normalisation_removes_the_override() -> None:
    f = np.array([0.8, 1.0, 1.2])
    load = 40 * (f / 1.1) ** 0.75
    ratio = wear_ratio(load, [0, 0, 0], feed_override=f, spindle_override=1.1, baseline_passes=1)
    np.testing.assert_allclose(ratio, 1.0)
    assert override_factor(1.0, 1.0, load_is="power") == 1.0


def test_breakage_step_and_collapse_are_flagged_but_wear_is_not() -> None:
    r = np.linspace(1.0, 1.4, 60)
    assert detect_breakage(r).size == 0
    chipped = r.copy()
    chipped[40:] *= 1.5
    broken = r.copy()
    broken[50:] = 0.3
    assert detect_breakage(chipped)[0] == 40
    assert detect_breakage(broken)[0] == 50


def test_wear_indicator_tracks_true_flank_wear() -> None:
    tl = simulate_tool(7)
    r = wear_ratio(
        tl.load, tl.operation, feed_override=tl.feed_override, spindle_override=tl.spindle_override
    )
    # The indicator is 1 + K VB up to noise and the running-in in the baseline.
    assert np.corrcoef(r, tl.vb)[0, 1] > 0.95


def test_rul_on_simulated_tools_within_stated_accuracy() -> None:
    """docs/tool-wear.md: fused RUL median error below 12 % of tool life, 95 % interval covering
    at least 90 % of tools, on tools the model was not tuned on."""
    errors, covered = [], []
    for seed in range(2000, 2060):
        tl = simulate_tool(seed)
        r = wear_ratio(
            tl.load,
            tl.operation,
            feed_override=tl.feed_override,
            spindle_override=tl.spindle_override,
        )
        for frac in (0.5, 0.8):
            n = int(frac * tl.true_life / PASS_MINUTES)
            est = remaining_useful_life(
                tl.minutes[:n], r[:n], limit=LIMIT_RATIO, taylor_life_minutes=tl.taylor_life
            )
            truth = tl.true_life - tl.minutes[n - 1]
            errors.append(abs(est.rul_minutes - truth) / tl.true_life)
            covered.append(est.lower_minutes <= truth <= est.upper_minutes)
    assert np.median(errors) < 0.12
    assert np.mean(covered) >= 0.9


def test_change_time_prediction_and_taylor_only() -> None:
    est = remaining_useful_life(
        [], [], limit=1.4, taylor_life_minutes=30, cut_minutes_per_hour=20, now=1000.0
    )
    assert est.source == "taylor" and est.rul_minutes == 30
    assert est.change_at == pytest.approx(1000 + 1.5 * 3600)


def test_rul_without_trend_or_taylor_is_an_error() -> None:
    with pytest.raises(ValueError, match="no rising trend"):
        remaining_useful_life(np.arange(10.0), np.ones(10), limit=1.4)


def test_simulation_follows_taylor() -> None:
    tl = simulate_tool(3)
    assert tl.taylor_life == pytest.approx((TAYLOR_C / tl.speed) ** (1 / TAYLOR_N))
