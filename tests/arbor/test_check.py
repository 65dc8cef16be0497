"""``arbor check``: reports on stdout, precise errors on stderr, non-zero exit on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analytics.s_piece import SPieceGeometry
from arbor.check import default_geometry_text, run
from simulators.accuracy import circle_path, iso230_2_runs, s_piece_points

ISO_KEYS = ["A", "A_up", "A_down", "B", "B_mean", "E", "E_up", "E_down", "M", "R", "R_up", "R_down"]


def write(tmp_path: Path, name: str, doc: Any) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return str(path)


def check(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    code = run(argv)
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else out), err


def test_iso230_2_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = iso230_2_runs(
        np.linspace(0, 500, 11), backlash=0.004, scale_error=10e-6, noise_sigma=0.0005
    )
    doc["comment"] = "extra keys are ignored"
    code, report, _ = check(["iso230-2", write(tmp_path, "a.json", doc)], capsys)
    assert code == 0
    assert set(ISO_KEYS) <= set(report)
    assert report["units"] == "mm" and report["input_units"] == "mm"
    assert len(report["per_position"]["B"]) == 11
    assert report["B_mean"] == pytest.approx(0.004, abs=0.001)


def test_iso230_2_micrometres_are_converted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = iso230_2_runs(np.linspace(0, 500, 6), backlash=0.004, noise_sigma=0.0005, seed=2)
    _, in_mm, _ = check(["iso230-2", write(tmp_path, "mm.json", doc)], capsys)
    doc_um = {k: (np.asarray(doc[k]) * 1000).tolist() for k in ("targets", "up", "down")}
    doc_um["units"] = "µm"
    _, in_um, _ = check(["iso230-2", write(tmp_path, "um.json", doc_um)], capsys)
    assert in_um["input_units"] == "µm" and in_um["units"] == "mm"
    for key in ISO_KEYS:
        assert in_um[key] == pytest.approx(in_mm[key], abs=1e-9), key


def test_circle_report_with_nominal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = circle_path(150.0, center=(0.003, 0.0), ellipse=0.002)
    doc |= {"nominal_center": [0, 0], "nominal_radius": 150}
    code, report, _ = check(["circle", write(tmp_path, "c.json", doc)], capsys)
    assert code == 0
    assert report["G"] == pytest.approx(0.004, rel=1e-3)
    assert report["F_max"] > 0 > report["F_min"]
    assert report["center"] == pytest.approx([0.003, 0.0], abs=1e-9)


def test_circle_cw_and_ccw(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = {
        "cw": circle_path(100.0, direction="cw", backlash_step=0.003),
        "ccw": circle_path(100.0, direction="ccw"),
    }
    code, report, _ = check(["circle", write(tmp_path, "c.json", doc)], capsys)
    assert code == 0
    assert report["H"] == pytest.approx(0.003, rel=1e-6)
    assert {"G_cw", "G_ccw", "G", "radius", "center"} <= set(report)


def test_s_piece_with_default_geometry_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    geometry = SPieceGeometry.from_dict(json.loads(default_geometry_text()))
    doc = s_piece_points(geometry, offset=0.01, noise_sigma=0.001, rotation_deg=(0, 0, 0.005))
    plot = tmp_path / "s.png"
    code, report, _ = check(
        ["s-piece", write(tmp_path, "p.json", doc), "--plot", str(plot)], capsys
    )
    assert code == 0
    assert {"lines", "max_abs_deviation", "pass"} <= set(report)
    line = report["lines"][0]
    assert {"name", "deviations", "profile_deviation"} <= set(line)
    assert len(line["deviations"]) == len(doc["lines"][0]["points"])
    assert report["best_fit"]["max_abs_deviation"] < report["max_abs_deviation"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "s.svg").read_bytes()[:1000]


def test_s_piece_with_a_geometry_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    geom = json.loads(default_geometry_text())
    geom["tolerances"] = {"profile": 0.01}
    geometry = SPieceGeometry.from_dict(geom)
    doc = s_piece_points(geometry, offset=0.02)
    code, report, _ = check(
        ["s-piece", write(tmp_path, "p.json", doc), "--geometry", write(tmp_path, "g.json", geom)],
        capsys,
    )
    assert code == 0 and report["pass"] is False


@pytest.mark.parametrize(
    ("command", "doc", "message"),
    [
        (
            "iso230-2",
            {"targets": [0, 1], "up": [[0, 1], [0]], "down": [[0, 1], [0, 1]]},
            "up[1] has 1 values, expected 2",
        ),
        (
            "iso230-2",
            {"targets": [0, 1], "up": [[0, 1]], "down": [[0, 1], [0, 1]]},
            "up needs at least 2 runs",
        ),
        (
            "iso230-2",
            {"targets": [0, 1], "up": [[0, 1], [0, 1]], "down": [[0, 1], [0, 1]], "units": "inch"},
            "unknown units 'inch'",
        ),
        ("iso230-2", {"targets": [0, 1], "down": [[0, 1], [0, 1]]}, "up is missing"),
        ("circle", {"x": [1, 0], "y": [0, 1]}, "x needs at least 3 values"),
        ("circle", {"x": [1, 0, -1, 0], "y": [0, 1, 0]}, "x has 4 values but y has 3"),
        ("circle", {"x": [1, 0, -1], "y": [0, 1, None]}, "y[2] is null"),
        (
            "circle",
            {"x": [1, 0, -1], "y": [0, 1, 0], "nominal_radius": -3},
            "nominal_radius must be a positive number",
        ),
        (
            "s-piece",
            {"lines": [{"name": "a", "points": [[0, 0, 1], [1, 2]]}]},
            "lines[0].points[1] has 2 values",
        ),
    ],
)
def test_bad_input_exits_non_zero_with_a_precise_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, doc: Any, message: str
) -> None:
    code, _, err = check([command, write(tmp_path, "bad.json", doc)], capsys)
    assert code != 0
    assert message in err
    assert err.startswith(f"arbor check {command}: error:")


def test_nan_in_the_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nan.json"
    path.write_text('{"targets": [0, 1], "up": [[0, 1], [0, NaN]], "down": [[0, 1], [0, 1]]}')
    code, _, err = check(["iso230-2", str(path)], capsys)
    assert code != 0 and "up[1][1] is NaN" in err


def test_missing_file_and_broken_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = check(["circle", str(tmp_path / "nope.json")], capsys)
    assert code != 0 and "cannot read input" in err
    broken = tmp_path / "broken.json"
    broken.write_text('{"x": [1, 2,')
    code, _, err = check(["circle", str(broken)], capsys)
    assert code != 0 and "not valid JSON" in err


def test_unknown_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = check(["cone"], capsys)
    assert code != 0 and "invalid choice" in err


def test_runs_as_a_module(tmp_path: Path) -> None:
    doc = iso230_2_runs([0.0, 100.0, 200.0], backlash=0.002)
    proc = subprocess.run(
        [sys.executable, "-m", "arbor.check", "iso230-2", write(tmp_path, "a.json", doc)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["B"] == pytest.approx(0.002)
