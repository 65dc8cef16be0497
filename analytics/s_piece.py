"""Evaluation of the ISO 10791-7 Annex A S-shaped test piece against a nominal NURBS geometry.

Geometry (mm): the nominal flank is the ruled surface S(t, v) = (1 - v) C_bottom(t) + v C_top(t),
t in [0, 1] along the curves (each curve's own knot domain normalised), v from bottom (0) to
top (1).

Sign convention: N(t, v) = dS/dt x dS/dv. Walking along the bottom curve with the top above you,
N points to your right. ``material_side`` says on which side of the nominal flank the flange
material lies ("left", the default, or "right"); the outward normal n points away from the material,
and a deviation is positive when the measured point lies outside the material (too much material
left on the flank), negative when the flank was cut too deep.

The second flank is the nominal flank offset by ``thickness`` into the material. A measured line
is on the second flank when it says so (``"flank": "second"``) or, if it does not, when the median
of its signed distances from the nominal flank is deeper than half the thickness. Deviations on the
second flank use that flank's own outward normal (-n), so the sign rule is the same on both faces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from analytics._checks import as_matrix, to_mm
from analytics.nurbs import NurbsCurve

__all__ = [
    "BestFit",
    "Projection",
    "SPieceGeometry",
    "SPieceLine",
    "SPieceResult",
    "evaluate_s_piece",
    "parse_measurement",
]

FloatArray = NDArray[np.float64]

_GRID = 400  # rulings sampled for the coarse search; refined by Newton afterwards
_CHUNK = 2048  # points per block in the coarse search, to bound memory at points x rulings


@dataclass(frozen=True, slots=True)
class SPieceGeometry:
    """Nominal S test piece: bottom and top guide curves, wall thickness (mm) and tolerances.

    ``tolerances`` keys used: ``profile`` (width in mm of the profile zone centred on the nominal,
    ISO 1101 style) and ``thickness`` (+/- mm on the wall thickness). Others are kept and reported.
    """

    bottom: NurbsCurve
    top: NurbsCurve
    thickness: float
    tolerances: dict[str, float]
    material_side: str = "left"
    description: str = ""

    @classmethod
    def from_dict(cls, data: Any) -> SPieceGeometry:
        """Validate the JSON form ``{"bottom": curve, "top": curve, "thickness": mm,
        "tolerances": {...}, "material_side": "left"|"right"}``."""
        if not isinstance(data, dict):
            raise ValueError("geometry must be a JSON object with bottom, top and thickness")
        for key in ("bottom", "top", "thickness"):
            if key not in data:
                raise ValueError(f"geometry.{key} is missing")
        thickness = data["thickness"]
        if isinstance(thickness, bool) or not isinstance(thickness, (int, float)):
            raise ValueError(f"geometry.thickness must be a number in mm, got {thickness!r}")
        if not np.isfinite(thickness) or thickness < 0:
            raise ValueError(f"geometry.thickness must be >= 0 mm, got {thickness!r}")
        tol_in = data.get("tolerances") or {}
        if not isinstance(tol_in, dict):
            raise ValueError('geometry.tolerances must be an object such as {"profile": 0.05}')
        tolerances: dict[str, float] = {}
        for key, value in tol_in.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"geometry.tolerances.{key} must be a number >= 0, got {value!r}")
            tolerances[str(key)] = float(value)
        side = data.get("material_side", "left")
        if side not in ("left", "right"):
            raise ValueError(f"geometry.material_side must be 'left' or 'right', got {side!r}")
        description = data.get("description", "")
        return cls(
            bottom=NurbsCurve.from_dict(data["bottom"], "geometry.bottom"),
            top=NurbsCurve.from_dict(data["top"], "geometry.top"),
            thickness=float(thickness),
            tolerances=tolerances,
            material_side=side,
            description=description if isinstance(description, str) else "",
        )

    def surface(self, t: ArrayLike, v: ArrayLike) -> FloatArray:
        """Points S(t, v), shape (N, 3), for t, v of shape (N,)."""
        tt = np.asarray(t, dtype=np.float64)
        vv = np.asarray(v, dtype=np.float64)[:, None]
        return (1.0 - vv) * self.bottom.evaluate(tt) + vv * self.top.evaluate(tt)

    def outward_normal(self, t: ArrayLike, v: ArrayLike) -> FloatArray:
        """Unit normals (N, 3) of the nominal flank pointing away from the material."""
        tt = np.asarray(t, dtype=np.float64)
        vv = np.asarray(v, dtype=np.float64)[:, None]
        b = self.bottom.derivatives(tt, 1)
        c = self.top.derivatives(tt, 1)
        n = np.cross((1.0 - vv) * b[1] + vv * c[1], c[0] - b[0])
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        return n if self.material_side == "left" else -n


@dataclass(frozen=True, slots=True)
class Projection:
    """Closest points on the nominal flank: parameters t, v (N,), feet (N, 3), outward unit
    normals (N, 3), signed distances (N,) in mm along the outward normal, and whether the foot
    sits on the t = 0 or t = 1 edge (where the distance is not along the normal)."""

    t: FloatArray
    v: FloatArray
    foot: FloatArray
    normal: FloatArray
    distance: FloatArray
    on_edge: NDArray[np.bool_]


def _coarse(geom: SPieceGeometry, pts: FloatArray) -> tuple[FloatArray, FloatArray]:
    tg = np.linspace(0.0, 1.0, _GRID)
    b = geom.bottom.evaluate(tg)
    d = geom.top.evaluate(tg) - b
    dd = np.einsum("ij,ij->i", d, d)
    t0 = np.empty(pts.shape[0])
    v0 = np.empty(pts.shape[0])
    bb = np.einsum("ij,ij->i", b, b)
    bd = np.einsum("ij,ij->i", b, d)
    for lo in range(0, pts.shape[0], _CHUNK):
        p = pts[lo : lo + _CHUNK]
        # |p - b - v d|^2 expanded into matrix products, so the k x G search runs in BLAS.
        qd = p @ d.T - bd
        qq = np.einsum("ij,ij->i", p, p)[:, None] - 2.0 * (p @ b.T) + bb
        v = np.clip(qd / dd, -0.5, 1.5)
        k = np.argmin(qq - 2.0 * v * qd + v * v * dd, axis=1)
        rows = np.arange(k.shape[0])
        t0[lo : lo + _CHUNK] = tg[k]
        v0[lo : lo + _CHUNK] = v[rows, k]
    return t0, v0


def project(geom: SPieceGeometry, points: ArrayLike, iterations: int = 30) -> Projection:
    """Project points (N, 3) in mm onto the nominal flank: a coarse search over rulings, then
    Newton on f(t, v) = |S(t, v) - p|^2 / 2 with t kept in [0, 1] (v may run past the curves,
    which extends the rulings as straight lines)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    t, v = _coarse(geom, pts)
    for _ in range(iterations):
        b = geom.bottom.derivatives(t, 2)
        c = geom.top.derivatives(t, 2)
        vv = v[:, None]
        s = (1.0 - vv) * b[0] + vv * c[0]
        st = (1.0 - vv) * b[1] + vv * c[1]
        sv = c[0] - b[0]
        stt = (1.0 - vv) * b[2] + vv * c[2]
        stv = c[1] - b[1]
        r = s - pts
        g1 = np.einsum("ij,ij->i", r, st)
        g2 = np.einsum("ij,ij->i", r, sv)
        h11 = np.einsum("ij,ij->i", st, st) + np.einsum("ij,ij->i", r, stt)
        h12 = np.einsum("ij,ij->i", st, sv) + np.einsum("ij,ij->i", r, stv)
        h22 = np.einsum("ij,ij->i", sv, sv)
        det = h11 * h22 - h12 * h12
        ok = (det > 1e-12 * h22 * h22) & (h11 > 0)
        # Where the Hessian is not positive definite fall back to a scaled gradient step.
        dt = np.where(
            ok,
            -(h22 * g1 - h12 * g2) / np.where(ok, det, 1.0),
            -g1 / np.maximum(np.abs(h11), np.einsum("ij,ij->i", st, st)),
        )
        dv = np.where(ok, -(h11 * g2 - h12 * g1) / np.where(ok, det, 1.0), -g2 / h22)
        dt = np.clip(dt, -0.05, 0.05)
        t_new = np.clip(t + dt, 0.0, 1.0)
        v = v + dv
        step = np.abs(t_new - t) + np.abs(dv)
        t = t_new
        if float(step.max()) < 1e-10:  # Newton converges quadratically: done next step
            break
    foot = geom.surface(t, v)
    normal = geom.outward_normal(t, v)
    dist = np.einsum("ij,ij->i", pts - foot, normal)
    on_edge = (t <= 0.0) | (t >= 1.0)
    return Projection(t=t, v=v, foot=foot, normal=normal, distance=dist, on_edge=on_edge)


