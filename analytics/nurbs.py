"""NURBS curves: validation from JSON-like dicts and vectorised evaluation with derivatives.

A curve is ``{"degree": p, "knots": [...], "control_points": [[x, y, z], ...], "weights": [...]}``
(weights optional: a plain B-spline). Any knot vector with len(knots) = n + p + 1 that does not
decrease is accepted; clamped vectors are the usual case. Curves are evaluated at a normalised
parameter t in [0, 1] mapped linearly onto the valid domain [knots[p], knots[n]], so that two
curves with different knot ranges can bound one ruled surface. Derivatives are with respect to t.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import factorial
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from analytics._checks import as_float_array, as_matrix

__all__ = ["NurbsCurve"]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class NurbsCurve:
    """A (possibly rational) B-spline curve in 3-D.

    ``knots`` shape (n + p + 1,), ``control_points`` shape (n, 3) in mm, ``weights`` shape (n,) > 0.
    """

    degree: int
    knots: FloatArray
    control_points: FloatArray
    weights: FloatArray

    @classmethod
    def from_dict(cls, data: Any, field: str = "curve") -> NurbsCurve:
        """Build and validate a curve from its JSON form; errors name ``field``."""
        if not isinstance(data, dict):
            raise ValueError(f"{field} must be an object with degree, knots and control_points")
        for key in ("degree", "knots", "control_points"):
            if key not in data:
                raise ValueError(f"{field}.{key} is missing")
        degree = data["degree"]
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
            raise ValueError(f"{field}.degree must be an integer >= 1, got {degree!r}")
        points = as_matrix(
            data["control_points"],
            f"{field}.control_points",
            columns=3,
            min_rows=degree + 1,
            row_name="control point",
            column_hint=" ([x, y, z])",
        )
        n = points.shape[0]
        knots = as_float_array(data["knots"], f"{field}.knots")
        if knots.shape[0] != n + degree + 1:
            raise ValueError(
                f"{field}.knots has {knots.shape[0]} values; a degree-{degree} curve with {n} "
                f"control points needs {n + degree + 1}"
            )
        if np.any(np.diff(knots) < 0):
            raise ValueError(f"{field}.knots must not decrease")
        if not knots[n] > knots[degree]:
            raise ValueError(f"{field}.knots leave an empty parameter domain")
        if data.get("weights") is None:
            weights = np.ones(n)
        else:
            weights = as_float_array(data["weights"], f"{field}.weights")
            if weights.shape[0] != n:
                raise ValueError(
                    f"{field}.weights has {weights.shape[0]} values, expected {n} (one per "
                    "control point)"
                )
            if np.any(weights <= 0):
                raise ValueError(f"{field}.weights must all be positive")
        return cls(degree=degree, knots=knots, control_points=points, weights=weights)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form accepted by ``from_dict``."""
        return {
            "degree": self.degree,
            "knots": self.knots.tolist(),
            "control_points": self.control_points.tolist(),
            "weights": self.weights.tolist(),
        }

    @property
    def domain(self) -> tuple[float, float]:
        """The valid parameter range [knots[p], knots[n]] in the curve's own knot units."""
        n = self.control_points.shape[0]
        return float(self.knots[self.degree]), float(self.knots[n])

    def _basis_derivatives(self, u: FloatArray, nd: int) -> tuple[NDArray[np.intp], FloatArray]:
        """Spans (N,) and basis derivatives (nd + 1, p + 1, N) at u (Piegl & Tiller A2.3,
        vectorised over the N parameters)."""
        p, kv = self.degree, self.knots
        n = self.control_points.shape[0]
        span = np.clip(np.searchsorted(kv, u, side="right") - 1, p, n - 1)
        m = u.shape[0]
        ndu = np.zeros((p + 1, p + 1, m))
        ndu[0, 0] = 1.0
        left = np.zeros((p + 1, m))
        right = np.zeros((p + 1, m))
        for j in range(1, p + 1):
            left[j] = u - kv[span + 1 - j]
            right[j] = kv[span + j] - u
            saved = np.zeros(m)
            for r in range(j):
                ndu[j, r] = right[r + 1] + left[j - r]
                temp = ndu[r, j - 1] / ndu[j, r]
                ndu[r, j] = saved + right[r + 1] * temp
                saved = left[j - r] * temp
            ndu[j, j] = saved
        ders = np.zeros((nd + 1, p + 1, m))
        ders[0] = ndu[:, p]
        for r in range(p + 1):
            a = np.zeros((2, p + 1, m))
            a[0, 0] = 1.0
            s1, s2 = 0, 1
            for k in range(1, nd + 1):
                d = np.zeros(m)
                rk, pk = r - k, p - k
                if r >= k:
                    a[s2, 0] = a[s1, 0] / ndu[pk + 1, rk]
                    d = a[s2, 0] * ndu[rk, pk]
                j1 = 1 if rk >= -1 else -rk
                j2 = k - 1 if r - 1 <= pk else p - r
                for j in range(j1, j2 + 1):
                    a[s2, j] = (a[s1, j] - a[s1, j - 1]) / ndu[pk + 1, rk + j]
                    d = d + a[s2, j] * ndu[rk + j, pk]
                if r <= pk:
                    a[s2, k] = -a[s1, k - 1] / ndu[pk + 1, r]
                    d = d + a[s2, k] * ndu[r, pk]
                ders[k, r] = d
                s1, s2 = s2, s1
        for k in range(1, nd + 1):
            ders[k] *= factorial(p) / factorial(p - k)
        return span, ders

    def derivatives(self, t: ArrayLike, order: int = 2) -> FloatArray:
        """Points and derivatives at normalised parameters ``t`` (shape (N,), clipped to [0, 1]).

        Returns shape (order + 1, N, 3): [C(t), C'(t), C''(t), ...], derivatives w.r.t. t.
        """
        tt = np.clip(np.atleast_1d(np.asarray(t, dtype=np.float64)), 0.0, 1.0)
        a, b = self.domain
        u = a + tt * (b - a)
        span, ders = self._basis_derivatives(u, order)
        p = self.degree
        idx = span[:, None] - p + np.arange(p + 1)[None, :]
        pw = np.concatenate(
            [self.control_points * self.weights[:, None], self.weights[:, None]], axis=1
        )[idx]  # (N, p + 1, 4)
        hom = np.einsum("kjn,njd->knd", ders, pw)  # (order + 1, N, 4)
        w = hom[:, :, 3:4]
        out = np.empty((order + 1, tt.shape[0], 3))
        # Derivatives of the rational curve from the homogeneous ones (Piegl & Tiller A4.2).
        for k in range(order + 1):
            v = hom[k, :, :3].copy()
            for i in range(1, k + 1):
                v -= factorial(k) / (factorial(i) * factorial(k - i)) * w[i] * out[k - i]
            out[k] = v / w[0]
        scale = (b - a) ** np.arange(order + 1)
        result: FloatArray = out * scale[:, None, None]
        return result

    def evaluate(self, t: ArrayLike) -> FloatArray:
        """Points C(t), shape (N, 3), at normalised parameters t (shape (N,))."""
        points: FloatArray = self.derivatives(t, order=0)[0]
        return points
