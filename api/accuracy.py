"""Accuracy evaluation for the API, by the very code `arbor check` runs.

:mod:`arbor.check`'s public functions (`evaluate_iso230_2`, `evaluate_circle`,
`evaluate_s_piece`) take the parsed JSON, validate it (naming the bad element), evaluate it and
hand over the figure; the CLI and the API share them, so both give the same figures and messages.
CPU-bound: call :func:`evaluate` through `asyncio.to_thread`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
    drawn: list[Any] = []
    sink = drawn.append if figures else None
    if kind == "iso230-2":
        report = check.evaluate_iso230_2(data, figure=sink)
    elif kind == "circle":
        report = check.evaluate_circle(data, figure=sink)
    else:
        report = check.evaluate_s_piece(
            data, geometry, geometry_name="posted", best_fit=best_fit, figure=sink
        )
    rendered: dict[str, bytes] = {}
    if drawn:
        from analytics.plots import render

        rendered = {fmt: render(drawn[0], fmt) for fmt in ("png", "svg")}
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