@dataclass(frozen=True, slots=True)
class SPieceLine:
    """One measuring line: ``deviations`` (N,) mm in input order, ``along`` (N,) mm travelled
    along the measured points, the flank it was evaluated on, and its profile figures."""

    name: str
    flank: str
    deviations: FloatArray
    along: FloatArray
    t: FloatArray
    v: FloatArray
    profile_deviation: float
    tolerance: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = self.deviations
        return {
            "name": self.name,
            "flank": self.flank,
            "n_points": int(d.shape[0]),
            "deviations": d.tolist(),
            "profile_deviation": self.profile_deviation,
            "max_abs_deviation": float(np.abs(d).max()),
            "min_deviation": float(d.min()),
            "max_deviation": float(d.max()),
            "mean_deviation": float(d.mean()),
            "std_deviation": float(d.std(ddof=1)) if d.shape[0] > 1 else 0.0,
            "form_range": float(np.ptp(d)),
            "pass": None if self.tolerance is None else self.profile_deviation <= self.tolerance,
        }


@dataclass(frozen=True, slots=True)
class BestFit:
    """Rigid registration (measured -> nominal): p' = rotation @ (p - pivot) + pivot + translation.

    ``lines`` are the deviations after the transform, evaluated like the raw ones.
    """

    rotation: FloatArray
    translation: FloatArray
    pivot: FloatArray
    lines: list[SPieceLine]
    max_abs_deviation: float
    profile_deviation: float
    passed: bool | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; the rotation also as a rotation vector in degrees."""
        rvec = _rotation_vector(self.rotation)
        return {
            "rotation_matrix": self.rotation.tolist(),
            "rotation_vector_deg": np.degrees(rvec).tolist(),
            "translation": self.translation.tolist(),
            "pivot": self.pivot.tolist(),
            "lines": [ln.to_dict() for ln in self.lines],
            "max_abs_deviation": self.max_abs_deviation,
            "profile_deviation": self.profile_deviation,
            "pass": self.passed,
        }


@dataclass(frozen=True, slots=True)
class SPieceResult:
    """Raw evaluation (the report of record) plus the optional best-fit evaluation beside it."""

    lines: list[SPieceLine]
    max_abs_deviation: float
    profile_deviation: float
    thickness_nominal: float
    thickness_measured: float | None
    thickness_deviation: float | None
    tolerances: dict[str, float]
    passed: bool | None
    best_fit: BestFit | None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with keys ``lines``, ``max_abs_deviation``, ``pass`` and the rest."""
        return {
            "units": "mm",
            "sign_convention": "positive = outside the material (along the outward normal)",
            "lines": [ln.to_dict() for ln in self.lines],
            "max_abs_deviation": self.max_abs_deviation,
            "profile_deviation": self.profile_deviation,
            "profile_definition": "2 x max |deviation| (zone centred on the nominal surface)",
            "thickness_nominal": self.thickness_nominal,
            "thickness_measured": self.thickness_measured,
            "thickness_deviation": self.thickness_deviation,
            "tolerances": self.tolerances,
            "pass": self.passed,
            "best_fit": None if self.best_fit is None else self.best_fit.to_dict(),
            "warnings": self.warnings,
        }


