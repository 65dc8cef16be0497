"""Benchmarks of the numpy analytics against straightforward pure-Python references.

    .venv/bin/python bench/analytics.py

Each case checks that both implementations agree before it prints times and the speed-up.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

# This file shares its name with the package it measures: run as a script, its own directory
# comes first on sys.path and would shadow the package, so put the repository there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402

from analytics.iso230_2 import evaluate_iso230_2  # noqa: E402
from analytics.s_piece import SPieceGeometry, project  # noqa: E402
from analytics.states import EXECUTION, durations_by_group  # noqa: E402


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def report(name: str, t_np: float, t_py: float, note: str = "") -> None:
    print(
        f"{name:<48} numpy {t_np * 1e3:9.2f} ms   python {t_py * 1e3:10.2f} ms   "
        f"speed-up {t_py / t_np:7.1f}x{note}"
    )


# ---------------------------------------------------------------- utilisation, 1,000 x 30 days
def make_fleet(machines: int, days: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    span = days * 86400.0
    fleet = []
    for _ in range(machines):
        n = int(span / 1440)  # a state change every 24 minutes on average
        t = np.sort(rng.uniform(-3600.0, span, n))
        c = rng.choice([0, 1, 1, 1, 3, 4, 9], n)  # READY, ACTIVE x3, FEED_HOLD, STOPPED, UNAVAIL.
        fleet.append((t, c))
    return fleet


def fleet_numpy(
    group: np.ndarray, t: np.ndarray, c: np.ndarray, machines: int, span: float
) -> list[dict[str, float]]:
    table = durations_by_group(group, t, c, machines, EXECUTION, start=0.0, end=span)
    active, unknown = table[:, EXECUTION.index("ACTIVE")], table[:, -1]
    util = active / (span - unknown)
    return [
        {"ACTIVE": float(a), "unknown": float(u), "utilisation": float(x)}
        for a, u, x in zip(active, unknown, util, strict=True)
    ]


def fleet_python(fleet: list[tuple[list[float], list[int]]], span: float) -> list[dict[str, float]]:
    out = []
    for ts, cs in fleet:
        active = unknown = 0.0
        state = -1  # unknown until the first event
        prev = 0.0
        for t, c in zip(ts, cs, strict=True):
            if t > prev:
                seg = min(t, span) - prev
                if state == 1:
                    active += seg
                elif state in (-1, 9):
                    unknown += seg
                prev = min(t, span)
            state = c
        seg = span - prev
        if state == 1:
            active += seg
        elif state in (-1, 9):
            unknown += seg
        out.append({"ACTIVE": active, "unknown": unknown, "utilisation": active / (span - unknown)})
    return out


def bench_utilisation() -> None:
    machines, days = 1000, 30
    span = days * 86400.0
    fleet = make_fleet(machines, days)
    fleet_lists = [(t.tolist(), c.tolist()) for t, c in fleet]
    events = sum(t.size for t, _ in fleet)
    # Both sides get the rows as a query returns them: numpy columns ordered by (machine, time),
    # Python lists per machine.
    group = np.repeat(np.arange(machines), [t.size for t, _ in fleet])
    ts = np.concatenate([t for t, _ in fleet])
    cs = np.concatenate([c for _, c in fleet])
    t_np, a = best_of(lambda: fleet_numpy(group, ts, cs, machines, span), 3)
    t_py, b = best_of(lambda: fleet_python(fleet_lists, span), 1)
    for x, y in zip(a, b, strict=True):
        assert abs(x["ACTIVE"] - y["ACTIVE"]) < 1e-6 and abs(x["unknown"] - y["unknown"]) < 1e-6
    report(f"utilisation {machines} machines x {days} days", t_np, t_py, f"   ({events:,} events)")


# ---------------------------------------------------------------- S piece, 10,000 points
def _basis_py(kv: list[float], p: int, u: float, n: int) -> tuple[int, list[list[float]]]:
    """Span and [N, N', N''] of the p + 1 non-zero basis functions (Cox-de Boor, plain floats)."""
    span = n - 1
    for k in range(p, n):
        if kv[k] <= u < kv[k + 1]:
            span = k
            break

    def basis(i: int, q: int) -> float:
        if q == 0:
            return 1.0 if kv[i] <= u < kv[i + 1] or (u == kv[-1] and i == span) else 0.0
        a = kv[i + q] - kv[i]
        b = kv[i + q + 1] - kv[i + 1]
        left = (u - kv[i]) / a * basis(i, q - 1) if a > 0 else 0.0
        right = (kv[i + q + 1] - u) / b * basis(i + 1, q - 1) if b > 0 else 0.0
        return left + right

    def deriv(i: int, q: int, k: int) -> float:
        if k == 0:
            return basis(i, q)
        a = kv[i + q] - kv[i]
        b = kv[i + q + 1] - kv[i + 1]
        left = q / a * deriv(i, q - 1, k - 1) if a > 0 else 0.0
        right = q / b * deriv(i + 1, q - 1, k - 1) if b > 0 else 0.0
        return left - right

    rows = [[deriv(span - p + j, p, k) for j in range(p + 1)] for k in range(3)]
    return span, rows


def _curve_py(curve: dict[str, Any], t: float) -> list[list[float]]:
    p, kv, cp = curve["degree"], curve["knots"], curve["control_points"]
    n = len(cp)
    a, b = kv[p], kv[n]
    u = a + t * (b - a)
    span, rows = _basis_py(kv, p, u, n)
    out = []
    for k in range(3):
        pt = [0.0, 0.0, 0.0]
        for j in range(p + 1):
            for d in range(3):
                pt[d] += rows[k][j] * cp[span - p + j][d]
        out.append([x * (b - a) ** k for x in pt])
    return out


def project_python(geom: dict[str, Any], points: list[list[float]], grid: int = 400) -> list[float]:
    """Unsigned distance from each point to the ruled surface: ruling search, then Newton."""
    bottom, top = geom["bottom"], geom["top"]
    ts = [k / (grid - 1) for k in range(grid)]
    rulings = [(_curve_py(bottom, t)[0], _curve_py(top, t)[0]) for t in ts]
    out = []
    for p in points:
        best = (math.inf, 0.0, 0.0)
        for t, (b, c) in zip(ts, rulings, strict=True):
            d = [c[i] - b[i] for i in range(3)]
            q = [p[i] - b[i] for i in range(3)]
            v = min(max(sum(q[i] * d[i] for i in range(3)) / sum(x * x for x in d), -0.5), 1.5)
            r2 = sum((q[i] - v * d[i]) ** 2 for i in range(3))
            if r2 < best[0]:
                best = (r2, t, v)
        _, t, v = best
        for _ in range(30):
            b, c = _curve_py(bottom, t), _curve_py(top, t)
            s = [(1 - v) * b[0][i] + v * c[0][i] for i in range(3)]
            st = [(1 - v) * b[1][i] + v * c[1][i] for i in range(3)]
            sv = [c[0][i] - b[0][i] for i in range(3)]
            stt = [(1 - v) * b[2][i] + v * c[2][i] for i in range(3)]
            stv = [c[1][i] - b[1][i] for i in range(3)]
            r = [s[i] - p[i] for i in range(3)]

            def dot(x: list[float], y: list[float]) -> float:
                return x[0] * y[0] + x[1] * y[1] + x[2] * y[2]

            g1, g2 = dot(r, st), dot(r, sv)
            h11 = dot(st, st) + dot(r, stt)
            h12 = dot(st, sv) + dot(r, stv)
            h22 = dot(sv, sv)
            det = h11 * h22 - h12 * h12
            dt = -(h22 * g1 - h12 * g2) / det
            dv = -(h11 * g2 - h12 * g1) / det
            t_new = min(max(t + max(min(dt, 0.05), -0.05), 0.0), 1.0)
            step = abs(t_new - t) + abs(dv)
            t, v = t_new, v + dv
            if step < 1e-10:
                break
        b, c = _curve_py(bottom, t), _curve_py(top, t)
        s = [(1 - v) * b[0][i] + v * c[0][i] for i in range(3)]
        out.append(math.dist(s, p))
    return out


def bench_s_piece() -> None:
    text = resources.files("analytics").joinpath("data/s_piece_default.json").read_text("utf-8")
    data = json.loads(text)
    geom = SPieceGeometry.from_dict(data)
    rng = np.random.default_rng(1)
    n, n_ref = 10_000, 500
    t = rng.uniform(0.02, 0.98, n)
    v = rng.uniform(0.1, 0.9, n)
    pts = geom.surface(t, v) + rng.normal(0, 0.02, n)[:, None] * geom.outward_normal(t, v)
    t_np, proj = best_of(lambda: project(geom, pts), 3)
    sub = pts[:n_ref].tolist()
    t_ref, dist = best_of(lambda: project_python(data, sub), 1)
    assert np.allclose(np.abs(proj.distance[:n_ref]), dist, atol=1e-9)
    t_py = t_ref * n / n_ref
    report(
        f"S-piece projection of {n:,} points",
        t_np,
        t_py,
        f"   (python timed on {n_ref} points, scaled x{n // n_ref})",
    )


# ---------------------------------------------------------------- ISO 230-2, 100 x 5
def iso_python(
    targets: list[float], up: list[list[float]], down: list[list[float]]
) -> dict[str, float]:
    m = len(targets)
    mu, md, su, sd, ri, bi = [], [], [], [], [], []
    for i in range(m):
        xu = [run[i] - targets[i] for run in up]
        xd = [run[i] - targets[i] for run in down]
        mu.append(statistics.fmean(xu))
        md.append(statistics.fmean(xd))
        su.append(statistics.stdev(xu))
        sd.append(statistics.stdev(xd))
        bi.append(mu[i] - md[i])
        ri.append(max(2 * su[i] + 2 * sd[i] + abs(bi[i]), 4 * su[i], 4 * sd[i]))
    mean = [(a + b) / 2 for a, b in zip(mu, md, strict=True)]
    hi = [x + 2 * s for x, s in zip(mu + md, su + sd, strict=True)]
    lo = [x - 2 * s for x, s in zip(mu + md, su + sd, strict=True)]
    return {
        "A": max(hi) - min(lo),
        "B": max(abs(b) for b in bi),
        "E": max(mu + md) - min(mu + md),
        "M": max(mean) - min(mean),
        "R": max(ri),
    }


def bench_iso230_2() -> None:
    rng = np.random.default_rng(2)
    targets = np.linspace(0, 990, 100)
    up = targets + 1e-5 * targets + rng.normal(0, 0.001, (5, 100))
    down = up - 0.004 + rng.normal(0, 0.001, (5, 100))
    lists = (targets.tolist(), up.tolist(), down.tolist())
    t_np, res = best_of(lambda: evaluate_iso230_2(targets, up, down), 50)
    t_py, ref = best_of(lambda: iso_python(*lists), 20)
    for key, value in ref.items():
        assert abs(getattr(res, key) - value) < 1e-12, key
    report("ISO 230-2, 100 positions x 5 runs", t_np, t_py)


def main() -> None:
    bench_utilisation()
    bench_s_piece()
    bench_iso230_2()


if __name__ == "__main__":
    main()
