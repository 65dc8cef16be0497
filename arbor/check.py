"""``arbor check``: accuracy checks from files, for quality engineers without the server.

    arbor check iso230-2 FILE [--plot PATH]
    arbor check circle FILE [--plot PATH]
    arbor check s-piece POINTS [--geometry FILE] [--no-best-fit] [--plot PATH]

Prints the JSON report on stdout and returns 0; bad input prints ``arbor check <cmd>: error: ...``
on stderr and returns 2. ``--plot report.png`` writes report.png and report.svg.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import orjson

__all__ = [
    "DEFAULT_GEOMETRY",
    "FigureSink",
    "default_geometry_text",
    "evaluate_circle",
    "evaluate_iso230_2",
    "evaluate_s_piece",
    "main",
    "run",
]

#: Receives a report's matplotlib figure (`analytics.plots.render` turns it into PNG or SVG).
FigureSink = Callable[[Any], None]

EXIT_OK = 0
EXIT_BAD_INPUT = 2


class _UsageError(Exception):
    """argparse wants to exit; we want an exit code."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: error: {message}")


def _load_json(path: str, what: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} {path!r} is not UTF-8 text") from exc
    try:
        # The stdlib parser accepts NaN/Infinity, which some tools write; the field checks then
        # reject them naming the exact element instead of a bare syntax error.
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{what} {path!r} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc


def _units(data: dict[str, Any], field: str = "units") -> tuple[str, float]:
    from analytics._checks import to_mm

    units = data.get(field, "mm")
    return str(units), to_mm(units, field)


