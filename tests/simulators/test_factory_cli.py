"""Factory TOML validation (every error at once) and the CLI end to end without a broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulators.cli import run
from simulators.errors import FactoryConfigError
from simulators.factory import load_factory, parse_factory

GOOD = """
site = "plant1"
[calendar]
workdays = ["mon", "tue", "wed", "thu", "fri", "sat"]
shifts = [
  {name = "day", start = "07:00", end = "15:00"},
  {name = "night", start = "22:00", end = "06:00"},
]
breaks = [{start = "11:00", end = "11:30"}]
[[machines]]
kind = "five_axis"
count = 2
prefix = "fx"
[[machines]]
kind = "lathe"
ids = ["t-01", "t-02", "t-03"]
programs = ["o7101", "o7102"]
"""


def test_factory_toml(tmp_path: Path) -> None:
    p = tmp_path / "f.toml"
    p.write_text(GOOD, encoding="utf-8")
    f = load_factory(p)
    assert f.site == "plant1"
    assert [m.machine_id for m in f.machines] == ["fx-001", "fx-002", "t-01", "t-02", "t-03"]
    assert f.machines[3].programs == ("o7101", "o7102")
    assert f.calendar.shifts[1].end == 30 * 3600  # past midnight


def test_every_error_is_reported_at_once() -> None:
    with pytest.raises(FactoryConfigError) as err:
        parse_factory({
            "site": "Bad Site",
            "colour": "red",
            "calendar": {"workdays": ["mon", "funday"], "shifts": [{"start": "25:00", "end": "x"}]},
            "machines": [
                {"kind": "robot", "count": 2},
                {"kind": "mill", "count": 0},
                {"kind": "lathe", "programs": ["nope"], "ids": ["a", "a"]},
            ],
        })  # fmt: skip
    text = "\n".join(err.value.errors)
    for needle in ("site:", "colour: unknown key", "funday", "25:00", "robot", "count",
                   "nope", "used twice"):  # fmt: skip
        assert needle in text, needle
    assert len(err.value.errors) >= 8


def test_cli_model_only_run_writes_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "truth.json"
    argv = "--machines 5 --rate 1 --duration 1800 --speedup 0 --seed 3 --transport none"
    rc = run([*argv.split(), "--summary", str(out), "--run-id", "cli"])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["format"] == "arbor-sim-truth/1"
    assert data["window"]["seconds"] == 1800 and data["seed"] == 3 and data["run_id"] == "cli"
    assert len(data["machines"]) == 5
    m = data["machines"]["m0001"]
    assert m["sessions"][0]["session"].startswith("cli-0-")


def test_cli_rejects_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--rate", "-1", "--transport", "none"]) == 2
    assert "rate_hz" in capsys.readouterr().err
