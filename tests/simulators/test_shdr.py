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
from simulators.truth import iso_ms

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
    lines += gen.snapshot()
    assert _keys(lines) <= ids
    assert {"exec", "mode", "Srpm", "Xact", "Aact", "Cact"} <= _keys(lines)
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\|", ln) for ln in lines)


def test_ping_pong_snapshot_and_changes(tmp_path: Path) -> None:
    async def main() -> tuple[list[str], list[str]]:
        fleet = Fleet(default_factory(2), rate_hz=10, start=START, seed=3)
        machines = [0, 1]
        gen = ShdrLines(fleet, machines)
        capture = (tmp_path / "cap.shdr").open("w", encoding="utf-8")
        async with ShdrServer(port=0, snapshot=gen.snapshot, record=capture) as server:
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


def _stamped(lines: list[str]) -> list[tuple[str, str, str]]:
    """(key, timestamp, value) of every data line; a condition's key includes its code."""
    out = []
    for line in lines:
        if line.startswith("*"):
            continue
        ts, *fields = line.split("|")
        if len(fields) == 6 and fields[0].split(":")[-1] in _COND_KEYS:
            out.append((f"{fields[0]}/{fields[2]}", ts, "|".join(fields[1:])))
            continue
        out += [(k, ts, v) for k, v in zip(fields[0::2], fields[1::2], strict=True)]
    return out


_COND_KEYS = {"system", "coolant_cond", "Scond", "Xcond", "Ycond", "Zcond"}


def _assert_one_value_per_instant(lines: list[str]) -> None:
    """Per key, timestamps never go back and an instant never carries two different values."""
    last: dict[str, tuple[str, str]] = {}
    for key, ts, value in _stamped(lines):
        if key in last:
            pts, pvalue = last[key]
            assert ts >= pts, f"{key}: {ts} after {pts}"
            assert ts > pts or value == pvalue, f"{key} at {ts}: {pvalue!r} then {value!r}"
        last[key] = (ts, value)


def test_snapshot_carries_the_time_of_its_values() -> None:
    # Bug 4 of docs/reliability.md: the snapshot was stamped with the next tick's time while
    # holding the last tick's values, so the next line repeated its timestamp with new values.
    fleet = Fleet(default_factory(3), rate_hz=10, start=START, seed=0)
    gen = ShdrLines(fleet, [0, 1, 2])
    for _ in range(4000):
        gen.step(fleet.step())
    last_tick = fleet.time - fleet.dt
    snap = gen.snapshot()
    assert snap and {ln.split("|", 1)[0] for ln in snap} == {iso_ms(last_tick)}
    more: list[str] = []
    while not more:
        more = gen.step(fleet.step())
    assert more[0].split("|", 1)[0] > snap[0].split("|", 1)[0]
    assert all(ln.split("|", 1)[0] == iso_ms(last_tick + fleet.dt) for ln in more)
    _assert_one_value_per_instant(snap + more)


def test_snapshot_before_the_first_tick_precedes_it() -> None:
    fleet = Fleet(default_factory(2), rate_hz=10, start=START, seed=3)
    gen = ShdrLines(fleet, [0, 1])
    snap = gen.snapshot()
    first = gen.step(fleet.step())
    assert {ln.split("|", 1)[0] for ln in snap} == {iso_ms(START - 0.1)}
    assert {ln.split("|", 1)[0] for ln in first} == {iso_ms(START)}
    _assert_one_value_per_instant(snap + first)


def test_readers_joining_mid_stream_never_get_two_values_at_one_instant() -> None:
    async def main() -> list[list[str]]:
        fleet = Fleet(default_factory(3), rate_hz=10, start=START, seed=5)
        gen = ShdrLines(fleet, [0, 1, 2])
        async with ShdrServer(port=0, snapshot=gen.snapshot) as server:
            task = asyncio.create_task(
                run_fleet_adapter(fleet, [0, 1, 2], server, duration_s=200, speedup=0, lines=gen)
            )
            got: list[list[str]] = []
            streams = []
            for _ in range(4):  # readers join while the adapter is between ticks
                r, w = await asyncio.open_connection("127.0.0.1", server.port)
                streams.append((r, w))
                got.append([])
                for _ in range(50):
                    await asyncio.sleep(0)
            await task
            for (r, w), lines in zip(streams, got, strict=True):
                w.close()
                async with asyncio.timeout(30):
                    lines += (await r.read()).decode().splitlines()
                await w.wait_closed()
        return got

    got = asyncio.run(main())
    for lines in got:
        assert sum(1 for ln in lines if not ln.startswith("*")) > 10
        _assert_one_value_per_instant(lines)


def test_a_lagging_reader_gets_every_line_when_the_adapter_ends(tmp_path: Path) -> None:
    # The adapter's run ends while a slow reader (a loaded gateway) is seconds behind: with a
    # linger it ends the stream with a FIN and waits, so the reader still gets every line.
    async def main() -> tuple[int, int]:
        total = 0
        async with ShdrServer(port=0, linger_s=60) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            await _read_until(reader, lambda ln: "shdrVersion" in ln)
            writer.write(b"* PING\n")

            async def read_all() -> int:
                await asyncio.sleep(1.0)  # lag behind: the socket buffers fill up
                got = 0
                while raw := await reader.readline():
                    got += b"|Xact|" in raw
                    if got % 2000 == 0:  # a gateway's heartbeat, also after the adapter stopped
                        writer.write(b"* PING\n")
                writer.close()
                return got

            reading = asyncio.create_task(read_all())
            for k in range(400):  # ~8 MB: far more than the socket buffers hold
                batch = [f"2025-03-03T06:00:00.000Z|Xact|{k}.{j:04d}|pad|{'x' * 150}"
                         for j in range(120)]  # fmt: skip
                await server.broadcast(batch)
                total += len(batch)
        return total, await reading

    total, got = asyncio.run(main())
    assert got == total
