"""Real adapter captures and device files (tests/gateway/data/real, see its README) through the
parser, the Devices.xml mapping and the pipeline. Expected values are read off the files."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from gateway.buffer import DiskQueue
from gateway.config import PipelineConfig
from gateway.pipeline import ASSET_REMOVED_SIGNAL, TOOL_SIGNAL, MachinePipeline, MachineState
from gateway.sources.devices import DeviceModel, TargetKind, load_devices
from gateway.sources.shdr import AssetChange, Observation, Record, ShdrParser
from protocol import Condition, ConditionEvent, decode_event, decode_telemetry
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


@dataclass
class Published:
    """What the pipeline wrote for a capture, by signal."""

    values: dict[str, list[object]] = field(default_factory=dict)
    stamps: dict[str, list[datetime]] = field(default_factory=dict)
    conditions: list[Condition] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)


def _publish(
    tmp_path: Path, devices: str, capture: str, timestamps: str = "source"
) -> tuple[Published, MachinePipeline]:
    """The capture through a pipeline, as if it arrived at NOW. By default with the recorded
    times kept ("source"), so that the tests below can compare them with the capture's."""
    (device,) = load_devices(REAL / devices)
    parser = ShdrParser([device])
    store = DiskQueue(tmp_path / "q.sqlite")
    pipeline = MachinePipeline(
        MachineState("s1", "m1"), store, PipelineConfig(), timestamps=timestamps
    )
    for raw in (REAL / capture).read_bytes().splitlines(keepends=True):
        pipeline.process(parser.feed(raw.decode("utf-8"), NOW))
    pipeline.flush()
    out = Published()
    rows = store.pending(pipeline.state.key, after=0, limit=10_000, session="", live=False)
    for row in rows:
        out.sessions.append(row.session)
        if row.topic.endswith("/telemetry"):
            for sample in decode_telemetry(row.payload).samples:
                for name, value in sample.values.items():
                    out.values.setdefault(name, []).append(value)
                    out.stamps.setdefault(name, []).append(sample.ts)
            continue
        for ev in decode_event(row.payload).events:
            if isinstance(ev, ConditionEvent):
                out.conditions.append(ev.condition)
            else:
                out.values.setdefault(ev.signal, []).append(ev.value)
                out.stamps.setdefault(ev.signal, []).append(ev.ts)
    out.sessions = list(dict.fromkeys(out.sessions))
    return out, pipeline


def test_okuma_capture_through_the_pipeline(tmp_path: Path) -> None:
    out, pipeline = _publish(tmp_path, "okuma-Devices.xml", "okuma.shdr")
    v = out.values
    # machine coordinates (X1actm), not work coordinates (X1actw): both are POSITION ACTUAL
    assert v["position_x"] == [5742.856, 5705.566]
    assert v["x_mtc_lx1actw"] == [1039.897, 1002.607]
    assert v["position_z"] == [4850.0, 4820.76, 4450.7038, 4450.0241]  # Z1, not the W axis Z4
    assert v["x_mtc_lz4actm"] == [5577.068]
    assert v["position_c"] == [326.3]  # C3actm: the C axis (INDEX), not a spindle
    # the main spindle S1 (Rotary C1); S2 and S6 keep their own names
    assert v["spindle_speed"] == [0.0, 4.0]
    assert v["x_mtc_ls6speed"] == [0.0, 68.0, 169.0]
    assert v["spindle_override"] == [100.0]
    assert v["feedrate"] == [0.0, 7998.75, 63.7292, 63.6771]  # nativeUnits MILLIMETER/MINUTE
    assert v["cutting_time"] == [1232.0, 1233.0]
    assert v["program"] == ["IMTS-2022-2-HOB.MIN"]
    assert v["execution"] == ["READY", "ACTIVE"]
    assert v["functional_mode"] == ["PROCESS_DEVELOPMENT", "PRODUCTION"]
    assert v["controller_mode"] == ["AUTOMATIC"]
    assert v["tool_number"] == [2206, None, 8003]  # "p1CurrentTool||": no tool
    assert v["program_line"] == [None]  # p1linenumber UNAVAILABLE (LINE_NUMBER ABSOLUTE)
    assert v["x_mtc_lp1blocknumber"] == ["379", "5"]
    assert v["block"] == ["", "MT=VMTTR+VMTTL*100", "G138", "NN8C G21 HP=5 TC=1", "M06", "M110"]
    assert v["x_mtc_lp1lpathpos_x"] == [1039.897, 1002.607, -119.9999]
    assert v["x_mtc_lp1lpathpos_z"] == [269.0133, 24.6347]
    assert len(out.conditions) == 10 and {c.level for c in out.conditions} == {"NORMAL"}
    assert out.conditions[0].component == "controller"
    # Tool assets come stamped with their own last change (13:43, 10:33, 13:51:06): they start
    # no session and are placed at the stream's time.
    assert len(out.sessions) == 1 and pipeline.stats.sessions_from_time_jumps == 0
    tools = [orjson.loads(str(t)) for t in v[TOOL_SIGNAL]]
    assert [t["asset"] for t in tools] == ["123456.2201", "123456.20", "123456.8003"]
    assert tools[1]["status"] == ["EXPIRED"]
    assert tools[1]["life"][0] == {"type": "PART_COUNT", "value": 3.0, "dir": "UP", "limit": 0.0}
    assert tools[2]["ptn"] == "8003" and tools[2]["life"][1]["value"] == 60.0
    first_line = datetime(2022, 8, 8, 13, 51, 34, 716714, tzinfo=UTC)
    assert out.stamps[TOOL_SIGNAL][0] == first_line
    assert v[ASSET_REMOVED_SIGNAL] == ["123456.8003", "123456.2206"]


