"""Report figures for the accuracy checks, rendered to bytes (PNG or SVG); no files, no pyplot.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas attached explicitly, so no
global backend state is touched and nothing needs a display.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analytics.iso230_2 import Iso2302Result
from analytics.iso230_4 import CircleResult
from analytics.s_piece import SPieceResult

__all__ = ["circle_figure", "iso230_2_figure", "render", "s_piece_figure"]

_UM = 1000.0  # figures show micrometres: accuracy deviations in mm are unreadable


def render(fig: Figure, fmt: str) -> bytes:
    """Render ``fig`` as ``"png"`` or ``"svg"`` and return the file content."""
    if fmt not in ("png", "svg"):
        raise ValueError(f"figure format must be 'png' or 'svg', got {fmt!r}")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=120)
    return buf.getvalue()


def _new(rows: int, height: float) -> Figure:
    fig = Figure(figsize=(8.0, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def s_piece_figure(result: SPieceResult) -> Figure:
    """Deviation (µm) along each measuring line; raw solid, best fit dashed, tolerance band."""
    n = len(result.lines)
    fig = _new(n, 1.0 + 2.2 * n)
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    tol = result.tolerances.get("profile")
    for k, (ax, line) in enumerate(zip(axes, result.lines, strict=True)):
        ax.plot(line.along, line.deviations * _UM, "o-", ms=3, lw=1, label="raw")
        if result.best_fit is not None:
            bf = result.best_fit.lines[k]
            ax.plot(bf.along, bf.deviations * _UM, "--", lw=1, label="best fit")
        if tol is not None:
            ax.axhspan(
                -tol / 2 * _UM,
                tol / 2 * _UM,
                color="tab:green",
                alpha=0.12,
                label=f"profile zone {tol} mm",
            )
        ax.axhline(0.0, color="black", lw=0.6)
        ax.set_title(
            f"{line.name} ({line.flank} flank): profile {line.profile_deviation * _UM:.1f} µm",
            fontsize=9,
        )
        ax.set_ylabel("deviation / µm")
        ax.legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("distance along the line / mm")
    verdict = {True: "PASS", False: "FAIL", None: "no tolerance"}[result.passed]
    fig.suptitle(
        f"S test piece: max |dev| {result.max_abs_deviation * _UM:.1f} µm, {verdict}"
        " (positive = outside material)",
        fontsize=10,
    )
    return fig


def iso230_2_figure(result: Iso2302Result) -> Figure:
    """Mean deviations per direction with +/- 2s bands against target position (µm)."""
    fig = _new(1, 4.5)
    ax = fig.subplots()
    p = result.targets
    for mean, s, label, colour in (
        (result.mean_up, result.s_up, "up", "tab:blue"),
        (result.mean_down, result.s_down, "down", "tab:red"),
    ):
        ax.plot(p, mean * _UM, "o-", color=colour, label=f"mean {label}")
        ax.fill_between(
            p,
            (mean - 2 * s) * _UM,
            (mean + 2 * s) * _UM,
            color=colour,
            alpha=0.15,
            label=f"±2s {label}",
        )
    ax.plot(p, result.mean * _UM, "k--", lw=1, label="mean bidirectional")
    ax.set_xlabel("target position")
    ax.set_ylabel("deviation / µm")
    ax.set_title(
        f"ISO 230-2: A={result.A * _UM:.2f} E={result.E * _UM:.2f} M={result.M * _UM:.2f} "
        f"R={result.R * _UM:.2f} B={result.B * _UM:.2f} µm",
        fontsize=10,
    )
    ax.legend(fontsize=7)
    return fig


def circle_figure(paths: dict[str, tuple[np.ndarray, np.ndarray, CircleResult]]) -> Figure:
    """Polar plot of radial deviation about each path's LSC centre, magnified (µm)."""
    fig = _new(1, 6.0)
    ax = fig.add_subplot(projection="polar")
    for name, (x, y, res) in paths.items():
        theta = np.arctan2(y - res.center[1], x - res.center[0])
        order = np.argsort(theta)
        ax.plot(
            theta[order],
            res.radial_residuals[order] * _UM,
            lw=1,
            label=f"{name}: G={res.G * _UM:.2f} µm",
        )
    lo = min(float(r.radial_residuals.min()) for _, _, r in paths.values()) * _UM
    hi = max(float(r.radial_residuals.max()) for _, _, r in paths.values()) * _UM
    pad = max(hi - lo, 1e-3) * 0.5
    ax.set_ylim(lo - pad, hi + pad)  # radial axis starts below the smallest deviation
    ax.set_title("ISO 230-4 radial deviation about the LSC centre / µm", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    return fig
