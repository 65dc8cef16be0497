"""Devices.xml mapping, normalisation, report by exception, time jumps, assets and the disk
queue, without a network."""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from gateway.buffer import DiskQueue, mark_historical
from gateway.config import PipelineConfig
from gateway.errors import DeviceModelError
from gateway.pipeline import TOOL_SIGNAL, MachinePipeline, MachineState
from gateway.sources.devices import load_devices, parse_devices, select_device
from gateway.sources.shdr import ShdrParser
from protocol import Condition, decode_event, decode_telemetry
from tests.gateway.helpers import DATA

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def test_dataitems_map_to_canonical_signals() -> None:
    (device,) = load_devices(DATA / "Devices.xml")
    signal = {i.id: i.target.signal for i in device.items}
    assert signal["Xact"] == "position_x"
    assert signal["Zact"] == "position_z"
    assert signal["Xload"] == "load_x"
    assert signal["Srpm"] == "spindle_speed"
    assert signal["Scmd"] == "spindle_speed_command"
    assert signal["Sload"] == "spindle_load"
    assert signal["Sovr"] == "spindle_override"
    assert signal["Stemp"] == "spindle_temperature"
    assert signal["execution"] == "execution"
    assert signal["line"] == "program_line"
    assert signal["partcount"] == "part_count"
    assert signal["Fact"] == "feedrate"
    assert signal["power"] == "power"
    assert signal["ambient"] == "ambient_temperature"
    assert signal["shift"] == "x_mtc_shift"
    assert signal["Svib"] == "x_mtc_svib"
    labels = {i.id: i.target.component for i in device.items if i.category == "CONDITION"}
    assert labels == {
        "Xtravel": "x_axis",
        "Scond": "spindle",
        "system": "controller.system",
        "comms": "controller.communications",
        "logic": "path",
    }


def test_multi_device_file_needs_a_name() -> None:
    devices = load_devices(DATA / "Devices-multi.xml")
    assert [d.name for d in devices] == ["mill1", "mill2"]
    assert select_device(devices, "mill-2", "f").name == "mill2"
    with pytest.raises(DeviceModelError, match="several devices"):
        select_device(devices, None, "f")
    with pytest.raises(DeviceModelError, match="no device 'mill3'"):
        select_device(devices, "mill3", "f")


def _pipeline(tmp_path: Path, **cfg: object) -> tuple[MachinePipeline, DiskQueue, ShdrParser]:
    store = DiskQueue(tmp_path / "q.sqlite")
    state = MachineState("s1", "m1")
    pipeline = MachinePipeline(state, store, PipelineConfig(**cfg), deadband={"spindle_load": 1.0})
    return pipeline, store, ShdrParser(load_devices(DATA / "Devices.xml"))


def _messages(store: DiskQueue, state: MachineState) -> list[tuple[str, bytes, str]]:
    rows = store.pending(state.key, after=0, limit=10_000, session="", live=False)
    return [(r.topic, r.payload, r.session) for r in rows]


def _published(
    store: DiskQueue, state: MachineState
) -> tuple[dict[str, list[object]], list[Condition]]:
    """What the machine's queued messages say: each signal's values in order (telemetry and
    value events alike), and the conditions."""
    values: dict[str, list[object]] = {}
    conditions: list[Condition] = []
    for topic, payload, _session in _messages(store, state):
        if topic.endswith("/telemetry"):
            for sample in decode_telemetry(payload).samples:
                for k, v in sample.values.items():
                    values.setdefault(k, []).append(v)
            continue
        for ev in decode_event(payload).events:
            if ev.signal == "condition":
                conditions.append(ev.condition)  # type: ignore[union-attr]
            else:
                values.setdefault(ev.signal, []).append(ev.value)  # type: ignore[union-attr]
    return values, conditions


