"""Generators of accuracy-measurement data with known ground truth.

Each generator returns the input document exactly as a user would hand it to ``arbor check``
(JSON-ready dicts, lengths in mm) so tests and demos exercise the same path as real files.
Randomness comes only from the ``seed`` argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from analytics.s_piece import SPieceGeometry

__all__ = ["circle_path", "iso230_2_runs", "s_piece_points"]

FloatArray = NDArray[np.float64]


def iso230_2_runs(
    targets: ArrayLike,
    *,
    runs: int = 5,
    scale_error: float = 0.0,
    backlash: float = 0.0,
    periodic_amplitude: float = 0.0,
    periodic_pitch: float = 10.0,
    noise_sigma: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Laser-interferometer runs of one axis: measured positions for up and down approaches.

    The systematic deviation is ``scale_error * P`` (mm/mm) plus a periodic (lead screw) term;
    approaching from above shifts every reading by ``-backlash`` (so B_i = ``backlash``); every
    reading gets Gaussian noise of ``noise_sigma`` mm. Returns ``{"targets", "up", "down",
    "units": "mm"}`` with ``up``/``down`` shaped (runs, m).
    """
    p = np.asarray(targets, dtype=np.float64)
    rng = np.random.default_rng(seed)
    systematic = scale_error * p + periodic_amplitude * np.sin(2 * np.pi * p / periodic_pitch)
    up = p + systematic + noise_sigma * rng.standard_normal((runs, p.shape[0]))
    down = p + systematic - backlash + noise_sigma * rng.standard_normal((runs, p.shape[0]))
    return {"targets": p.tolist(), "up": up.tolist(), "down": down.tolist(), "units": "mm"}


def circle_path(
    radius: float,
    *,
    n: int = 720,
    center: tuple[float, float] = (0.0, 0.0),
    ellipse: float = 0.0,
    ellipse_angle: float = 0.0,
    backlash_step: float = 0.0,
    noise_sigma: float = 0.0,
    direction: str = "ccw",
    start_angle: float = 0.0,
    sweep: float = 2 * np.pi,
    seed: int = 0,
) -> dict[str, Any]:
    """x/y points of a circular test path.

    ``ellipse`` d gives semi-axes radius + d and radius - d (G = 2d about the LSC centre);
    ``backlash_step`` adds a radial step of that size on the half of the circle where the x axis
    reverses direction late (x > 0 for cw, x < 0 for ccw), so H between a cw and a ccw run is the
    step. Angles in radians.
    """
    if direction not in ("cw", "ccw"):
        raise ValueError(f"direction must be 'cw' or 'ccw', got {direction!r}")
    rng = np.random.default_rng(seed)
    theta = start_angle + np.linspace(0.0, sweep, n, endpoint=sweep < 2 * np.pi)
    if direction == "cw":
        theta = theta[::-1]
    r = radius + ellipse * np.cos(2 * (theta - ellipse_angle))
    side = np.cos(theta) > 0 if direction == "cw" else np.cos(theta) < 0
    r = r + backlash_step * side + noise_sigma * rng.standard_normal(n)
    x = center[0] + r * np.cos(theta)
    y = center[1] + r * np.sin(theta)
    return {"x": x.tolist(), "y": y.tolist(), "direction": direction}


def _rotation(angles_rad: ArrayLike) -> FloatArray:
    a, b, c = np.asarray(angles_rad, dtype=np.float64)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    rot: FloatArray = rz @ ry @ rx
    return rot


def s_piece_points(
    geometry: SPieceGeometry,
    *,
    heights: ArrayLike = (0.2, 0.5, 0.8),
    points_per_line: int = 33,
    t_range: tuple[float, float] = (0.03, 0.97),
    offset: float = 0.0,
    second_flank_heights: ArrayLike = (),
    thickness_error: float = 0.0,
    rotation_deg: ArrayLike = (0.0, 0.0, 0.0),
    translation: ArrayLike = (0.0, 0.0, 0.0),
    noise_sigma: float = 0.0,
    label_flanks: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """CMM points on lines of constant height v across the flank.

    Points sit at ``offset`` mm along the outward normal of the nominal flank (first-flank lines at
    each of ``heights``); lines at ``second_flank_heights`` lie on the second flank of a wall
    ``thickness_error`` mm too thick, shifted by the same ``offset`` (their deviation is
    ``thickness_error - offset``: a sideways shift moves both faces the same way).
    Then the whole set is rotated by ``rotation_deg`` (about x, y, z, applied about the centroid
    of the points) and translated, and noise of ``noise_sigma`` mm is added along each point's
    normal. Returns ``{"lines": [{"name", "points", "flank"}], "units": "mm"}`` plus ``"truth"``:
    the per-line deviations before rotation and noise. ``label_flanks=False`` leaves the flank to
    be inferred by the evaluation.
    """
    rng = np.random.default_rng(seed)
    t = np.linspace(t_range[0], t_range[1], points_per_line)
    raw: list[tuple[str, str, FloatArray, FloatArray, FloatArray]] = []
    for k, h in enumerate(np.asarray(heights, dtype=np.float64)):
        v = np.full_like(t, h)
        n = geometry.outward_normal(t, v)
        raw.append(
            (
                f"flank 1 z{k + 1}",
                "first",
                geometry.surface(t, v) + offset * n,
                n,
                np.full_like(t, offset),
            )
        )
    for k, h in enumerate(np.asarray(second_flank_heights, dtype=np.float64)):
        v = np.full_like(t, h)
        n = geometry.outward_normal(t, v)
        depth = geometry.thickness + thickness_error
        pts = geometry.surface(t, v) + (offset - depth) * n
        raw.append(
            (f"flank 2 z{k + 1}", "second", pts, -n, np.full_like(t, thickness_error - offset))
        )
    allpts = np.concatenate([r[2] for r in raw])
    pivot = allpts.mean(axis=0)
    rot = _rotation(np.radians(np.asarray(rotation_deg, dtype=np.float64)))
    shift = np.asarray(translation, dtype=np.float64)
    lines = []
    truth = []
    for name, flank, pts, n, dev in raw:
        moved = (pts - pivot) @ rot.T + pivot + shift
        noise: FloatArray = noise_sigma * rng.standard_normal((t.shape[0], 1))
        moved = moved + noise * n
        line: dict[str, Any] = {"name": name, "points": moved.tolist()}
        if label_flanks:
            line["flank"] = flank
        lines.append(line)
        truth.append({"name": name, "deviations": dev.tolist()})
    return {"lines": lines, "units": "mm", "truth": truth}
