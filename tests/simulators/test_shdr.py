"""The SHDR adapter simulator: Devices.xml matches the keys, PING/PONG, capture and replay."""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

from simulators.factory import default_factory
from simulators.model import Fleet
from simulators.shdr_adapter import (
    PONG_MS,
    ShdrLines,
    ShdrServer,
    devices_xml,
    read_capture,
    replay_capture,
    run_fleet_adapter,
)

START = datetime(2025, 3, 3, 6, 0, tzinfo=UTC).timestamp()
NS = "{urn:mtconnect.org:MTConnectDevices:2.0}"


async def _read_until(reader: asyncio.StreamReader, pred: object, limit_s: float = 5) -> list[str]:
    lines: list[str] = []
    async with asyncio.timeout(limit_s):
        while True:
            raw = await reader.readline()
            if not raw:
                return lines
            lines.append(raw.decode().rstrip("\n"))
            if callable(pred) and pred(lines[-1]):
                return lines


def _keys(lines: list[str]) -> set[str]:
    keys: set[str] = set()
    for line in lines:
        if line.startswith("*"):
            continue
        fields = line.split("|")[1:]
        if len(fields) >= 6 and fields[0].endswith(("cond", "system")):
            keys.add(fields[0])  # a condition line: key then five fields
            continue
        keys.update(fields[0::2])
    return keys


def test_served_keys_are_declared_in_devices_xml(tmp_path: Path) -> None:
    fleet = Fleet(default_factory(3), rate_hz=10, start=START, seed=1)
    xml = devices_xml(fleet, [1])  # a five-axis machine
    root = ET.fromstring(xml)  # noqa: S314 (our own document)
    ids = {e.get("id") for e in root.iter(f"{NS}DataItem")}
    types = {e.get("type") for e in root.iter(f"{NS}DataItem")}
    assert {"EXECUTION", "CONTROLLER_MODE", "PART_COUNT", "ROTARY_VELOCITY", "POSITION"} <= types
    gen = ShdrLines(fleet, [1])
    lines = []
    for _ in range(600):
        lines += gen.step(fleet.step())
    lines += gen.snapshot(fleet.time)
    assert _keys(lines) <= ids
    assert {"exec", "mode", "Srpm", "Xact", "Aact", "Cact"} <= _keys(lines)
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\|", ln) for ln in lines)


def test_ping_pong_snapshot_and_changes(tmp_path: Path) -> None:
    async def main() -> tuple[list[str], list[str]]:
        fleet = Fleet(default_factory(2), rate_hz=10, start=START, seed=3)
        machines = [0, 1]
        gen = ShdrLines(fleet, machines)
        capture = (tmp_path / "cap.shdr").open("w", encoding="utf-8")
        async with ShdrServer(
            port=0, snapshot=lambda: gen.snapshot(fleet.time), record=capture
        ) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            head = await _read_until(reader, lambda ln: "exec" in ln)
            writer.write(b"* PING\n")
            await writer.drain()
            pong = await _read_until(reader, lambda ln: ln.startswith("* PONG"))
            task = asyncio.create_task(
                run_fleet_adapter(fleet, machines, server, duration_s=3, speedup=0, lines=gen)
            )
            assert await task == 30
            more = await _read_until(reader, lambda ln: "m0002:Srpm" in ln)
            writer.close()
            await writer.wait_closed()
        capture.close()
        return head + pong, more

    head, more = asyncio.run(main())
    assert head[0] == "* adapterVersion: 2.0"
    assert f"* PONG {PONG_MS}" in head
    assert any("|m0001:exec|" in ln for ln in head)  # two machines: multi-device keys
    assert any("|m0002:Srpm|" in ln for ln in more)
    assert read_capture(tmp_path / "cap.shdr")


def test_replay_at_accelerated_pace(tmp_path: Path) -> None:
    cap = tmp_path / "c.shdr"
    cap.write_text(
        "* adapterVersion: 2.0\n"
        "2025-03-03T06:00:00.000Z|exec|READY\n"
        "2025-03-03T06:00:10.000Z|exec|ACTIVE\n"
        "terminal banner, not SHDR\n"
        "2025-03-03T06:00:20.0000000|exec|STOPPED\n",
        encoding="utf-8",
    )
    entries = read_capture(cap)
    assert [ts is None for ts, _ in entries] == [True, False, False, True, False]

    async def main() -> tuple[list[str], float]:
        async with ShdrServer(port=0) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            await _read_until(reader, lambda ln: ln.startswith("* shdrVersion"))
            while server.readers == 0:  # noqa: ASYNC110 (polling a counter, briefly)
                await asyncio.sleep(0.01)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            sent = await replay_capture(cap, server, speedup=20)  # 20 s of capture in 1 s
            elapsed = loop.time() - t0
            got = await _read_until(reader, lambda ln: "STOPPED" in ln)
            writer.close()
            await writer.wait_closed()
            assert sent == 5
            return got, elapsed

    got, elapsed = asyncio.run(main())
    assert got[-1].endswith("|exec|STOPPED")
    assert 0.9 <= elapsed < 3.0
