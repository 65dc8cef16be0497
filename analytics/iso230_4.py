"""ISO 230-4: circular tests (ballbar, grid encoder) on x/y points.

Follows /work/shared/reference/iso230-4.md. All lengths are in the input's unit (the command line
converts to mm). Angles are radians, counter-clockwise from +x.

- ``fit_circle``: least-squares circle (geometric fit, Gauss-Newton seeded by the Kasa fit).
- ``min_zone_circle``: minimum-zone (Chebyshev) centre by sequential linear programming.
- ``evaluate_circle``: G (about the LSC centre, and about the minimum-zone centre), F_max/F_min
  against a nominal circle.
- ``evaluate_circular_test``: cw, ccw and bidirectional G, and the hysteresis H.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import linprog

from analytics._checks import as_float_array

__all__ = [
    "CircleFit",
    "CircleResult",
    "CircularTestResult",
    "evaluate_circle",
    "evaluate_circular_test",
    "fit_circle",
    "hysteresis",
    "min_zone_circle",
]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class CircleFit:
    """A fitted circle: ``center`` (2,), ``radius``, ``residuals`` (n,) = |p - c| - r."""

    center: FloatArray
    radius: float
    residuals: FloatArray


def _points(x: ArrayLike, y: ArrayLike, field: str = "") -> tuple[FloatArray, FloatArray]:
    xs = as_float_array(x, f"{field}x", min_len=3)
    ys = as_float_array(y, f"{field}y", min_len=3)
    if xs.shape != ys.shape:
        raise ValueError(
            f"{field}x and {field}y must have the same length, got {xs.shape[0]} and {ys.shape[0]}"
        )
    return xs, ys


def fit_circle(x: ArrayLike, y: ArrayLike) -> CircleFit:
    """Least-squares circle minimising sum((|p_i - c| - r)^2).

    Args:
        x, y: shape (n,), n >= 3 points, not all on one line.
    """
    xs, ys = _points(x, y)
    # Work about the centroid: machine coordinates (hundreds of mm) with micrometre deviations
    # otherwise lose digits in the normal equations.
    x0, y0 = float(xs.mean()), float(ys.mean())
    u, v = xs - x0, ys - y0
    scale = float(np.sqrt(np.mean(u * u + v * v)))
    if scale == 0.0:
        raise ValueError("all points coincide; a circle needs at least 3 distinct points")
    u, v = u / scale, v / scale
    a_mat = np.column_stack([2.0 * u, 2.0 * v, np.ones_like(u)])
    sol, _, rank, sv = np.linalg.lstsq(a_mat, u * u + v * v, rcond=None)
    if rank < 3 or sv[-1] < 1e-9 * sv[0]:
        raise ValueError("the points are collinear; no circle fits them")
    cx, cy = float(sol[0]), float(sol[1])
    r = float(np.sqrt(sol[2] + cx * cx + cy * cy))
    for _ in range(100):
        dx, dy = u - cx, v - cy
        d = np.hypot(dx, dy)
        d = np.where(d == 0.0, 1e-300, d)
        res = d - r
        jac = np.column_stack([-dx / d, -dy / d, -np.ones_like(d)])
        step, *_ = np.linalg.lstsq(jac, -res, rcond=None)
        cx, cy, r = cx + float(step[0]), cy + float(step[1]), r + float(step[2])
        if float(np.abs(step).max()) < 1e-15:
            break
    center = np.array([x0 + cx * scale, y0 + cy * scale])
    radius = r * scale
    residuals = np.hypot(xs - center[0], ys - center[1]) - radius
    return CircleFit(center=center, radius=float(radius), residuals=residuals)


def min_zone_circle(
    x: ArrayLike, y: ArrayLike, start: ArrayLike | None = None
) -> tuple[FloatArray, float]:
    """Minimum-zone (Chebyshev) centre: the centre minimising max_i r_i - min_i r_i.

    Solved by sequential linear programming on the linearised radii, started from ``start``
    (default: the least-squares centre). Returns (centre shape (2,), zone width).
    """
    xs, ys = _points(x, y)
    c = fit_circle(xs, ys).center if start is None else np.asarray(start, dtype=np.float64)
    best_c = c.copy()
    best_w = float(np.ptp(np.hypot(xs - c[0], ys - c[1])))
    trust = max(best_w, 1e-12)
    cost = np.array([0.0, 0.0, -1.0, 1.0])  # variables: dcx, dcy, t_lo, t_hi
    for _ in range(50):
        dx, dy = xs - c[0], ys - c[1]
        r0 = np.hypot(dx, dy)
        ux, uy = dx / r0, dy / r0
        # r_i(c + d) ~ r0_i - u_i . d must stay within [t_lo, t_hi].
        ones, zeros = np.ones_like(r0), np.zeros_like(r0)
        a_ub = np.vstack(
            [
                np.column_stack([-ux, -uy, zeros, -ones]),
                np.column_stack([ux, uy, ones, zeros]),
            ]
        )
        b_ub = np.concatenate([-r0, r0])
        bounds = [(-trust, trust), (-trust, trust), (None, None), (None, None)]
        lp = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
        if lp.status != 0:
            break
        step = np.asarray(lp.x[:2], dtype=np.float64)
        cand = c + step
        w = float(np.ptp(np.hypot(xs - cand[0], ys - cand[1])))
        if w < best_w:
            best_c, best_w = cand, w
            c = cand
        else:
            trust /= 4.0
        if float(np.hypot(*step)) < 1e-12 * max(1.0, float(r0.mean())) or trust < 1e-15:
            break
    return best_c, best_w


@dataclass(frozen=True, slots=True)
class CircleResult:
    """One path: LSC centre and radius, G about the LSC centre (``G``) and about the
    minimum-zone centre (``G_min_zone``), and F_max/F_min when a nominal circle is given."""

    n_points: int
    center: FloatArray
    radius: float
    G: float
    center_min_zone: FloatArray
    G_min_zone: float
    radial_residuals: FloatArray
    nominal_center: FloatArray | None
    nominal_radius: float | None
    F_max: float | None
    F_min: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (residual array omitted)."""
        out: dict[str, Any] = {
            "n_points": self.n_points,
            "center": self.center.tolist(),
            "radius": self.radius,
            "G": self.G,
            "G_center": "least_squares",
            "center_min_zone": self.center_min_zone.tolist(),
            "G_min_zone": self.G_min_zone,
        }
        if self.nominal_radius is not None and self.nominal_center is not None:
            out |= {
                "nominal_center": self.nominal_center.tolist(),
                "nominal_radius": self.nominal_radius,
                "F_max": self.F_max,
                "F_min": self.F_min,
            }
        return out