def _require_object(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


def _write_plot(fig: Any, path: str) -> list[str]:
    from analytics.plots import render

    base = Path(path)
    if base.suffix.lower() in (".png", ".svg"):
        base = base.with_suffix("")
    written = []
    for fmt in ("png", "svg"):
        target = base.with_name(base.name + "." + fmt)
        try:
            target.write_bytes(render(fig, fmt))
        except OSError as exc:
            raise ValueError(f"cannot write plot {str(target)!r}: {exc.strerror or exc}") from exc
        written.append(str(target))
    return written


def evaluate_iso230_2(data: Any, *, figure: FigureSink | None = None) -> dict[str, Any]:
    """ISO 230-2 positioning report of `data` (the parsed JSON `arbor check iso230-2` reads:
    ``{targets, up, down, units?, values?}``). `figure`, when given, receives the report's
    matplotlib figure. Raises ValueError naming the bad element."""
    from analytics.iso230_2 import evaluate_iso230_2 as evaluate

    data = _require_object(data, "ISO 230-2 input")
    for key in ("targets", "up", "down"):
        if key not in data:
            raise ValueError(f"{key} is missing; expected targets, up and down")
    units, factor = _units(data)
    values = data.get("values", "positions")
    if values not in ("positions", "deviations"):
        raise ValueError(f"values must be 'positions' or 'deviations', got {values!r}")
    targets = np.asarray(_checked(data["targets"], "targets"), dtype=np.float64)
    up = np.asarray(_checked(data["up"], "up", matrix=len(targets)), dtype=np.float64)
    down = np.asarray(_checked(data["down"], "down", matrix=len(targets)), dtype=np.float64)
    result = evaluate(targets * factor, up * factor, down * factor, values=values)
    report: dict[str, Any] = {"check": "iso230-2", "units": "mm", "input_units": units}
    report |= {"values": values}
    report |= result.to_dict()
    warnings = []
    if result.runs_up < 5 or result.runs_down < 5:
        warnings.append(
            f"ISO 230-2 asks for 5 runs per direction; got {result.runs_up} up and "
            f"{result.runs_down} down"
        )
    span = float(np.ptp(result.targets))
    if values == "positions" and span > 0 and abs(float(np.median(result.mean))) > 0.1 * span:
        warnings.append(
            "deviations are larger than a tenth of the travel: if up/down hold deviations rather "
            'than measured positions, add "values": "deviations"'
        )
    report["warnings"] = warnings
    if figure is not None:
        from analytics.plots import iso230_2_figure

        figure(iso230_2_figure(result))
    return report


def _iso230_2(args: argparse.Namespace) -> dict[str, Any]:
    return _with_plot(
        args.plot,
        lambda sink: evaluate_iso230_2(_load_json(args.file, "input"), figure=sink),
    )


def _with_plot(
    path: str | None, evaluate: Callable[[FigureSink | None], dict[str, Any]]
) -> dict[str, Any]:
    """Run `evaluate`; with a plot path, write its figure as PATH.png and PATH.svg and list
    them last in the report (`plots`)."""
    figures: list[Any] = []
    report = evaluate(figures.append if path else None)
    if path and figures:
        report["plots"] = _write_plot(figures[0], path)
    return report


def _checked(value: Any, field: str, matrix: int | None = None) -> Any:
    """Validate before numpy sees the value, so that ragged lists name their row."""
    from analytics._checks import as_float_array, as_matrix

    if matrix is None:
        return as_float_array(value, field, min_len=2)
    return as_matrix(
        value,
        field,
        columns=matrix,
        min_rows=2,
        row_name="run",
        column_hint=f" (one per target; there are {matrix} targets)",
    )


def evaluate_circle(data: Any, *, figure: FigureSink | None = None) -> dict[str, Any]:
    """ISO 230-4 circular test report of `data` (the parsed JSON `arbor check circle` reads:
    ``{x, y}`` or ``{cw: {x, y}, ccw: {x, y}}``, ``nominal_radius?``, ``nominal_center?``,
    ``units?``). `figure`, when given, receives the matplotlib figure. Raises ValueError naming
    the bad element."""
    from analytics._checks import as_float_array
    from analytics.iso230_4 import evaluate_circle as evaluate_path
    from analytics.iso230_4 import evaluate_circular_test

    data = _require_object(data, "circle input")
    units, factor = _units(data)
    nominal_radius = data.get("nominal_radius")
    if nominal_radius is not None and (
        isinstance(nominal_radius, bool)
        or not isinstance(nominal_radius, (int, float))
        or not math.isfinite(nominal_radius)
        or nominal_radius <= 0
    ):
        raise ValueError(f"nominal_radius must be a positive number, got {nominal_radius!r}")
    nominal_center = data.get("nominal_center")
    if nominal_center is not None:
        nominal_center = as_float_array(nominal_center, "nominal_center", min_len=2) * factor
        if nominal_center.shape != (2,):
            raise ValueError("nominal_center must be [x, y]")
    kw: dict[str, Any] = {
        "nominal_center": nominal_center,
        "nominal_radius": None if nominal_radius is None else nominal_radius * factor,
    }

    def xy(obj: Any, prefix: str) -> tuple[np.ndarray, np.ndarray]:
        obj = _require_object(obj, prefix.rstrip(".") or "input")
        for key in ("x", "y"):
            if key not in obj:
                raise ValueError(f"{prefix}{key} is missing")
        x = as_float_array(obj["x"], f"{prefix}x", min_len=3)
        y = as_float_array(obj["y"], f"{prefix}y", min_len=3)
        if x.shape != y.shape:
            raise ValueError(
                f"{prefix}x has {x.shape[0]} values but {prefix}y has {y.shape[0]}; they must pair"
            )
        return x * factor, y * factor

    report: dict[str, Any] = {"check": "circle", "units": "mm", "input_units": units}
    if "cw" in data or "ccw" in data:
        if not ("cw" in data and "ccw" in data):
            raise ValueError("give both cw and ccw paths, or a single path as x and y")
        xa, ya = xy(data["cw"], "cw.")
        xb, yb = xy(data["ccw"], "ccw.")
        both = evaluate_circular_test(xa, ya, xb, yb, **kw)
        report |= both.to_dict()
        paths = {"cw": (xa, ya, both.cw), "ccw": (xb, yb, both.ccw)}
    else:
        x, y = xy(data, "")
        single = evaluate_path(x, y, **kw)
        report |= single.to_dict()
        direction = data.get("direction")
        if direction is not None:
            report["direction"] = str(direction)
        paths = {str(direction or "path"): (x, y, single)}
    if figure is not None:
        from analytics.plots import circle_figure

        figure(circle_figure(paths))
    return report


def _circle(args: argparse.Namespace) -> dict[str, Any]:
    return _with_plot(
        args.plot, lambda sink: evaluate_circle(_load_json(args.file, "input"), figure=sink)
    )


def default_geometry_text() -> str:
    """The shipped illustrative S-piece geometry (JSON text)."""
    return resources.files("analytics").joinpath("data/s_piece_default.json").read_text("utf-8")


#: How a report names the shipped geometry.
DEFAULT_GEOMETRY = "default (illustrative, not the ISO 10791-7 Annex A values)"


def evaluate_s_piece(
    points: Any,
    geometry: Any = None,
    *,
    geometry_name: str = "posted",
    best_fit: bool = True,
    figure: FigureSink | None = None,
) -> dict[str, Any]:
    """ISO 10791-7 S test piece report of CMM `points` (the parsed JSON `arbor check s-piece`
    reads) against `geometry` (parsed geometry JSON; None: the shipped illustrative one), which
    the report names `geometry_name`. `figure`, when given, receives the matplotlib figure.
    Raises ValueError naming the bad element."""
    from analytics.s_piece import SPieceGeometry, parse_measurement
    from analytics.s_piece import evaluate_s_piece as evaluate

    if geometry is None:
        geometry, geometry_name = json.loads(default_geometry_text()), DEFAULT_GEOMETRY
    nominal = SPieceGeometry.from_dict(geometry)
    names, lines, flanks = parse_measurement(points)
    result = evaluate(nominal, lines, names, flanks, best_fit=best_fit)
    report: dict[str, Any] = {"check": "s-piece", "geometry": geometry_name}
    report |= result.to_dict()
    if figure is not None:
        from analytics.plots import s_piece_figure

        figure(s_piece_figure(result))
    return report


def _s_piece(args: argparse.Namespace) -> dict[str, Any]:
    geometry = _load_json(args.geometry, "geometry") if args.geometry else None
    if geometry is not None:
        from analytics.s_piece import SPieceGeometry

        SPieceGeometry.from_dict(geometry)  # its errors come before the points' (as always)

    def evaluate(sink: FigureSink | None) -> dict[str, Any]:
        return evaluate_s_piece(
            _load_json(args.points, "points"),
            geometry,
            geometry_name=args.geometry or DEFAULT_GEOMETRY,
            best_fit=not args.no_best_fit,
            figure=sink,
        )

    return _with_plot(args.plot, evaluate)


def _parser() -> _Parser:
    parser = _Parser(prog="arbor check", description="Machine accuracy checks from files.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("iso230-2", help="positioning accuracy of an axis (ISO 230-2)")
    p.add_argument("file", help='JSON {"targets": [...], "up": [[...]], "down": [[...]]}')
    p.add_argument("--plot", metavar="PATH", help="write PATH.png and PATH.svg")
    p.set_defaults(handler=_iso230_2)
    p = sub.add_parser("circle", help="circular test (ISO 230-4)")
    p.add_argument("file", help='JSON {"x": [...], "y": [...]} or {"cw": {...}, "ccw": {...}}')
    p.add_argument("--plot", metavar="PATH", help="write PATH.png and PATH.svg")
    p.set_defaults(handler=_circle)
    p = sub.add_parser("s-piece", help="S test piece (ISO 10791-7 Annex A) from CMM points")
    p.add_argument("points", help='JSON {"lines": [{"name": ..., "points": [[x, y, z], ...]}]}')
    p.add_argument("--geometry", metavar="FILE", help="nominal geometry JSON (default: shipped)")
    p.add_argument("--no-best-fit", action="store_true", help="skip the rigid best fit")
    p.add_argument("--plot", metavar="PATH", help="write PATH.png and PATH.svg")
    p.set_defaults(handler=_s_piece)
    return parser


def run(argv: list[str]) -> int:
    """Run ``arbor check`` with ``argv`` (without the word "check"); return the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    handler: Callable[[argparse.Namespace], dict[str, Any]] = args.handler
    try:
        report = handler(args)
    except ValueError as exc:
        print(f"arbor check {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sys.stdout.write(
        orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()
    )
    sys.stdout.write("\n")
    sys.stdout.flush()
    return EXIT_OK


def main() -> None:
    """Console entry point for ``python -m arbor.check``."""
    raise SystemExit(run(sys.argv[1:]))


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
