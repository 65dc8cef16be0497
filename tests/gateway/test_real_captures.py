"""Real adapter captures and device files (tests/gateway/data/real, see its README) through the
parser, the Devices.xml mapping and the pipeline. Expected values are read off the files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from gateway.sources.devices import DeviceModel, load_devices
from gateway.sources.shdr import AssetChange, Observation, Record, ShdrParser
from tests.gateway.helpers import DATA

REAL = DATA / "real"
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _feed(parser: ShdrParser, capture: Path) -> list[Record]:
    records: list[Record] = []
    for raw in capture.read_bytes().splitlines(keepends=True):
        records += parser.feed(raw.decode("utf-8"), NOW)
    return records


def _okuma() -> tuple[DeviceModel, ShdrParser, list[Record]]:
    (device,) = load_devices(REAL / "okuma-Devices.xml")
    parser = ShdrParser([device], label="okuma")
    return device, parser, _feed(parser, REAL / "okuma.shdr")


def test_okuma_capture_parses_every_line() -> None:
    _device, parser, records = _okuma()
    observations = [r for r in records if isinstance(r, Observation)]
    first = [
        o for o in observations if o.ts == datetime(2022, 8, 8, 13, 51, 34, 716714, tzinfo=UTC)
    ]
    by_name = {o.item.name: o.fields for o in first}
    # the first line: every key of the machine, one (ApplicationInstallDate) not in the model
    assert by_name["avail"] == ("AVAILABLE",)
    assert by_name["OperatingSystemAll"][0].startswith("Name = Windows 10;Edition = Enterprise")
    assert by_name["OperatingSystemAll"][0].endswith("Domain Name = OKUMA-P229810;")
    assert by_name["ApplicationManufacture"] == ("OKUMA",)  # right after the undeclared key
    assert by_name["p1ProgramHeader"] == ("",)
    assert by_name["p1LPathPos"] == ("1039.897 0 269.0133",)
    assert by_name["S1CuttingSpeedA"] == ("0",)  # the last pair of the line
    assert by_name["system"] == ("NORMAL", "", "", "", "")
    assert by_name["BarFeederSystem1_cond"] == ("NORMAL", "", "", "", "")
    assert parser.stats.unknown_keys == 1
    assert parser.stats.malformed == 0 and parser.stats.stray == 0
    assets = [r for r in records if isinstance(r, AssetChange)]
    assert [(a.action, a.asset_id) for a in assets] == [
        ("remove_all", ""),
        ("add", "123456.2201"),
        ("add", "123456.20"),
        ("remove", "123456.8003"),
        ("remove", "123456.2206"),
        ("add", "123456.8003"),
    ]
    assert assets[0].asset_type == "CuttingTool"
    assert assets[1].body.startswith('<CuttingTool toolId="123456" serialNumber="2201"')
    assert assets[1].body.endswith("</CuttingToolLifeCycle></CuttingTool>")
    empty = [
        o for o in observations if o.ts == datetime(2022, 8, 8, 13, 51, 44, 204453, tzinfo=UTC)
    ]
    assert [(o.item.name, o.fields) for o in empty] == [
        ("p1CurrentTool", ("",)),
        ("p1ToolAssetId", ("",)),
    ]


def test_mazak_capture_parses_every_line() -> None:
    (device,) = load_devices(REAL / "mazak01-Devices.xml")
    parser = ShdrParser([device], label="mazak")
    records = _feed(parser, REAL / "mazak01.shdr")
    observations = [r for r in records if isinstance(r, Observation)]
    assert len(observations) == 67  # one per line
    assert parser.stats.unknown_keys == 0 and parser.stats.malformed == 0
    servo = observations[4]
    assert servo.item.name == "servo_cond" and servo.fields == ("Normal", "", "", "", "")
    assert observations[27].item.name == "subprogram" and observations[27].fields == ("",)