def _nominal(
    nominal_center: ArrayLike | None, nominal_radius: float | None
) -> tuple[FloatArray | None, float | None]:
    if nominal_radius is None:
        if nominal_center is not None:
            raise ValueError("nominal_center given without nominal_radius; F needs both")
        return None, None
    r0 = float(nominal_radius)
    if not np.isfinite(r0) or r0 <= 0.0:
        raise ValueError(f"nominal_radius must be a positive number, got {nominal_radius!r}")
    if nominal_center is None:
        return np.zeros(2), r0
    c0 = as_float_array(nominal_center, "nominal_center", min_len=2)
    if c0.shape != (2,):
        raise ValueError(f"nominal_center must be [x, y], got {c0.shape[0]} values")
    return c0, r0


def evaluate_circle(
    x: ArrayLike,
    y: ArrayLike,
    *,
    nominal_center: ArrayLike | None = None,
    nominal_radius: float | None = None,
) -> CircleResult:
    """Evaluate one circular path, x and y of shape (n,), n >= 3.

    ``nominal_center`` defaults to (0, 0) when only ``nominal_radius`` is given.
    F_max/F_min are max/min of |p - c0| - R0 (positive outside the nominal circle).
    """
    xs, ys = _points(x, y)
    fit = fit_circle(xs, ys)
    g_lsc = float(np.ptp(fit.residuals))
    c_mz, g_mz = min_zone_circle(xs, ys, start=fit.center)
    if g_mz > g_lsc:  # the LP cannot do worse than its start, but keep the invariant explicit
        c_mz, g_mz = fit.center, g_lsc
    c0, r0 = _nominal(nominal_center, nominal_radius)
    f_max = f_min = None
    if c0 is not None and r0 is not None:
        f = np.hypot(xs - c0[0], ys - c0[1]) - r0
        f_max, f_min = float(f.max()), float(f.min())
    return CircleResult(
        n_points=int(xs.shape[0]),
        center=fit.center,
        radius=fit.radius,
        G=g_lsc,
        center_min_zone=c_mz,
        G_min_zone=g_mz,
        radial_residuals=fit.residuals,
        nominal_center=c0,
        nominal_radius=r0,
        F_max=f_max,
        F_min=f_min,
    )


