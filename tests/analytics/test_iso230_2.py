"""ISO 230-2 against a hand-computed table and the identities of the standard."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from analytics.iso230_2 import evaluate_iso230_2

UM = 1e-3

# Deviations in µm (targets 0 and 10 mm), chosen so every figure is an integer by hand:
#   up   P1: 1 2 3 (mean 2, s 1)    P2: 4 4 4 (mean 4, s 0)
#   down P1: -1 0 1 (mean 0, s 1)   P2: 0 2 4 (mean 2, s 2)
TARGETS = [0.0, 10.0]
UP = [[0.001, 10.004], [0.002, 10.004], [0.003, 10.004]]
DOWN = [[-0.001, 10.000], [0.000, 10.002], [0.001, 10.004]]
HAND = {
    "A": 8, "A_up": 4, "A_down": 8, "B": 2, "B_mean": 2, "E": 4, "E_up": 2, "E_down": 2,
    "M": 2, "R": 8, "R_up": 4, "R_down": 8,
}  # fmt: skip


def test_hand_computed_table() -> None:
    res = evaluate_iso230_2(TARGETS, UP, DOWN)
    for key, value in HAND.items():
        assert getattr(res, key) == pytest.approx(value * UM, abs=1e-12), key
    np.testing.assert_allclose(res.mean_up, [2 * UM, 4 * UM], atol=1e-12)
    np.testing.assert_allclose(res.s_down, [1 * UM, 2 * UM], atol=1e-12)
    np.testing.assert_allclose(res.B_i, [2 * UM, 2 * UM], atol=1e-12)
    np.testing.assert_allclose(res.R_i, [6 * UM, 8 * UM], atol=1e-12)
    np.testing.assert_allclose(res.mean, [1 * UM, 3 * UM], atol=1e-12)


def test_deviations_input_gives_the_same_table() -> None:
    up = np.asarray(UP) - TARGETS
    down = np.asarray(DOWN) - TARGETS
    res = evaluate_iso230_2(TARGETS, up, down, values="deviations")
    np.testing.assert_allclose(res.A, 8 * UM, atol=1e-12)
    np.testing.assert_allclose(res.R, 8 * UM, atol=1e-12)


def test_pure_backlash_step_is_the_reversal_value() -> None:
    p = np.linspace(0, 500, 11)
    up = np.tile(p, (5, 1))
    res = evaluate_iso230_2(p, up, up - 0.006)
    np.testing.assert_allclose(res.B, 0.006, rtol=1e-6)
    np.testing.assert_allclose(res.B_mean, 0.006, rtol=1e-6)
    np.testing.assert_allclose(res.R, 0.006, rtol=1e-6)  # no scatter: R_i = |B_i|
    np.testing.assert_allclose(res.E, 0.006, rtol=1e-6)
    np.testing.assert_allclose(res.M, 0.0, atol=1e-12)


def test_bidirectional_values_are_not_the_unidirectional_ones() -> None:
    # Tools that report R = max(R_up, R_down) or E = E_up get this case wrong.
    res = evaluate_iso230_2(TARGETS, UP, DOWN)
    f = res.to_dict()
    assert f["R"] > 0
    assert f["E"] > max(f["E_up"], f["E_down"])


def test_sample_standard_deviation_uses_n_minus_one() -> None:
    up = [[0.0, 10.0], [0.002, 10.0]]
    res = evaluate_iso230_2(TARGETS, up, up)
    assert res.s_up[0] == pytest.approx(np.sqrt(2) * UM)  # population std would give 1 µm


@pytest.mark.parametrize(
    ("targets", "up", "down", "message"),
    [
        ([0.0], [[0.0], [0.0]], [[0.0], [0.0]], "targets needs at least 2"),
        ([0, 1], [[0, 1]], [[0, 1], [0, 1]], "up needs at least 2 runs"),
        ([0, 1], [[0, 1], [0]], [[0, 1], [0, 1]], "up[1] has 1 values, expected 2"),
        ([0, 1], [[0, 1], [0, 1]], [[0, 1], [0, float("nan")]], "down[1][1] is NaN"),
        ([0, 1], [[0, 1], [0, 1]], [[0, 1], [0, None]], "down[1][1] is null"),
    ],
)
def test_bad_input_names_the_field(targets: object, up: object, down: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        evaluate_iso230_2(targets, up, down)  # type: ignore[arg-type]


deviation = st.floats(-0.05, 0.05, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    up=arrays(np.float64, (5, 6), elements=deviation),
    down=arrays(np.float64, (4, 6), elements=deviation),
)
def test_identities_of_the_standard(up: np.ndarray, down: np.ndarray) -> None:
    res = evaluate_iso230_2(np.arange(6.0) * 100, up, down, values="deviations")
    f = res.to_dict()
    eps = 1e-12
    assert f["R"] + eps >= max(f["R_up"], f["R_down"]) >= 0
    assert f["B"] <= f["R"] + eps
    assert f["E"] + eps >= max(f["E_up"], f["E_down"])
    assert f["M"] <= f["E"] + eps
    assert f["A"] + eps >= f["E"]
    assert f["A"] + eps >= max(f["A_up"], f["A_down"])
