"""The gateway's parser and pipeline on the SHDR adapter simulator's own Devices.xml and lines
(a five-axis machine and a multi-device adapter): every key declared, every value valid."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from gateway.buffer import DiskQueue
from gateway.config import PipelineConfig
from gateway.pipeline import MachinePipeline, MachineState
from gateway.sources.devices import parse_devices
from gateway.sources.shdr import ShdrParser
from protocol import decode_event, decode_telemetry
from simulators.factory import default_factory
from simulators.model import Fleet
from simulators.shdr_adapter import ShdrLines, devices_xml

START = datetime(2025, 3, 3, 6, 0, tzinfo=UTC).timestamp()


def test_simulator_stream_maps_cleanly(tmp_path: Path) -> None:
    fleet = Fleet(default_factory(3), rate_hz=10, start=START, seed=1)
    machines = [0, 1]
    devices = parse_devices(devices_xml(fleet, machines))
    assert len(devices) == 2
    parser = ShdrParser(devices)
    store = DiskQueue(tmp_path / "q.sqlite")
    pipelines = {
        d.name: MachinePipeline(MachineState("sim", f"m{i}"), store, PipelineConfig())
        for i, d in enumerate(devices)
    }
    gen = ShdrLines(fleet, machines)
    lines = gen.snapshot()
    for _ in range(300):
        lines += gen.step(fleet.step())
    now = datetime.now(UTC)
    for line in lines:
        for r in parser.feed(line, now):
            device = getattr(r, "device", None)
            if device is not None:
                pipelines[device.name].process([r])
    for p in pipelines.values():
        p.flush()
    assert parser.stats.unknown_keys == 0 and parser.stats.malformed == 0
    assert all(p.stats.invalid_values == 0 for p in pipelines.values())
    signals: set[str] = set()
    for p in pipelines.values():
        for row in store.pending(p.state.key, after=0, limit=100_000, session="", live=False):
            if row.topic.endswith("/telemetry"):
                for s in decode_telemetry(row.payload).samples:
                    signals |= set(s.values)
            else:
                signals |= {e.signal for e in decode_event(row.payload).events}
    assert {"execution", "controller_mode", "part_count", "spindle_speed", "position_x"} <= signals
    store.close()