def _radius_at(theta: FloatArray, radius: FloatArray, at: FloatArray, max_gap: float) -> FloatArray:
    """Periodic linear interpolation of radius(theta) at ``at``; NaN where the samples around
    ``at`` are further apart than ``max_gap`` (a partial arc must not be bridged)."""
    order = np.argsort(theta)
    th, rr = theta[order], radius[order]
    th_ext = np.concatenate([th[-1:] - 2 * np.pi, th, th[:1] + 2 * np.pi])
    rr_ext = np.concatenate([rr[-1:], rr, rr[:1]])
    k = np.clip(np.searchsorted(th_ext, at), 1, th_ext.shape[0] - 1)
    gap = th_ext[k] - th_ext[k - 1]
    out = np.interp(at, th_ext, rr_ext)
    return np.where(gap <= max_gap, out, np.nan)


def hysteresis(
    x_cw: ArrayLike, y_cw: ArrayLike, x_ccw: ArrayLike, y_ccw: ArrayLike, center: ArrayLike
) -> float:
    """Circular hysteresis H: the largest |r_cw(theta) - r_ccw(theta)| about ``center``.

    Each path is interpolated at the other's angles; angles not covered by both paths are skipped.
    """
    c = np.asarray(center, dtype=np.float64)
    xa, ya = _points(x_cw, y_cw, "cw.")
    xb, yb = _points(x_ccw, y_ccw, "ccw.")
    ta, ra = np.arctan2(ya - c[1], xa - c[0]), np.hypot(xa - c[0], ya - c[1])
    tb, rb = np.arctan2(yb - c[1], xb - c[0]), np.hypot(xb - c[0], yb - c[1])

    def spacing(t: FloatArray) -> float:
        s = np.diff(np.sort(t))
        return float(np.median(s)) if s.size else np.pi

    max_gap = 5.0 * max(spacing(ta), spacing(tb))
    d1 = ra - _radius_at(tb, rb, ta, max_gap)
    d2 = _radius_at(ta, ra, tb, max_gap) - rb
    d = np.concatenate([d1, d2])
    d = d[np.isfinite(d)]
    if d.size == 0:
        raise ValueError("the cw and ccw paths share no angular range; H is undefined")
    return float(np.abs(d).max())


@dataclass(frozen=True, slots=True)
class CircularTestResult:
    """cw and ccw paths evaluated separately and together (``bidirectional``), plus H."""

    cw: CircleResult
    ccw: CircleResult
    bidirectional: CircleResult
    H: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the bidirectional figures at top level, each path under its name."""
        out = self.bidirectional.to_dict()
        out |= {
            "G_cw": self.cw.G,
            "G_ccw": self.ccw.G,
            "G_bidirectional": self.bidirectional.G,
            "H": self.H,
            "H_center": "least_squares_bidirectional",
            "cw": self.cw.to_dict(),
            "ccw": self.ccw.to_dict(),
        }
        return out


def evaluate_circular_test(
    x_cw: ArrayLike,
    y_cw: ArrayLike,
    x_ccw: ArrayLike,
    y_ccw: ArrayLike,
    *,
    nominal_center: ArrayLike | None = None,
    nominal_radius: float | None = None,
) -> CircularTestResult:
    """Evaluate a cw and a ccw run of the same circle; G bidirectional uses both paths together
    about their common LSC centre, H is measured about that centre too."""
    xa, ya = _points(x_cw, y_cw, "cw.")
    xb, yb = _points(x_ccw, y_ccw, "ccw.")
    kw: dict[str, Any] = {"nominal_center": nominal_center, "nominal_radius": nominal_radius}
    cw = evaluate_circle(xa, ya, **kw)
    ccw = evaluate_circle(xb, yb, **kw)
    both = evaluate_circle(np.concatenate([xa, xb]), np.concatenate([ya, yb]), **kw)
    h = hysteresis(xa, ya, xb, yb, both.center)
    return CircularTestResult(cw=cw, ccw=ccw, bidirectional=both, H=h)
