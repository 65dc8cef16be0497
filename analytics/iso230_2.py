"""ISO 230-2: positioning accuracy and repeatability of a numerically controlled axis.

Follows /work/shared/reference/iso230-2.md symbol for symbol. Deviations are x_ij = P_ij - P_i
(measured minus target); s is the sample standard deviation (divisor n - 1); every result is in
the same length unit as the input (the command line converts to mm first and says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from analytics._checks import as_float_array, as_matrix

__all__ = ["Iso2302Result", "evaluate_iso230_2"]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Iso2302Result:
    """Per-position arrays have shape (m,) in target order; axis figures are scalars.

    ``mean_up`` is xbar_i_up, ``s_up`` is s_i_up, ``R_i_up`` = 4 s_i_up, ``B_i`` = xbar_i_up -
    xbar_i_down, ``R_i`` the bidirectional repeatability at each position.
    """

    targets: FloatArray
    runs_up: int
    runs_down: int
    mean_up: FloatArray
    mean_down: FloatArray
    mean: FloatArray
    s_up: FloatArray
    s_down: FloatArray
    R_i_up: FloatArray
    R_i_down: FloatArray
    R_i: FloatArray
    B_i: FloatArray
    A: float
    A_up: float
    A_down: float
    B: float
    B_mean: float
    E: float
    E_up: float
    E_down: float
    M: float
    R: float
    R_up: float
    R_down: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: axis figures on top, per-position arrays under ``per_position``."""
        axis = {
            k: getattr(self, k)
            for k in ("A", "A_up", "A_down", "B", "B_mean", "E", "E_up", "E_down", "M")
        }
        axis |= {"R": self.R, "R_up": self.R_up, "R_down": self.R_down}
        per_position = {
            "target": self.targets.tolist(),
            "mean_up": self.mean_up.tolist(),
            "mean_down": self.mean_down.tolist(),
            "mean": self.mean.tolist(),
            "s_up": self.s_up.tolist(),
            "s_down": self.s_down.tolist(),
            "R_up": self.R_i_up.tolist(),
            "R_down": self.R_i_down.tolist(),
            "R": self.R_i.tolist(),
            "B": self.B_i.tolist(),
        }
        return {
            **{k: float(v) for k, v in axis.items()},
            "runs_up": self.runs_up,
            "runs_down": self.runs_down,
            "positions": len(self.targets),
            "per_position": per_position,
        }


def evaluate_iso230_2(
    targets: ArrayLike,
    up: ArrayLike,
    down: ArrayLike,
    *,
    values: str = "positions",
) -> Iso2302Result:
    """Evaluate one axis by ISO 230-2.

    Args:
        targets: shape (m,), the target positions P_i, m >= 2.
        up: shape (n_up, m), one row per run approaching in the positive direction, n_up >= 2.
        down: shape (n_down, m), likewise for the negative direction, n_down >= 2.
        values: ``"positions"`` if ``up``/``down`` are measured positions P_ij (deviation = P_ij -
            P_i), ``"deviations"`` if they already are x_ij.

    Raises:
        ValueError: wrong shapes, fewer than 2 targets or runs, non-finite values.
    """
    p = as_float_array(targets, "targets", min_len=2)
    m = p.shape[0]
    hint = f" (one per target; there are {m} targets)"
    x_up = as_matrix(up, "up", columns=m, min_rows=2, row_name="run", column_hint=hint)
    x_dn = as_matrix(down, "down", columns=m, min_rows=2, row_name="run", column_hint=hint)
    if values == "positions":
        x_up = x_up - p
        x_dn = x_dn - p
    elif values != "deviations":
        raise ValueError(f"values must be 'positions' or 'deviations', got {values!r}")

    mean_up = x_up.mean(axis=0)
    mean_dn = x_dn.mean(axis=0)
    s_up = x_up.std(axis=0, ddof=1)
    s_dn = x_dn.std(axis=0, ddof=1)
    r_i_up = 4.0 * s_up
    r_i_dn = 4.0 * s_dn
    mean = (mean_up + mean_dn) / 2.0
    b_i = mean_up - mean_dn
    r_i = np.maximum.reduce([2.0 * s_up + 2.0 * s_dn + np.abs(b_i), r_i_up, r_i_dn])

    both_means = np.concatenate([mean_up, mean_dn])
    upper_up, lower_up = mean_up + 2.0 * s_up, mean_up - 2.0 * s_up
    upper_dn, lower_dn = mean_dn + 2.0 * s_dn, mean_dn - 2.0 * s_dn
    return Iso2302Result(
        targets=p,
        runs_up=int(x_up.shape[0]),
        runs_down=int(x_dn.shape[0]),
        mean_up=mean_up,
        mean_down=mean_dn,
        mean=mean,
        s_up=s_up,
        s_down=s_dn,
        R_i_up=r_i_up,
        R_i_down=r_i_dn,
        R_i=r_i,
        B_i=b_i,
        A=float(max(upper_up.max(), upper_dn.max()) - min(lower_up.min(), lower_dn.min())),
        A_up=float(upper_up.max() - lower_up.min()),
        A_down=float(upper_dn.max() - lower_dn.min()),
        B=float(np.abs(b_i).max()),
        B_mean=float(b_i.mean()),
        E=float(both_means.max() - both_means.min()),
        E_up=float(np.ptp(mean_up)),
        E_down=float(np.ptp(mean_dn)),
        M=float(np.ptp(mean)),
        R=float(r_i.max()),
        R_up=float(r_i_up.max()),
        R_down=float(r_i_dn.max()),
    )