def parse_measurement(data: Any) -> tuple[list[str], list[FloatArray], list[str | None]]:
    """Validate ``{"lines": [{"name": str, "points": [[x, y, z], ...], "flank"?: ...}],
    "units"?: "mm"|"um"}``; returns names, point arrays in mm (each (N_k, 3)) and flank hints."""
    if not isinstance(data, dict) or "lines" not in data:
        raise ValueError("points file must be an object with a 'lines' list")
    lines = data["lines"]
    if not isinstance(lines, list) or not lines:
        raise ValueError("lines must be a non-empty list of {name, points}")
    factor = to_mm(data.get("units", "mm"))
    names: list[str] = []
    arrays: list[FloatArray] = []
    flanks: list[str | None] = []
    for k, line in enumerate(lines):
        if not isinstance(line, dict) or "points" not in line:
            raise ValueError(f"lines[{k}] must be an object with 'points'")
        name = line.get("name", f"line {k + 1}")
        names.append(str(name))
        arrays.append(
            factor
            * as_matrix(
                line["points"],
                f"lines[{k}].points",
                columns=3,
                min_rows=1,
                row_name="point",
                column_hint=" ([x, y, z])",
            )
        )
        flank = line.get("flank")
        if flank is not None and flank not in ("first", "second"):
            raise ValueError(f"lines[{k}].flank must be 'first' or 'second', got {flank!r}")
        flanks.append(flank)
    return names, arrays, flanks