def test_capture_through_the_pipeline(tmp_path: Path) -> None:
    pipeline, store, parser = _pipeline(tmp_path)
    for raw in (DATA / "capture.shdr").read_bytes().splitlines(keepends=True):
        pipeline.process(parser.feed(raw.decode(), NOW))
    pipeline.flush()
    msgs = _messages(store, pipeline.state)
    sessions = list(dict.fromkeys(s for _, _, s in msgs))
    assert len(sessions) == 2, "the backward time jump starts a second session"
    assert pipeline.stats.sessions_from_time_jumps == 1
    values: dict[str, list[object]] = {}
    conditions = []
    seqs: dict[str, list[int]] = {}
    for topic, payload, session in msgs:
        if topic.endswith("/telemetry"):
            t = decode_telemetry(payload)
            seqs.setdefault(session, []).append(t.seq)
            for s in t.samples:
                for k, v in s.values.items():
                    values.setdefault(k, []).append(v)
        else:
            e = decode_event(payload)
            seqs.setdefault(session, []).append(e.seq)
            for ev in e.events:
                if ev.signal == "condition":
                    conditions.append(ev.condition)  # type: ignore[union-attr]
                else:
                    values.setdefault(ev.signal, []).append(ev.value)  # type: ignore[union-attr]
    for session, numbers in seqs.items():
        assert numbers == list(range(len(numbers))), session
    assert values["position_x"] == [10.5, 11.0, 12.0, 0.0, 0.5]
    assert values["spindle_speed"] == [0.0, 1200.0]
    assert values["execution"] == ["READY", "ACTIVE", "PROGRAM_COMPLETED", "READY"]
    assert values["block"] == ["G01 X10 | Y20"]
    assert values["message"] == ["Check coolant level"]
    assert values["power"] == [5.5]
    assert values["part_count"] == [41, 0]
    assert values["x_mtc_svib"] == [0.1, 0.2, 0.3, 0.2, 0.1]
    assert values["x_mtc_pathpos_x"] == [10.0]
    assert [(c.component, c.level, c.code) for c in conditions] == [
        ("x_axis", "FAULT", "OTRAVEL"),
        ("x_axis", "NORMAL", ""),
        ("controller.system", "WARNING", "W42"),
    ]
    tools = [orjson.loads(str(v)) for v in values[TOOL_SIGNAL]]
    assert tools[0]["status"] == ["USED", "AVAILABLE"]
    assert tools[0]["life"][0] == {
        "type": "MINUTES",
        "value": 45.5,
        "dir": "UP",
        "warn": 100.0,
        "limit": 120.0,
    }
    assert tools[1]["life"][0]["value"] == 46.5  # @UPDATE_ASSET@


def test_report_by_exception_and_deadband(tmp_path: Path) -> None:
    pipeline, store, parser = _pipeline(tmp_path)
    for i, line in enumerate(
        [
            "|Sload|10",
            "|Sload|10.5",
            "|Sload|11.2",
            "|Sload|11.2",
            "|execution|ACTIVE",
            "|execution|active",
            "|Xact|1",
            "|Xact|1",
        ]
    ):
        pipeline.process(parser.feed(line, datetime(2030, 1, 1, 0, 0, i, tzinfo=UTC)))
    pipeline.flush()
    assert pipeline.stats.filtered == 4
    msgs = _messages(store, pipeline.state)
    telemetry = decode_telemetry(next(p for t, p, _ in msgs if t.endswith("telemetry")))
    loads = [s.values["spindle_load"] for s in telemetry.samples if "spindle_load" in s.values]
    assert loads == [10.0, 11.2]


def test_invalid_values_are_counted_not_fatal(tmp_path: Path) -> None:
    pipeline, _store, parser = _pipeline(tmp_path)
    for line in ["|execution|DANCING", "|Xact|abc", "|Xtravel|PANIC|1|||x", "|Xact|2"]:
        pipeline.process(parser.feed(line, NOW))
    assert pipeline.stats.invalid_values == 3
    pipeline.flush()


def test_snapshot_repeats_event_state(tmp_path: Path) -> None:
    pipeline, store, parser = _pipeline(tmp_path)
    pipeline.process(parser.feed("|execution|ACTIVE|Xtravel|FAULT|OT|||over|Xact|1", NOW))
    pipeline.flush()
    before = len(store)
    pipeline.store_snapshot()
    assert len(store) == before + 1
    rows = store.pending(pipeline.state.key, after=0, limit=100, session="", live=False)
    snap = decode_event(rows[-1].payload)
    assert {e.signal for e in snap.events} == {"execution", "condition"}


