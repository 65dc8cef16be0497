"""Configuration: every error reported at once; the quick single-source form; --check."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import run
from gateway.config import GatewaySettings, load_config, resolve, single_source_config
from gateway.errors import ConfigError
from tests.gateway.helpers import DATA


def test_every_problem_at_once(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        f"""
[mqtt]
url = "mqtt://u:p@127.0.0.1:1883"
[[source]]
address = "nohost"
devices = "{DATA / "Devices.xml"}"
site = "Plant 1"
machine = "m1"
deadband = {{ spindel_load = 1 }}
[[source]]
address = "127.0.0.1:7878"
devices = "{DATA / "Devices.xml"}"
site = "p1"
machine = "m1"
colour = "red"
"""
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = "\n".join(err.value.issues)
    assert len(err.value.issues) == 4, text
    assert "source[0].address" in text and "source[0].site" in text
    assert "spindel_load" in text and "source[1].colour" in text


def test_semantic_problems_at_once(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        f"""
[[source]]
address = "127.0.0.1:7878"
devices = "missing.xml"
site = "p1"
machine = "m1"
[[source]]
address = "127.0.0.1:7879"
devices = "{DATA / "Devices-multi.xml"}"
site = "p1"
machine = "m1"
"""
    )
    with pytest.raises(ConfigError) as err:
        resolve(load_config(path), GatewaySettings(mqtt_url=""))
    text = "\n".join(err.value.issues)
    assert "no broker URL" in text
    assert "missing.xml: cannot read" in text
    assert "several devices" in text
    assert "already served by source[0]" in text


def test_single_source_form_and_check(capsys: pytest.CaptureFixture[str]) -> None:
    config = single_source_config(
        shdr="127.0.0.1:7878", devices=DATA / "Devices.xml", device=None, site="p1", machine="m1"
    )
    (resolved,) = resolve(config, GatewaySettings(mqtt_url="mqtt://u:p@127.0.0.1:1"))
    assert resolved.endpoint.username == "u" and resolved.device.name == "VMC1"
    argv = [
        "--shdr",
        "127.0.0.1:7878",
        "--devices",
        str(DATA / "Devices.xml"),
        "--site",
        "p1",
        "--machine",
        "m1",
        "--mqtt-url",
        "mqtt://u:p@127.0.0.1:1",
        "--check",
    ]
    assert run(argv) == 0
    assert "p1/m1: shdr 127.0.0.1:7878 device VMC1" in capsys.readouterr().out
    assert run(["--site", "p1"]) == 2


def test_encodings_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    multi = DATA / "Devices-multi.xml"
    path.write_text(
        f"""
[mqtt]
url = "mqtt://u:p@127.0.0.1:1883"
[[source]]
address = "127.0.0.1:7878"
devices = "{multi}"
device = "mill1"
site = "p1"
machine = "m1"
encoding = "cp932"
[[source]]
address = "127.0.0.1:7878"
devices = "{multi}"
device = "mill2"
site = "p1"
machine = "m2"
[[source]]
address = "127.0.0.1:7879"
devices = "{DATA / "Devices.xml"}"
site = "p1"
machine = "m3"
encoding = "klingon"
"""
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.issues == [
        "source[2].encoding: unknown encoding 'klingon' (auto, utf-8, cp932, gbk, ...)"
    ]
    path.write_text(path.read_text().replace('"klingon"', '"gbk"'))
    with pytest.raises(ConfigError) as err:
        resolve(load_config(path), GatewaySettings(mqtt_url=""))
    assert "address 127.0.0.1:7878: sources disagree on encoding (auto, cp932)" in err.value.issues