def _rotation_vector(rot: FloatArray) -> FloatArray:
    angle = float(np.arccos(np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)))
    if angle < 1e-15:
        return np.zeros(3)
    axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    rvec: FloatArray = axis / (2.0 * np.sin(angle)) * angle
    return rvec


def _rodrigues(w: FloatArray) -> FloatArray:
    angle = float(np.linalg.norm(w))
    if angle == 0.0:
        return np.eye(3)
    k = w / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    rot: FloatArray = np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * (kx @ kx)
    return rot


def _signed(
    geom: SPieceGeometry, pts: FloatArray, second: NDArray[np.bool_]
) -> tuple[FloatArray, Projection]:
    proj = project(geom, pts)
    dev = np.where(second, -proj.distance - geom.thickness, proj.distance)
    return dev, proj


def _profile(dev: FloatArray) -> float:
    return 2.0 * float(np.abs(dev).max())


def _make_lines(
    names: list[str],
    bounds: list[tuple[int, int]],
    flanks: list[str],
    dev: FloatArray,
    proj: Projection,
    along: list[FloatArray],
    tol: float | None,
) -> list[SPieceLine]:
    return [
        SPieceLine(
            name=name,
            flank=flank,
            deviations=dev[a:b],
            along=al,
            t=proj.t[a:b],
            v=proj.v[a:b],
            profile_deviation=_profile(dev[a:b]),
            tolerance=tol,
        )
        for name, (a, b), flank, al in zip(names, bounds, flanks, along, strict=True)
    ]


