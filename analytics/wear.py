"""Signal-based tool wear: spindle load against the same tool's new-tool baseline on the same
operation, breakage detection, and remaining useful life fused with the Taylor expectation.

A *pass* is one execution of one operation (program line or block range) by one tool; its load is
the mean spindle load while cutting. Time axes are minutes in cut of that tool.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "RulEstimate",
    "detect_breakage",
    "override_factor",
    "remaining_useful_life",
    "wear_ratio",
]

FloatArray = NDArray[np.float64]
_Z95 = 1.959963984540054


def override_factor(
    feed_override: ArrayLike,
    spindle_override: ArrayLike,
    *,
    exponent: float = 0.75,
    load_is: str = "torque",
) -> FloatArray:
    """Expected load multiplier caused by overrides (1.0 at 100 % / 100 %), overrides as fractions.

    Chip thickness scales with feed per tooth, i.e. feed override / spindle override; cutting force
    and spindle torque scale with chip thickness^(1 - m_c) (Kienzle, 1 - m_c about 0.75 for steel).
    Spindle power is torque x speed, so ``load_is="power"`` multiplies by the spindle override.
    """
    f = np.asarray(feed_override, dtype=np.float64)
    s = np.asarray(spindle_override, dtype=np.float64)
    if np.any(f <= 0) or np.any(s <= 0):
        raise ValueError("overrides must be > 0 (fractions, 1.0 = 100 %)")
    torque = (f / s) ** exponent
    if load_is == "torque":
        return np.asarray(torque, dtype=np.float64)
    if load_is == "power":
        return np.asarray(torque * s, dtype=np.float64)
    raise ValueError(f"load_is must be 'torque' or 'power', got {load_is!r}")


def wear_ratio(
    load: ArrayLike,
    operation: ArrayLike,
    *,
    feed_override: ArrayLike | float = 1.0,
    spindle_override: ArrayLike | float = 1.0,
    baseline_passes: int = 3,
    exponent: float = 0.75,
    load_is: str = "torque",
) -> FloatArray:
    """Wear indicator per pass: normalised load / the tool's new-tool baseline on that operation.

    Args:
        load: (p,) mean spindle load per pass of ONE tool life, in time order.
        operation: (p,) operation id per pass (ints or strings).
        feed_override, spindle_override: (p,) or scalars, fractions.
        baseline_passes: the first passes of each operation (new tool) whose median is the
            baseline.

    Returns (p,) ratios, 1.0 for a new tool; NaN for passes of an operation with no baseline yet
    can not happen, since every operation's first pass is part of its own baseline.
    """
    x = np.asarray(load, dtype=np.float64)
    ops = np.asarray(operation)
    if x.ndim != 1 or ops.shape != x.shape:
        raise ValueError("load and operation must be 1-D arrays of the same length")
    if baseline_passes < 1:
        raise ValueError("baseline_passes must be >= 1")
    norm = x / override_factor(
        np.broadcast_to(feed_override, x.shape),
        np.broadcast_to(spindle_override, x.shape),
        exponent=exponent,
        load_is=load_is,
    )
    ratio = np.empty_like(norm)
    for op in np.unique(ops):
        idx = np.nonzero(ops == op)[0]
        base = float(np.median(norm[idx[:baseline_passes]]))
        if base <= 0:
            raise ValueError(f"operation {op!r}: baseline load is {base}; it must be > 0")
        ratio[idx] = norm[idx] / base
    return ratio


def detect_breakage(
    ratio: ArrayLike, *, window: int = 5, jump: float = 0.25, collapse: float = 0.6
) -> NDArray[np.intp]:
    """Indices of passes whose wear ratio jumps above (1 + ``jump``) x or falls below ``collapse`` x
    the median of the preceding ``window`` passes: chipping raises the load step-wise, a broken
    tool that no longer cuts drops it. Gradual wear moves the median along and is not flagged."""
    r = np.asarray(ratio, dtype=np.float64)
    if r.size <= window:
        return np.zeros(0, dtype=np.intp)
    view = np.lib.stride_tricks.sliding_window_view(r[:-1], window)
    ref = np.median(view, axis=1)
    cur = r[window:]
    hit = (cur > (1.0 + jump) * ref) | (cur < collapse * ref)
    return np.nonzero(hit)[0] + window


@dataclass(frozen=True, slots=True)
class RulEstimate:
    """Remaining useful life in minutes in cut, with its standard deviation and 95 % interval.

    ``source`` is "trend" (wear indicator extrapolated), "taylor" (expected life only) or "fused"
    (inverse-variance combination). ``change_at`` is the predicted wall-clock time of the tool
    change (s since the epoch) when a cutting rate was given, with ``change_at_sd`` seconds.
    """

    now_minutes: float
    rul_minutes: float
    sd_minutes: float
    lower_minutes: float
    upper_minutes: float
    source: str
    trend_rul_minutes: float | None
    taylor_rul_minutes: float | None
    change_at: float | None
    change_at_sd: float | None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        return asdict(self)


def _level_life(
    t: FloatArray, r: FloatArray, limit: float, model_cv: float
) -> tuple[float, float] | None:
    """Life at which the indicator reaches ``limit``, assuming wear so far is proportional to
    cutting time: T = t_now (limit - 1) / (r_now - 1), with r_now the recent trend line's value
    now. The level is far less noisy than a slope, and because real wear accelerates after the
    steady phase the proportional rule stays close where a linear extrapolation of the slope
    would promise too much life. Returns (T, sd) or None while the indicator has not risen."""
    a_mat = np.column_stack([np.ones_like(t), t - t[-1]])
    coef, *_ = np.linalg.lstsq(a_mat, r, rcond=None)
    r_now = float(coef[0])
    resid = r - a_mat @ coef
    dof = max(t.size - 2, 1)
    cov = float(resid @ resid) / dof * np.linalg.inv(a_mat.T @ a_mat)
    sd_r = float(np.sqrt(max(cov[0, 0], 0.0)))
    t_now = float(t[-1])
    rise = r_now - 1.0
    if rise <= max(2.0 * sd_r, 1e-6):
        return None
    life = t_now * (limit - 1.0) / rise
    sd = float(np.hypot(t_now * (limit - 1.0) / rise**2 * sd_r, model_cv * life))
    return life, sd


def remaining_useful_life(
    minutes_in_cut: ArrayLike,
    ratio: ArrayLike,
    *,
    limit: float,
    window: int | None = None,
    taylor_life_minutes: float | None = None,
    taylor_cv: float = 0.25,
    model_cv: float = 0.15,
    cut_minutes_per_hour: float | None = None,
    now: float | None = None,
) -> RulEstimate:
    """Estimate when the wear indicator reaches ``limit`` and fuse with the Taylor expectation.

    Args:
        minutes_in_cut: (p,) cumulative cutting minutes of the tool at each pass.
        ratio: (p,) wear indicator from ``wear_ratio`` (breakage passes removed).
        limit: indicator value that means "change the tool" (calibrated as the ratio at the VB
            criterion, e.g. 1.45 when the load rises 45 % by VB 0.3 mm).
        window: estimate the current indicator level from the most recent ``window`` passes
            (default: the latest quarter, at least 5).
        model_cv: relative uncertainty of the proportional-wear rule itself (0.15 reproduces
            the 95 % coverage on the simulated validation set, docs/tool-wear.md).
        taylor_life_minutes: expected life T from Taylor at the tool's cutting speed; its scatter
            is ``taylor_cv`` x T (tool-to-tool spread of 20-30 % is usual).
        cut_minutes_per_hour: cutting minutes per wall-clock hour, to predict the change time.
        now: wall-clock seconds of the last pass, for ``change_at``.
    """
    t = np.asarray(minutes_in_cut, dtype=np.float64)
    r = np.asarray(ratio, dtype=np.float64)
    if t.ndim != 1 or t.shape != r.shape:
        raise ValueError("minutes_in_cut and ratio must be 1-D of the same length")
    if t.size == 0 and taylor_life_minutes is None:
        raise ValueError("no passes and no Taylor life: nothing to estimate from")
    t_now = float(t.max()) if t.size else 0.0
    trend: tuple[float, float] | None = None
    if t.size >= 5:
        k = window if window is not None else max(5, t.size // 4)
        level = _level_life(t[-k:], r[-k:], limit, model_cv)
        if level is not None:
            trend = (max(level[0], t_now), level[1])
    estimates: list[tuple[float, float]] = []
    trend_rul = taylor_rul = None
    if trend is not None:
        trend_rul = max(trend[0] - t_now, 0.0)
        estimates.append((trend_rul, max(trend[1], 1e-9)))
    if taylor_life_minutes is not None:
        taylor_rul = max(taylor_life_minutes - t_now, 0.0)
        estimates.append((taylor_rul, max(taylor_cv * taylor_life_minutes, 1e-9)))
    if not estimates:
        raise ValueError("the wear indicator shows no rising trend yet and no Taylor life is given")
    weights = np.array([1.0 / sd**2 for _, sd in estimates])
    values = np.array([v for v, _ in estimates])
    rul = float(np.sum(weights * values) / weights.sum())
    sd = float(np.sqrt(1.0 / weights.sum()))
    source = "fused" if len(estimates) == 2 else ("trend" if trend is not None else "taylor")
    change_at = change_sd = None
    if cut_minutes_per_hour is not None and now is not None and cut_minutes_per_hour > 0:
        change_at = now + rul / cut_minutes_per_hour * 3600.0
        change_sd = sd / cut_minutes_per_hour * 3600.0
    return RulEstimate(
        now_minutes=t_now,
        rul_minutes=rul,
        sd_minutes=sd,
        lower_minutes=max(rul - _Z95 * sd, 0.0),
        upper_minutes=rul + _Z95 * sd,
        source=source,
        trend_rul_minutes=trend_rul,
        taylor_rul_minutes=taylor_rul,
        change_at=change_at,
        change_at_sd=change_sd,
    )