def test_disk_queue_bound_ack_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    q = DiskQueue(path, max_messages=10, policy="drop_oldest")
    ids = [q.append("s/m", "S1", i, "t", b'{"historical":false,"i":%d}' % i) for i in range(12)]
    assert len(q) == 10 and q.dropped == 2
    rows = q.pending("s/m", after=0, limit=100, session="S1", live=True)
    assert [r.seq for r in rows] == list(range(2, 12))
    q.ack(ids[2])  # type: ignore[arg-type]
    q.dead_letter(ids[3], "not authorised")  # type: ignore[arg-type]
    q.close()
    q2 = DiskQueue(path, max_messages=10, policy="drop_newest")
    assert len(q2) == 8
    assert q2.pending("s/m", after=0, limit=1, session="S2", live=False)[0].seq == 4
    q2.append("s/m", "S2", 0, "t", b"{}")
    q2.append("s/m", "S2", 1, "t", b"{}")
    assert q2.append("s/m", "S2", 2, "t", b"{}") is None and q2.dropped == 1
    assert mark_historical(b'{"v":1,"historical":false}') == b'{"v":1,"historical":true}'
    q2.close()


def test_what_is_read_ahead_of_the_disk_is_bounded(tmp_path: Path) -> None:
    """Bug 7 of docs/reliability.md: lines read from the adapter but not yet on disk die with a
    SIGKILLed gateway. With the pipeline stalled, the connection stops reading after
    ``queue_size`` lines (TCP backpressure) instead of buffering the adapter's stream in memory;
    and a running pipeline puts its open batch on disk within ``batch_interval_s``."""
    import asyncio

    from gateway.app import Gateway
    from gateway.config import GatewayConfig, GatewaySettings, resolve

    lines = "".join(
        f"2024-05-01T00:00:{i // 100:02d}.{i % 100:02d}0Z|Xact|{i}|Srpm|{1000 + i}\n"
        for i in range(5000)
    ).encode()

    async def main() -> tuple[int, int, int, int]:
        async def adapter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # Closed also when asyncio.run cancels this handler at the end: a writer left open
            # warns from __del__ ("loop is closed") in whichever later test collects it.
            try:
                writer.write(lines)
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
                    await reader.read()
            finally:
                writer.close()

        server = await asyncio.start_server(adapter, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await _with_server(port)
        finally:
            server.close()
            await server.wait_closed()

    async def _with_server(port: int) -> tuple[int, int, int, int]:
        config = GatewayConfig.model_validate(
            {
                "mqtt": {"url": "mqtt://u:p@127.0.0.1:9"},  # never used: nothing is published
                "buffer": {"path": str(tmp_path / "b.sqlite")},
                "pipeline": {"batch_interval_s": 0.2},
                "source": [{"address": f"127.0.0.1:{port}", "devices": str(DATA / "Devices.xml"),
                            "site": "t", "machine": "m"}],
            }
        )  # fmt: skip
        settings = GatewaySettings()
        gw = Gateway(config, resolve(config, settings), settings)
        m = gw.machines[0]
        parser = gw.connections[0].parser
        conn = asyncio.create_task(gw.connections[0].run())
        try:
            last, still = -1, 0.0  # wait until reading stops (the queue is full)
            async with asyncio.timeout(60):
                while still < 2.0:
                    await asyncio.sleep(0.2)
                    still = still + 0.2 if parser.stats.lines == last else 0.0
                    last = parser.stats.lines
            read_stalled, queued = parser.stats.lines, len(m.pipeline.queue)
            pipe = asyncio.create_task(m.pipeline.run())
            async with asyncio.timeout(60):  # the pipeline drains it; batches reach the disk
                while parser.stats.lines < 5000 or len(m.pipeline.queue) or m.pipeline._batch:  # noqa: ASYNC110 (polling counters)
                    await asyncio.sleep(0.05)
            pipe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pipe
            return read_stalled, queued, m.pipeline.stats.samples, len(gw.store)
        finally:
            conn.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await conn
            gw.store.close()

    read_stalled, queued, samples, stored = asyncio.run(main())
    assert queued == PipelineConfig().queue_size <= 100
    assert read_stalled <= queued + 2  # + the line waiting to be put, + the adapter's banner
    assert samples == 5000 and stored >= 1


def test_a_gateway_behind_its_adapter_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator must see when the gateway reads the adapter late: what it has not read yet
    dies with it. An adapter streams 300 lines/s while the pipeline is stalled (the reader stops
    at ``queue_size`` lines and the stream piles up in the socket): the gateway logs how many
    seconds of the adapter's stream wait unread; once the pipeline runs, it logs that it has
    caught up, and every line is processed."""
    import asyncio

    from gateway.app import Gateway
    from gateway.config import GatewayConfig, GatewaySettings, resolve

    total = 3000

    async def main() -> tuple[float, float, int]:
        async def adapter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:  # closed also when cancelled at the end (see the test above)
                with contextlib.suppress(ConnectionError):
                    for i in range(total // 30):  # 30 lines every 0.1 s
                        writer.write(
                            "".join(
                                f"2024-05-01T00:{n // 6000:02d}:{n // 100 % 60:02d}."
                                f"{n % 100:02d}0Z|Xact|{n}|Srpm|{1000 + n}|Sload|{n % 7}."
                                f"{n % 13:02d}5\n"
                                for n in range(i * 30, i * 30 + 30)
                            ).encode()
                        )
                        await writer.drain()
                        await asyncio.sleep(0.1)
                    await reader.read()
            finally:
                writer.close()

        server = await asyncio.start_server(adapter, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        config = GatewayConfig.model_validate(
            {
                "mqtt": {"url": "mqtt://u:p@127.0.0.1:9"},  # never used: nothing is published
                "buffer": {"path": str(tmp_path / "b.sqlite")},
                "source": [{"address": f"127.0.0.1:{port}", "devices": str(DATA / "Devices.xml"),
                            "site": "t", "machine": "m"}],
            }
        )  # fmt: skip
        settings = GatewaySettings()
        gw = Gateway(config, resolve(config, settings), settings)
        m, c = gw.machines[0], gw.connections[0]
        conn = asyncio.create_task(c.run())
        pipe = None
        try:
            async with asyncio.timeout(60):
                while not c.behind:  # noqa: ASYNC110 (polling a flag the reader sets)
                    await asyncio.sleep(0.2)
            worst = c.lag_s
            pipe = asyncio.create_task(m.pipeline.run())
            async with asyncio.timeout(60):
                while c.behind or c.parser.stats.lines < total:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            return worst, c.lag_s, m.pipeline.stats.observations
        finally:
            for t in (conn, pipe):
                if t is not None:
                    t.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await t
            gw.store.close()
            server.close()
            await server.wait_closed()

    with caplog.at_level(logging.WARNING, logger="gateway.sources.shdr"):
        worst, after, observations = asyncio.run(main())
    assert worst >= 2.0
    assert after < 0.5
    assert observations == 3 * total
    messages = [r.getMessage() for r in caplog.records]
    assert any("falling behind the adapter" in t and "s of its stream" in t for t in messages)
    assert any("caught up with the adapter" in t for t in messages)


_UNITS_XML = """<?xml version="1.0" encoding="UTF-8"?>
<MTConnectDevices xmlns="urn:mtconnect.org:MTConnectDevices:1.3"><Devices>
<Device id="d" name="lathe"><Components>
 <Axes id="a"><Components>
  <Linear id="x"><DataItems>
   <DataItem id="xp" category="SAMPLE" type="POSITION" subType="ACTUAL" units="MILLIMETER"
     nativeUnits="INCH"/>
  </DataItems></Linear>
  <Spindle id="s" name="S"><DataItems>
   <DataItem id="st" category="SAMPLE" type="TEMPERATURE" units="CELSIUS" nativeUnits="FAHRENHEIT"/>
   <DataItem id="sr" category="SAMPLE" type="SPINDLE_SPEED" nativeUnits="REVOLUTION/MINUTE"
     units="REVOLUTION/MINUTE"/>
  </DataItems></Spindle>
 </Components></Axes>
 <Controller id="c"><Components><Path id="p"><DataItems>
  <DataItem id="pc" category="EVENT" type="PART_COUNT"/>
  <DataItem id="or" category="SAMPLE" type="ORIENTATION" units="DEGREE_3D"/>
  <DataItem id="ct" category="SAMPLE" type="ACCUMULATED_TIME" subType="x:CUTTING_TIME"
    units="SECOND" nativeUnits="MINUTE"/>
  <DataItem id="vars" category="EVENT" type="VARIABLE" representation="DATA_SET"/>
  <DataItem id="al" category="EVENT" type="ALARM"/>
 </DataItems></Path></Components></Controller>
</Components></Device></Devices></MTConnectDevices>"""


def test_units_resets_three_space_and_data_sets(tmp_path: Path) -> None:
    devices = parse_devices(_UNITS_XML)  # a str that carries an encoding declaration
    store = DiskQueue(tmp_path / "q.sqlite")
    pipeline = MachinePipeline(MachineState("s1", "m1"), store, PipelineConfig())
    parser = ShdrParser(devices)
    for line in [
        "2024-05-01T10:00:00Z|xp|1.5|st|212|sr|100|pc|17|or|10 20 30|ct|2",
        "2024-05-01T10:00:01Z|pc|0:MANUAL|vars|:MANUAL a=1 b={c=2}",
        "2024-05-01T10:00:02Z|al|OTHER|E12|CRITICAL|ACTIVE|Guard door open",
    ]:
        pipeline.process(parser.feed(line, NOW))
    pipeline.flush()
    values: dict[str, list[object]] = {}
    for topic, payload, _session in _messages(store, pipeline.state):
        if topic.endswith("/telemetry"):
            for s in decode_telemetry(payload).samples:
                for k, v in s.values.items():
                    values.setdefault(k, []).append(v)
        else:
            for ev in decode_event(payload).events:
                values.setdefault(ev.signal, []).append(ev.value)  # type: ignore[union-attr]
    assert values["position_x"] == [pytest.approx(38.1)]  # INCH -> mm
    assert values["spindle_temperature"] == [pytest.approx(100.0)]  # FAHRENHEIT -> °C
    assert values["spindle_speed"] == [100.0]  # a Spindle component (MTConnect 1.0/1.1)
    assert values["cutting_time"] == [120.0]  # MINUTE -> s
    assert values["part_count"] == [17, 0]  # a reset: the value, then what reset it
    assert values["x_mtc_or_x"] == [10.0] and values["x_mtc_or_z"] == [30.0]
    assert values["x_mtc_vars"] == [":MANUAL a=1 b={c=2}"]
    assert values["x_mtc_al"] == ["OTHER E12 CRITICAL ACTIVE Guard door open"]
    assert pipeline.stats.invalid_values == 0


def test_active_conditions_in_the_snapshot(tmp_path: Path) -> None:
    pipeline, store, parser = _pipeline(tmp_path)

    def active() -> list[tuple[str, str]]:
        pipeline.flush()
        before = len(_messages(store, pipeline.state))
        pipeline.store_snapshot()
        snapshot = _messages(store, pipeline.state)[before:]
        return sorted(
            (e.condition.level, e.condition.code)  # type: ignore[union-attr]
            for _, payload, _ in snapshot
            for e in decode_event(payload).events
            if e.signal == "condition"
        )

    for line in [
        "2024-05-01T10:00:00Z|system|FAULT|2001|1|LOW|EMERGENCY STOP",
        "2024-05-01T10:00:01Z|system|WARNING|1001||HIGH|Lube low",
    ]:
        pipeline.process(parser.feed(line, NOW))
    assert active() == [("FAULT", "2001"), ("WARNING", "1001")]  # two at once
    pipeline.process(parser.feed("2024-05-01T10:00:02Z|system|NORMAL|2001|||", NOW))
    assert active() == [("WARNING", "1001")]  # NORMAL with a code clears that one
    pipeline.process(parser.feed("2024-05-01T10:00:03Z|system|UNAVAILABLE||||", NOW))
    assert active() == [("UNAVAILABLE", "")]  # the adapter no longer knows: nothing else
    pipeline.process(parser.feed("2024-05-01T10:00:04Z|system|NORMAL||||", NOW))
    assert active() == []


def test_an_integer_too_long_for_the_wire_is_an_invalid_value(tmp_path: Path) -> None:
    # found by feeding random lines: it made the whole batch unencodable and the flush raise
    pipeline, store, parser = _pipeline(tmp_path)
    pipeline.process(parser.feed("2024-05-01T10:00:00Z|partcount|" + "9" * 30 + "|line|7", NOW))
    pipeline.flush()
    (_, payload, _) = _messages(store, pipeline.state)[-1]
    events = decode_event(payload).events
    assert [(e.signal, e.value) for e in events] == [("program_line", 7)]  # type: ignore[union-attr]
    assert pipeline.stats.invalid_values == 1


def test_lines_shaped_like_a_siemens_840d_adapter(tmp_path: Path) -> None:
    # The shapes of a 2013 Hermle (Siemens 840D) capture quoted in kristoferB/LISA (no licence
    # stated, so not copied): two active alarms of one item told apart by "(1)"/"(2)" codes,
    # alarm texts in German and Swedish, an empty message, a value with a trailing blank.
    pipeline, store, parser = _pipeline(tmp_path)
    for line in [
        "2013-09-11T08:37:10.312Z|system|WARNING|120120(1)|100||Summalarm för fel vid åtkomst",
        "2013-09-11T08:37:10.312Z|system|WARNING|120120(2)|100||Kabinentür öffnet nicht.",
        "2013-09-11T08:37:10.312Z|execution|STOPPED|line||mode|MANUAL|program|_N_CMM_SINGLE_MPF",
        "2013-09-11T08:37:10.312Z|block||estop|ARMED",
        "2013-09-11T08:37:10.312Z|msg||",
        "2013-09-11T08:37:10.312Z|shift|X1 Y1 Z1 SP1 MAG1 C1 A1 U1 Y2 |partcount|0",
        "2013-09-11T08:37:10.312Z|pathpos|500.2180000000 1060.0000000000 749.9000000000",
    ]:
        pipeline.process(parser.feed(line + "\r\n", NOW))
    pipeline.flush()
    values, conditions = _published(store, pipeline.state)
    assert [(c.level, c.code, c.text) for c in conditions] == [
        ("WARNING", "120120(1)", "Summalarm för fel vid åtkomst"),
        ("WARNING", "120120(2)", "Kabinentür öffnet nicht."),
    ]
    assert values["execution"] == ["STOPPED"] and values["controller_mode"] == ["MANUAL"]
    assert values["program"] == ["_N_CMM_SINGLE_MPF"] and values["program_line"] == [None]
    assert values["block"] == [""] and values["emergency_stop"] == ["ARMED"]
    assert values["message"] == [""]
    assert values["x_mtc_shift"] == ["X1 Y1 Z1 SP1 MAG1 C1 A1 U1 Y2"]
    assert values["part_count"] == [0]
    assert values["x_mtc_pathpos_y"] == [1060.0]
    assert pipeline.stats.invalid_values == 0


def test_unavailable_written_with_at_signs(tmp_path: Path) -> None:
    pipeline, store, parser = _pipeline(tmp_path)
    for line in [
        "2024-05-01T10:00:00Z|execution|ACTIVE|Xact|1.5|msg|M1|hello",
        "2024-05-01T10:00:01Z|execution|@UNAVAILABLE@|Xact|@UNAVAILABLE@|msg||@UNAVAILABLE@",
        "2024-05-01T10:00:02Z|system|@UNAVAILABLE@||||",
    ]:
        pipeline.process(parser.feed(line, NOW))
    pipeline.flush()
    values, conditions = _published(store, pipeline.state)
    levels = [c.level for c in conditions]
    assert values["execution"] == ["ACTIVE", None]
    assert values["position_x"] == [1.5, None]
    assert values["message"] == ["hello", None]
    assert levels == ["UNAVAILABLE"] and pipeline.stats.invalid_values == 0


def test_an_adapter_that_converts_its_values_itself(tmp_path: Path) -> None:
    # ``* conversionRequired: no`` (a command of the reference agent's adapter protocol): the
    # values are already in the DataItem's ``units`` (MILLIMETER), not its ``nativeUnits`` (INCH)
    pipeline = MachinePipeline(
        MachineState("s1", "m1"), DiskQueue(tmp_path / "q.sqlite"), PipelineConfig()
    )
    parser = ShdrParser(parse_devices(_UNITS_XML))
    pipeline.process(parser.feed("2024-05-01T10:00:00Z|xp|1", NOW))
    parser.feed("* conversionRequired: no", NOW)
    pipeline.process(parser.feed("2024-05-01T10:00:01Z|xp|30", NOW))
    parser.reset()  # a new connection: the adapter says it again if it still means it
    pipeline.process(parser.feed("2024-05-01T10:00:02Z|xp|2", NOW))
    pipeline.flush()
    values = [
        s.values["position_x"]
        for topic, payload, _ in _messages(pipeline.store, pipeline.state)
        if topic.endswith("/telemetry")
        for s in decode_telemetry(payload).samples
    ]
    assert values == [pytest.approx(25.4), 30.0, pytest.approx(50.8)]


def _stamps(tmp_path: Path, timestamps: str, lines: list[tuple[float, float]]) -> list[float]:
    """Seconds after NOW at which each line's position_x is published; each line is (source
    time, arrival time) in seconds after NOW."""
    store = DiskQueue(tmp_path / f"{timestamps}.sqlite")
    state = MachineState("s1", "m1")
    pipeline = MachinePipeline(state, store, PipelineConfig(), timestamps=timestamps)
    parser = ShdrParser(load_devices(DATA / "Devices.xml"))
    for i, (source, arrival) in enumerate(lines):
        stamp = (NOW + timedelta(seconds=source)).isoformat().replace("+00:00", "Z")
        pipeline.process(parser.feed(f"{stamp}|Xact|{i}", NOW + timedelta(seconds=arrival)))
    pipeline.flush()
    out = []
    for topic, payload, _ in _messages(store, state):
        if topic.endswith("/telemetry"):
            out += [(s.ts - NOW).total_seconds() for s in decode_telemetry(payload).samples]
    return out


def test_a_wrong_controller_clock_is_shifted_into_what_ingest_accepts(tmp_path: Path) -> None:
    day = 86_400.0
    # Within the window (up to 240 s ahead, a day behind): the adapter's own times, to the ms.
    near = [(-3600.0, 0.0), (-3599.5, 0.5), (120.0, 1.0), (120.25, 1.25)]
    assert _stamps(tmp_path, "auto", near) == [-3600.0, -3599.5, 120.0, 120.25]
    # Ten minutes fast, or three days slow: shifted by one offset, spacing kept.
    fast = [(600.0, 0.0), (600.5, 0.5), (601.0, 1.0)]
    assert _stamps(tmp_path / "fast", "auto", fast) == [0.0, 0.5, 1.0]
    slow = [(-3 * day, 0.0), (-3 * day + 0.1, 0.1)]
    assert _stamps(tmp_path / "slow", "auto", slow) == [0.0, 0.1]
    # The clock set right mid-stream: its times are trusted again (not shifted twice).
    fixed = [(600.0, 0.0), (2.0, 2.0), (3.0, 3.0)]
    assert _stamps(tmp_path / "fixed", "auto", fixed) == [0.0, 2.0, 3.0]
    # "source" keeps whatever the adapter says; "arrival" is the gateway's clock alone.
    assert _stamps(tmp_path / "src", "source", fast) == [600.0, 600.5, 601.0]
    assert _stamps(tmp_path / "arr", "arrival", [(600.0, 0.0), (-9.0, 0.5)]) == [0.0, 0.5]
