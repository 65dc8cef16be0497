"""Accuracy evaluation for the API, by the very code `arbor check` runs.

The CLI's handlers in :mod:`arbor.check` parse, validate (naming the bad element), evaluate and
plot. To give the API exactly the same behaviour and messages, the posted JSON is written to a
private temporary directory and handed to those handlers, figures included; nothing is re-parsed
here. (If `arbor.check` grows data-in/report-out functions, this module shrinks to calling them.)
CPU-bound: call :func:`evaluate` through `asyncio.to_thread`.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from arbor import check

__all__ = ["DEFAULT_METRIC", "Evaluation", "Kind", "evaluate", "judge"]

Kind = Literal["iso230-2", "circle", "s-piece"]

#: The figure a trend follows unless asked for another.
DEFAULT_METRIC: dict[str, str] = {"iso230-2": "A", "circle": "G", "s-piece": "profile_deviation"}


@dataclass(frozen=True)
class Evaluation:
    report: dict[str, Any]
    figures: dict[str, bytes]


def evaluate(
    kind: Kind,
    data: dict[str, Any],
    *,
    geometry: dict[str, Any] | None = None,
    best_fit: bool = True,
    figures: bool = True,
) -> Evaluation:
    """Evaluate `data` (the JSON `arbor check <kind>` reads) and render PNG and SVG figures.

    Raises ValueError with the CLI's message for bad input.
    """
    with tempfile.TemporaryDirectory(prefix="arbor-api-check-") as tmp:
        folder = Path(tmp)
        source = folder / "input.json"
        source.write_bytes(orjson.dumps(data))
        plot = str(folder / "figure") if figures else None
        if kind == "iso230-2":
            report = check._iso230_2(argparse.Namespace(file=str(source), plot=plot))
        elif kind == "circle":
            report = check._circle(argparse.Namespace(file=str(source), plot=plot))
        else:
            geometry_file = None
            if geometry is not None:
                geometry_file = folder / "geometry.json"
                geometry_file.write_bytes(orjson.dumps(geometry))
            report = check._s_piece(
                argparse.Namespace(
                    points=str(source),
                    geometry=None if geometry_file is None else str(geometry_file),
                    no_best_fit=not best_fit,
                    plot=plot,
                )
            )
            if geometry_file is not None:
                report["geometry"] = "posted"
        report.pop("plots", None)
        rendered = (
            {fmt: (folder / f"figure.{fmt}").read_bytes() for fmt in ("png", "svg")}
            if figures
            else {}
        )
    # The report goes into jsonb and JSON answers: round-trip numpy values into plain ones.
    clean = orjson.loads(orjson.dumps(report, option=orjson.OPT_SERIALIZE_NUMPY))
    return Evaluation(report=clean, figures=rendered)


def judge(kind: Kind, report: dict[str, Any], tolerances: dict[str, float]) -> bool | None:
    """Pass/fail: every toleranced figure's magnitude within its tolerance (mm).

    The S piece carries its tolerances in its geometry and judges itself (`report["pass"]`);
    for the others None means "no tolerance given". Raises ValueError naming an unknown figure.
    """
    if kind == "s-piece":
        verdict = report.get("pass")
        return verdict if isinstance(verdict, bool) else None
    if not tolerances:
        return None
    passed = True
    for name, limit in tolerances.items():
        value = report.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            numeric = sorted(
                k
                for k, v in report.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            )
            raise ValueError(f"tolerances.{name}: no figure {name!r}; one of {', '.join(numeric)}")
        if math.isnan(value) or abs(value) > limit:
            passed = False
    return passed
