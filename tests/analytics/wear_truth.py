"""Simulated tool lives with known flank wear, for validating analytics.wear (not a test module).

Each tool cuts 12-second passes of three operations at random feed and spindle overrides. The
true life follows Taylor, T = (C / V)^(1/n), times a log-normal tool-to-tool scatter; flank wear
VB grows through the classical three phases (running-in, steady, accelerating) and reaches the
criterion VB_c = 0.3 mm exactly at T. Spindle load (torque) rises linearly with VB:
load = base_op x (1 + K x VB) x (feed/speed override)^0.75 x (1 + noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VB_C = 0.3  # mm, ISO 3685 average flank wear criterion
K_LOAD = 1.5  # relative load rise per mm of VB
LIMIT_RATIO = 1.0 + K_LOAD * VB_C
TAYLOR_N, TAYLOR_C = 0.25, 500.0  # carbide in steel, m/min
PASS_MINUTES = 0.2


def _shape(x: np.ndarray) -> np.ndarray:
    f = 0.25 * (1 - np.exp(-5 * x)) + 0.55 * x + 0.20 * x**4
    return f / (0.25 * (1 - np.exp(-5.0)) + 0.75)


@dataclass
class ToolLife:
    speed: float  # m/min
    taylor_life: float  # minutes, what Taylor expects
    true_life: float  # minutes, when VB reaches VB_C
    minutes: np.ndarray  # cumulative minutes in cut at each pass
    vb: np.ndarray  # mm
    load: np.ndarray
    operation: np.ndarray
    feed_override: np.ndarray
    spindle_override: np.ndarray


def simulate_tool(seed: int, *, noise: float = 0.02, scatter: float = 0.2) -> ToolLife:
    rng = np.random.default_rng(seed)
    speed = float(rng.uniform(150, 250))
    taylor = (TAYLOR_C / speed) ** (1 / TAYLOR_N)
    true_life = taylor * float(np.exp(scatter * rng.standard_normal()))
    minutes = np.arange(PASS_MINUTES, true_life * 1.05, PASS_MINUTES)
    vb = VB_C * _shape(minutes / true_life)
    op = rng.integers(0, 3, minutes.size)
    base = np.array([35.0, 50.0, 22.0])[op]
    fo = rng.choice([0.8, 0.9, 1.0, 1.0, 1.0, 1.1, 1.2], minutes.size)
    so = rng.choice([0.9, 1.0, 1.0, 1.1], minutes.size)
    load = (
        base
        * (1 + K_LOAD * vb)
        * (fo / so) ** 0.75
        * (1 + noise * rng.standard_normal(minutes.size))
    )
    return ToolLife(speed, taylor, true_life, minutes, vb, load, op, fo, so)