def test_mazak_capture_through_the_pipeline(tmp_path: Path) -> None:
    out, pipeline = _publish(tmp_path, "mazak01-Devices.xml", "mazak01.shdr")
    v = out.values
    # two Rotary "C" spindles: Srpm (the first) is spindle_speed, S2rpm keeps its own name
    assert v["spindle_speed"] == [2852.0]
    assert v["x_mtc_mazak01_c2_2"] == [0.0]
    assert v["spindle_load"] == [0.0] and v["load_c"] == [0.0]  # Sload and Cload, one Rotary
    assert v["spindle_temperature"] == [47.0] and v["x_mtc_mazak01_c2_3"] == [37.0]
    assert v["position_c"] == [270.0] and v["position_b"] == [90.0]
    assert v["feedrate"] == [pytest.approx(67.29623 * 304.8)]  # nativeUnits FOOT/MINUTE
    assert v["position_x"] == [-2.32664] and v["position_z"] == [-2.6162]
    assert v["feed_override"] == [100.0] and v["rapid_override"] == [25.0]
    assert v["spindle_override"] == [100.0]
    assert v["availability"] == [None]
    assert v["emergency_stop"] == ["ARMED"] and v["controller_mode"] == ["AUTOMATIC"]
    assert v["program"] == ["1006"] and v["program_line"] == [1] and v["tool_number"] == [16]
    assert v["part_count"] == [0] and v["execution"] == ["ACTIVE"]
    assert v["x_mtc_mazak01_path_2"] == [""]  # subprogram|
    assert len(out.conditions) == 21 and {c.level for c in out.conditions} == {"NORMAL"}
    components = [c.component for c in out.conditions]
    assert components[-6:-2] == [
        "spindle.load",
        "spindle.temperature",
        "spindle_2.load",
        "spindle_2.temperature",
    ]
    assert pipeline.stats.invalid_values == 0 and len(out.sessions) == 1


def test_fanuc_and_haas_device_files() -> None:
    (fanuc,) = load_devices(REAL / "fanuc-Devices.xml")
    target = {i.id: i.target for i in fanuc.items}
    assert target["path_feedrate"].signal == "feedrate"
    assert target["path_feedrate"].scale == 60.0  # MILLIMETER/SECOND -> mm/min
    assert target["Fovr"].signal == "feed_override"  # a PATH_FEEDRATE in PERCENT (1.1)
    assert target["c3"].signal == "spindle_override"  # SPINDLE_SPEED OVERRIDE in PERCENT
    assert target["c4"].signal == "spindle_load"  # LOAD subType ACTUAL
    assert target["c2"].signal == "spindle_speed"
    assert target["a2"].signal == "position_a"
    assert target["path_pos"].kind is TargetKind.PATH_POSITION
    (haas,) = load_devices(REAL / "haas-Devices.xml")
    assert haas.lookup("spindle_speed") is haas.lookup("Sspeed") is haas.lookup("s1")
    assert {i.id: i.target.signal for i in haas.items}["PartCount"] == "part_count"


def test_cppagent_vmc_3axis_device_file() -> None:
    # the reference agent's simulator device: its spindle is the Rotary C, whose only load is
    # called Cload; overrides in the 1.1 form; feedrate in MILLIMETER/SECOND
    (vmc,) = load_devices(REAL / "vmc-3axis-Devices.xml")
    by_key = {k: vmc.lookup(k) for k in ("Cload", "spindle_speed", "SspeedOvr", "path_feedrate")}
    signal = {k: item.target.signal for k, item in by_key.items() if item is not None}
    assert signal == {
        "Cload": "spindle_load",
        "spindle_speed": "spindle_speed",
        "SspeedOvr": "spindle_override",
        "path_feedrate": "feedrate",
    }
    feed = vmc.lookup("path_feedrate")
    assert feed is not None and feed.target.scale == 60.0
    assert {i.id: i.target.signal for i in vmc.items}["Fovr"] == "feed_override"
    assert {i.id: i.target.signal for i in vmc.items}["cnt1"] == "tool_number"  # TOOL_ID


def test_a_capture_years_old_is_shifted_to_the_gateway_clock(tmp_path: Path) -> None:
    # Sent live with its recorded 2022 times, every sample would be refused by ingest (over
    # 30 days in the past). "auto" moves the whole stream by one offset: the first line lands
    # at its arrival and the spacing between lines stays the recorded one.
    kept, _ = _publish(tmp_path / "source", "okuma-Devices.xml", "okuma.shdr")
    shifted, pipeline = _publish(tmp_path / "auto", "okuma-Devices.xml", "okuma.shdr", "auto")
    assert pipeline.stats.clock_corrections == 1
    assert shifted.values == kept.values
    assert len(shifted.sessions) == len(kept.sessions) == 1
    offset = NOW - datetime(2022, 8, 8, 13, 51, 34, 716714, tzinfo=UTC)
    for name, stamps in kept.stamps.items():
        assert shifted.stamps[name] == [t + offset for t in stamps], name