def evaluate_s_piece(
    geometry: SPieceGeometry,
    lines: list[FloatArray],
    names: list[str] | None = None,
    flanks: list[str | None] | None = None,
    *,
    best_fit: bool = True,
) -> SPieceResult:
    """Evaluate measured lines against the nominal geometry.

    Args:
        geometry: the nominal piece.
        lines: one array (N_k, 3) of measured points in mm per measuring line, in the
            geometry's coordinate frame.
        names: line names (default "line 1", ...).
        flanks: per line "first", "second" or None (decide from the data, see module docstring).
        best_fit: also report a rigid 6-DOF least-squares registration beside the raw result.

    ``profile_deviation`` is 2 x max |deviation| (the width of the zone centred on the nominal that
    contains the points); pass requires it <= tolerances["profile"] and, when both flanks are
    measured, |thickness deviation| <= tolerances["thickness"]. Without tolerances ``pass`` is None.
    """
    if not lines:
        raise ValueError("at least one measuring line is needed")
    names = names or [f"line {k + 1}" for k in range(len(lines))]
    hints = flanks or [None] * len(lines)
    if len(names) != len(lines) or len(hints) != len(lines):
        raise ValueError("names and flanks must have one entry per line")
    arrays = [np.asarray(a, dtype=np.float64).reshape(-1, 3) for a in lines]
    pts = np.concatenate(arrays)
    sizes = [a.shape[0] for a in arrays]
    ends = np.cumsum(sizes)
    bounds = [(int(e - s), int(e)) for s, e in zip(sizes, ends, strict=True)]

    proj = project(geometry, pts)
    chosen: list[str] = []
    for (a, b), hint in zip(bounds, hints, strict=True):
        if hint is not None:
            chosen.append(hint)
        elif geometry.thickness > 0 and np.median(proj.distance[a:b]) < -geometry.thickness / 2:
            chosen.append("second")
        else:
            chosen.append("first")
    second = np.concatenate([np.full(s, f == "second") for s, f in zip(sizes, chosen, strict=True)])
    dev = np.where(second, -proj.distance - geometry.thickness, proj.distance)
    along = [
        np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(a, axis=0), axis=1))])
        for a in arrays
    ]
    tol_profile = geometry.tolerances.get("profile")
    tol_thick = geometry.tolerances.get("thickness")
    result_lines = _make_lines(names, bounds, chosen, dev, proj, along, tol_profile)

    warnings: list[str] = []
    if np.any(proj.on_edge):
        warnings.append(
            f"{int(proj.on_edge.sum())} point(s) lie beyond the ends of the guide curves; their "
            "deviation is the distance to the surface edge"
        )
    if float(np.abs(dev).max()) > max(1.0, geometry.thickness):
        warnings.append(
            "some points are more than 1 mm from the nominal surface: are the points in the "
            "geometry's coordinate frame and in the stated units?"
        )

    thick_meas = thick_dev = None
    if "first" in chosen and "second" in chosen:
        # Mean over each flank: a wall shifted sideways moves both flanks the same way and
        # cancels, a wall that is too thick raises both deviations.
        thick_dev = float(dev[~second].mean() + dev[second].mean())
        thick_meas = geometry.thickness + thick_dev

    def verdict(profile: float) -> bool | None:
        checks: list[bool] = []
        if tol_profile is not None:
            checks.append(profile <= tol_profile)
        if tol_thick is not None and thick_dev is not None:
            checks.append(abs(thick_dev) <= tol_thick)
        return all(checks) if checks else None

    profile = _profile(dev)
    fit = None
    if best_fit:
        if pts.shape[0] < 6:
            warnings.append("best fit skipped: it needs at least 6 points")
        else:
            fit = _best_fit(geometry, pts, second, names, bounds, chosen, along, tol_profile)
            fit = BestFit(
                rotation=fit.rotation,
                translation=fit.translation,
                pivot=fit.pivot,
                lines=fit.lines,
                max_abs_deviation=fit.max_abs_deviation,
                profile_deviation=fit.profile_deviation,
                passed=verdict(fit.profile_deviation),
            )
    return SPieceResult(
        lines=result_lines,
        max_abs_deviation=float(np.abs(dev).max()),
        profile_deviation=profile,
        thickness_nominal=geometry.thickness,
        thickness_measured=thick_meas,
        thickness_deviation=thick_dev,
        tolerances=dict(geometry.tolerances),
        passed=verdict(profile),
        best_fit=fit,
        warnings=warnings,
    )


def _best_fit(
    geom: SPieceGeometry,
    pts: FloatArray,
    second: NDArray[np.bool_],
    names: list[str],
    bounds: list[tuple[int, int]],
    flanks: list[str],
    along: list[FloatArray],
    tol: float | None,
    iterations: int = 8,
) -> BestFit:
    """Gauss-Newton on the point-to-surface distances (point-to-plane ICP with re-projection).

    Degrees of freedom the lines do not constrain (e.g. sliding along a flat flank) get the
    minimum-norm update, so they stay near zero instead of drifting.
    """
    pivot = pts.mean(axis=0)
    rot = np.eye(3)
    trans = np.zeros(3)
    sign = np.where(second, -1.0, 1.0)
    for _ in range(iterations):
        cur = (pts - pivot) @ rot.T + pivot + trans
        dev, proj = _signed(geom, cur, second)
        q = cur - pivot
        n = proj.normal * sign[:, None]
        jac = np.hstack([np.cross(q, n), n])
        step, *_ = np.linalg.lstsq(jac, -dev, rcond=1e-10)
        d_rot = _rodrigues(step[:3])
        # Compose the small update about the pivot: new(p) = d_rot (cur - pivot) + pivot + dt.
        rot = d_rot @ rot
        trans = d_rot @ trans + step[3:]
        if float(np.abs(step).max()) < 1e-12:
            break
    cur = (pts - pivot) @ rot.T + pivot + trans
    dev, proj = _signed(geom, cur, second)
    lines = _make_lines(names, bounds, flanks, dev, proj, along, tol)
    return BestFit(
        rotation=rot,
        translation=trans,
        pivot=pivot,
        lines=lines,
        max_abs_deviation=float(np.abs(dev).max()),
        profile_deviation=_profile(dev),
        passed=None,
    )
