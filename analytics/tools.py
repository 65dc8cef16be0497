"""Tool life from counters (minutes in cut, parts, usages) and Taylor's tool-life equation.

Counters follow MTConnect/OPC UA ToolLife: a value counting up towards a limit (or down towards
zero) with a warning value and a limit value. Cutting speed V in m/min, tool life T in minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from analytics.intervals import IntervalSet
from analytics.states import UNKNOWN, StateIntervals, to_seconds

__all__ = [
    "ToolLifeStatus",
    "ToolUsage",
    "cutting_speed",
    "fit_taylor",
    "taylor_consumed",
    "taylor_life",
    "tool_life_status",
    "tool_usage",
]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ToolLifeStatus:
    """Counter status per tool, arrays of shape (k,): ``status`` is NEW, USED, WARNING or
    EXPIRED; ``remaining`` is the amount left before the limit; ``used_fraction`` in [0, inf)."""

    status: list[str]
    remaining: FloatArray
    used_fraction: FloatArray


def tool_life_status(
    value: ArrayLike,
    warning: ArrayLike,
    limit: ArrayLike,
    *,
    count_direction: str = "UP",
    initial: ArrayLike | None = None,
) -> ToolLifeStatus:
    """Classify tool-life counters (shapes broadcast together).

    UP: used = value, remaining = limit - value, WARNING from value >= warning, EXPIRED from
    value >= limit. DOWN: the counter starts at ``initial`` (default: ``limit``) and counts to 0;
    ``warning`` is then the remaining amount that raises a warning, EXPIRED at value <= 0.
    NEW means nothing used yet.
    """
    v, w, lim = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (value, warning, limit))
    )
    if np.any(lim <= 0):
        raise ValueError("limit values must be > 0")
    if count_direction.upper() == "UP":
        used, remaining, warn = v, lim - v, v >= w
        total = lim
    elif count_direction.upper() == "DOWN":
        start = lim if initial is None else np.broadcast_to(np.asarray(initial, float), v.shape)
        used, remaining, warn = start - v, v, v <= w
        total = start
    else:
        raise ValueError(f"count_direction must be 'UP' or 'DOWN', got {count_direction!r}")
    status = np.where(
        remaining <= 0, "EXPIRED", np.where(warn, "WARNING", np.where(used <= 0, "NEW", "USED"))
    )
    return ToolLifeStatus(
        status=[str(s) for s in status],
        remaining=np.maximum(remaining, 0.0),
        used_fraction=used / total,
    )


@dataclass(frozen=True, slots=True)
class ToolUsage:
    """Per tool: minutes in cut, parts made while it was in the spindle, usages (mountings with
    cutting time)."""

    minutes_in_cut: dict[str, float]
    parts: dict[str, float]
    usages: dict[str, int]


def tool_usage(
    tool: StateIntervals,
    in_cut: IntervalSet,
    *,
    part_times: ArrayLike | None = None,
    part_increments: ArrayLike | None = None,
) -> ToolUsage:
    """Accumulate counters per tool.

    ``tool`` is the tool-number stream (vocabulary: tool names); ``in_cut`` the time the tool was
    cutting (e.g. ACTIVE with spindle load above a threshold). Parts are credited to the tool in
    the spindle when the counter moved.
    """
    cut = in_cut.overlap(tool.start, tool.end)
    known = tool.code != UNKNOWN
    minutes: dict[str, float] = {}
    usages: dict[str, int] = {}
    for k in np.nonzero(known)[0].tolist():
        name = tool.vocabulary[tool.code[k]]
        minutes[name] = minutes.get(name, 0.0) + float(cut[k]) / 60.0
        usages[name] = usages.get(name, 0) + int(cut[k] > 0)
    parts: dict[str, float] = dict.fromkeys(minutes, 0.0)
    if part_times is not None and part_increments is not None:
        pt = to_seconds(part_times)
        inc = np.asarray(part_increments, dtype=np.float64)
        # A counter bump at an interval boundary belongs to the tool that was just cutting.
        slot = np.searchsorted(tool.start, pt, side="left") - 1
        ok = (slot >= 0) & (slot < tool.code.size)
        for idx, amount in zip(slot[ok].tolist(), inc[ok].tolist(), strict=True):
            if tool.code[idx] != UNKNOWN:
                name = tool.vocabulary[tool.code[idx]]
                parts[name] = parts.get(name, 0.0) + amount
    return ToolUsage(minutes_in_cut=minutes, parts=parts, usages=usages)


def cutting_speed(diameter_mm: ArrayLike, rpm: ArrayLike) -> FloatArray:
    """V = pi D N / 1000 in m/min from tool diameter (mm) and spindle speed (rpm)."""
    v: FloatArray = np.pi * np.asarray(diameter_mm, float) * np.asarray(rpm, float) / 1000.0
    return v


def taylor_life(speed: ArrayLike, n: float, c: float) -> FloatArray:
    """Taylor tool life T = (C / V)^(1/n) in minutes for cutting speed V (m/min)."""
    v = np.asarray(speed, dtype=np.float64)
    if not 0 < n < 1:
        raise ValueError(f"Taylor exponent n must lie in (0, 1), got {n}")
    if c <= 0 or np.any(v <= 0):
        raise ValueError("Taylor constant C and cutting speeds must be > 0")
    t: FloatArray = (c / v) ** (1.0 / n)
    return t


def fit_taylor(speed: ArrayLike, life_minutes: ArrayLike) -> tuple[float, float]:
    """Fit n and C of V T^n = C from observed lives (log-linear least squares, >= 2 speeds)."""
    v = np.asarray(speed, dtype=np.float64)
    t = np.asarray(life_minutes, dtype=np.float64)
    if v.shape != t.shape or v.size < 2 or np.unique(v).size < 2:
        raise ValueError("fit_taylor needs lives at two or more different speeds")
    if np.any(v <= 0) or np.any(t <= 0):
        raise ValueError("speeds and lives must be > 0")
    # log V = log C - n log T
    slope, intercept = np.polyfit(np.log(t), np.log(v), 1)
    return float(-slope), float(np.exp(intercept))


def taylor_consumed(
    speeds: Sequence[float] | FloatArray, minutes: Sequence[float] | FloatArray, n: float, c: float
) -> float:
    """Fraction of life used by cutting ``minutes[k]`` at ``speeds[k]`` (Palmgren-Miner sum of
    t_k / T(V_k)); 1.0 means the Taylor life is reached."""
    return float(np.sum(np.asarray(minutes, float) / taylor_life(speeds, n, c)))
