"""The SHDR parser on hand-written lines: every line form and the leniency rules."""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime, timedelta

import pytest

from gateway.sources.assets import AssetStore
from gateway.sources.devices import load_devices
from gateway.sources.shdr import (
    AssetChange,
    Command,
    Observation,
    ShdrParser,
    parse_shdr_timestamp,
    split_fields,
)
from tests.gateway.helpers import DATA

NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def parser() -> ShdrParser:
    return ShdrParser(load_devices(DATA / "Devices.xml"), label="test")


def obs(records: list[object]) -> list[Observation]:
    return [r for r in records if isinstance(r, Observation)]


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("2024-05-01T10:00:00.123Z", 123000),
        ("2024-05-01T10:00:00.1234", 123400),
        ("2024-05-01T10:00:00.12345Z", 123450),
        ("2024-05-01T10:00:00.123456", 123456),
        ("2024-05-01T10:00:00.1234567Z", 123456),
        ("2024-05-01T10:00:00Z", 0),
        ("2024-05-01t10:00:00.5z", 500000),
    ],
)
def test_timestamps_with_3_to_7_digits(text: str, micro: int) -> None:
    ts = parse_shdr_timestamp(text)
    assert ts == datetime(2024, 5, 1, 10, 0, 0, micro, tzinfo=UTC)


def test_timestamp_with_offset_is_converted_to_utc() -> None:
    assert parse_shdr_timestamp("2024-05-01T12:00:00+02:00") == datetime(2024, 5, 1, 10, tzinfo=UTC)


def test_split_fields_honours_quotes_and_escaped_pipes() -> None:
    assert split_fields("ts|a|1|b|2") == ["ts", "a", "1", "b", "2"]
    assert split_fields('ts|block|"G01 X1 \\| Y2"|x|1') == ["ts", "block", "G01 X1 | Y2", "x", "1"]
    assert split_fields('ts|v|"unterminated|x|1') == ["ts", "v", '"unterminated', "x", "1"]
    assert split_fields("ts|v|a\\|b") == ["ts", "v", "a|b"]


@pytest.mark.parametrize(
    ("line", "fields"),
    [
        # cases of mtconnect/cppagent test_package/shdr_tokenizer_test.cpp (Apache-2.0): inside
        # a quoted field a backslash escapes the next character
        ('"a\\|b\\|c"|z', ["a|b|c", "z"]),
        ('y|"\\|b\\|c"|z', ["y", "|b|c", "z"]),
        ('y|"a\\|b\\|"|z', ["y", "a|b|", "z"]),
        ("x|y||z", ["x", "y", "", "z"]),
        # MTConnect.NET adapters (ShdrDataItem.ToString) escape a pipe without quoting the value;
        # the reference agent's own cases would cut these in two, we keep the value whole
        (
            "ts|msg|M1|Door open \\| cycle held|Xact|1",
            ["ts", "msg", "M1", "Door open | cycle held", "Xact", "1"],
        ),
        ('y|a\\|b"|z', ["y", 'a|b"', "z"]),  # no opening quote
        ('y|"a\\|b|z', ["y", '"a|b', "z"]),  # no closing quote
        ('y|"a\\|"z', ["y", '"a|"z']),  # the quote does not end the field
        # Windows paths in program names keep their backslashes
        ("ts|program|C:\\NC\\O1234.NC|line|5", ["ts", "program", "C:\\NC\\O1234.NC", "line", "5"]),
        ("ts|program|\\\\cell1\\nc\\P1", ["ts", "program", "\\\\cell1\\nc\\P1"]),
    ],
)
def test_split_fields_like_the_reference_agent(line: str, fields: list[str]) -> None:
    assert split_fields(line) == fields


def test_multi_pair_line(parser: ShdrParser) -> None:
    records = obs(parser.feed("2024-05-01T10:00:00.5|program|O1234|line|12|partcount|41\r\n", NOW))
    assert [(o.item.id, o.fields) for o in records] == [
        ("program", ("O1234",)),
        ("line", ("12",)),
        ("partcount", ("41",)),
    ]
    assert records[0].ts == datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC)
    assert records[0].arrival == NOW


def test_key_by_id_name_and_source(parser: ShdrParser) -> None:
    records = obs(parser.feed("|Xabs|1|Xact|2|z_pos|3|S1speed|4", NOW))
    assert [o.item.id for o in records] == ["Xact", "Xact", "Zact", "Srpm"]
    assert all(o.ts == NOW and o.stamped_on_arrival for o in records)


def test_condition_takes_five_fields_and_any_case(parser: ShdrParser) -> None:
    records = obs(
        parser.feed("2024-05-01T10:00:00Z|Xtravel|fault|OT|2|HIGH|over travel|Xact|1", NOW)
    )
    assert records[0].fields == ("fault", "OT", "2", "HIGH", "over travel")
    assert records[1].item.id == "Xact"
    short = obs(parser.feed("2024-05-01T10:00:00Z|Xtravel|NORMAL", NOW))
    assert short[0].fields == ("NORMAL", "", "", "", "")


def test_message_and_time_series(parser: ShdrParser) -> None:
    m = obs(parser.feed("2024-05-01T10:00:00Z|msg|M1|Hello|Xact|5", NOW))
    assert m[0].fields == ("M1", "Hello") and m[1].fields == ("5",)
    t = obs(parser.feed("2024-05-01T10:00:00Z|Svib|3|100|1 2 3", NOW))
    assert t[0].fields == ("3", "100", "1 2 3")


def test_undeclared_key_is_logged_once_and_skipped(
    parser: ShdrParser, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        first = obs(parser.feed("2024-05-01T10:00:00Z|nope|1|Xact|2", NOW))
        second = obs(parser.feed("2024-05-01T10:00:01Z|nope|1|Xact|3", NOW))
    assert [o.fields for o in first + second] == [("2",), ("3",)]
    assert sum("'nope'" in r.message for r in caplog.records) == 1
    assert parser.stats.unknown_keys == 2


def test_malformed_lines_do_not_stop_the_stream(parser: ShdrParser) -> None:
    for bad in ["not|a|timestamp", "2024-13-45T99:00:00Z|Xact|1", "2024-05-01T10:00:00Z||1|Xact"]:
        parser.feed(bad, NOW)
    banner = parser.feed("Adapter starting, build 1.2.3", NOW)
    good = obs(parser.feed("2024-05-01T10:00:00Z|Xact|7", NOW))
    assert banner == [] and good[0].fields == ("7",)
    assert parser.stats.malformed >= 2 and parser.stats.stray == 1


def test_commands_with_and_without_spaces(parser: ShdrParser) -> None:
    assert parser.feed("*PONG 10000", NOW) == [Command("pong", "10000")]
    assert parser.feed("* PONG 5000\r\n", NOW) == [Command("pong", "5000")]
    assert parser.feed("* adapterVersion:2.0", NOW) == [Command("adapterversion", "2.0")]
    assert parser.feed("*device: VMC1", NOW) == [Command("device", "VMC1")]


def test_multi_device_prefixes_and_device_command() -> None:
    parser = ShdrParser(load_devices(DATA / "Devices-multi.xml"))
    records = obs(parser.feed("2024-05-01T10:00:00Z|mill1:Xact|1|mill2:Xact|2|mill2:pc|5", NOW))
    assert [(o.device.name, o.item.id, o.fields[0]) for o in records] == [
        ("mill1", "Xact", "1"),
        ("mill2", "Xact", "2"),
        ("mill2", "pc", "5"),
    ]
    parser.feed("* device: mill2", NOW)
    (r,) = obs(parser.feed("2024-05-01T10:00:00Z|exec|ACTIVE", NOW))
    assert r.device.name == "mill2"


def test_single_line_and_multiline_assets(parser: ShdrParser) -> None:
    single = parser.feed(
        '2024-05-01T10:00:00Z|@ASSET@|T1|CuttingTool|<CuttingTool assetId="T1" toolId="1"/>', NOW
    )
    assert isinstance(single[0], AssetChange) and single[0].body.startswith("<CuttingTool")
    assert parser.feed("2024-05-01T10:00:00Z|@ASSET@|T2|CuttingTool|--multiline--ABC", NOW) == []
    assert parser.feed("<CuttingTool assetId='T2'>", NOW) == []
    assert parser.feed("</CuttingTool>", NOW) == []
    (done,) = parser.feed("--multiline--ABC\r\n", NOW)
    assert isinstance(done, AssetChange)
    assert done.action == "add" and done.asset_id == "T2"
    assert done.body == "<CuttingTool assetId='T2'>\n</CuttingTool>"
    (upd,) = parser.feed("2024-05-01T10:00:01Z|@UPDATE_ASSET@|T2|ToolLife|12|CutterStatus|x", NOW)
    assert isinstance(upd, AssetChange)
    assert upd.updates == (("ToolLife", "12"), ("CutterStatus", "x"))
    (rem,) = parser.feed("2024-05-01T10:00:02Z|@REMOVE_ASSET@|T2", NOW)
    assert isinstance(rem, AssetChange) and rem.action == "remove"
    (all_,) = parser.feed("2024-05-01T10:00:02Z|@REMOVE_ALL_ASSETS@|CuttingTool", NOW)
    assert isinstance(all_, AssetChange) and all_.asset_type == "CuttingTool"


def test_whole_capture(parser: ShdrParser) -> None:
    records = []
    for raw in (DATA / "capture.shdr").read_bytes().splitlines(keepends=True):
        records += parser.feed(raw.decode(), NOW)
    assets = [r for r in records if isinstance(r, AssetChange)]
    assert [a.action for a in assets] == ["add", "update"]
    assert "<ToolLife" in assets[0].body
    block = next(o for o in obs(records) if o.item.id == "block")
    assert block.fields == ("G01 X10 | Y20",)
    assert parser.stats.unknown_keys == 1 and parser.stats.stray == 1
    assert parser.stats.malformed == 1  # the "not|a|timestamp|line"


def test_timestamp_with_duration_suffix(parser: ShdrParser) -> None:
    # mtconnect/cppagent test_package/timestamp_extractor_test.cpp: ``<ts>@<duration>``
    (o,) = obs(parser.feed("2021-01-19T12:00:00.12345Z@100.0|Xact|1", NOW))
    assert o.ts == datetime(2021, 1, 19, 12, 0, 0, 123450, tzinfo=UTC) and o.fields == ("1",)


def test_relative_millisecond_timestamps_start_at_arrival(parser: ShdrParser) -> None:
    # the reference agent reads a bare number as milliseconds on the adapter's clock
    (a,) = obs(parser.feed("1000.0|Xact|1", NOW))
    (b,) = obs(parser.feed("2000.0|Xact|2", NOW))
    assert a.ts == NOW and b.ts == NOW + timedelta(seconds=1)
    parser.reset()  # a new connection: a new base
    later = NOW + timedelta(minutes=5)
    (c,) = obs(parser.feed("10|Xact|3", later))
    assert c.ts == later


def test_remove_all_assets_without_a_type(parser: ShdrParser) -> None:
    (r,) = parser.feed("2024-05-01T10:00:00Z|@REMOVE_ALL_ASSETS@", NOW)
    assert isinstance(r, AssetChange) and r.action == "remove_all" and r.asset_type == ""
    assert parser.stats.malformed == 0


def test_undeclared_condition_or_message_does_not_eat_the_rest_of_the_line(
    parser: ShdrParser,
) -> None:
    line = "2024-05-01T10:00:00Z|oil_cond|FAULT|E17|2|HIGH|Oil pressure low|Xact|5"
    assert [(o.item.id, o.fields) for o in obs(parser.feed(line, NOW))] == [("Xact", ("5",))]
    line = "2024-05-01T10:00:00Z|opmsg|W01|Check the door|Yact|6|execution|ACTIVE"
    assert [(o.item.id, o.fields) for o in obs(parser.feed(line, NOW))] == [
        ("Yact", ("6",)),
        ("execution", ("ACTIVE",)),
    ]
    assert parser.stats.unknown_keys == 2 and parser.stats.malformed == 0


def test_multiline_value_of_a_data_item(parser: ShdrParser) -> None:
    assert parser.feed("2024-05-01T10:00:00Z|msg|M7|--multiline--0FED07", NOW) == []
    assert parser.feed("Tool 12 worn:", NOW) == []
    assert parser.feed("  replace before next cycle\r\n", NOW) == []
    (m,) = obs(parser.feed("--multiline--0FED07\r\n", NOW))
    assert m.item.id == "msg" and m.fields == ("M7", "Tool 12 worn:\n  replace before next cycle")


def test_a_reconnect_ends_a_multiline_value_cut_off_by_the_disconnect(parser: ShdrParser) -> None:
    parser.feed("2024-05-01T10:00:00Z|@ASSET@|T9|CuttingTool|--multiline--ABCD", NOW)
    parser.feed("<CuttingTool assetId='T9'>", NOW)
    parser.reset()  # ShdrConnection does this on every connect
    (o,) = obs(parser.feed("2024-05-01T10:00:05Z|Xact|4", NOW))
    assert o.fields == ("4",) and parser.stats.malformed == 1


def test_non_ascii_text_and_messages_with_escaped_pipes(parser: ShdrParser) -> None:
    (m,) = obs(parser.feed("2024-05-01T10:00:00Z|msg|1001|Kühlmittel prüfen – 冷却液不足\r\n", NOW))
    assert m.fields == ("1001", "Kühlmittel prüfen – 冷却液不足")
    (q,) = obs(parser.feed('2024-05-01T10:00:00Z|msg|1002|"Door open \\| cycle held"', NOW))
    assert q.fields == ("1002", "Door open | cycle held")


def test_several_active_conditions_and_normal_with_and_without_code(parser: ShdrParser) -> None:
    lines = [
        "2024-05-01T10:00:00Z|system|FAULT|2001|1|LOW|EMERGENCY STOP",
        "2024-05-01T10:00:01Z|system|WARNING|1001||HIGH|Lube low",
        "2024-05-01T10:00:02Z|system|NORMAL|2001|||",
        "2024-05-01T10:00:03Z|system|NORMAL||||",
        "2024-05-01T10:00:04Z|system|UNAVAILABLE||||",
    ]
    fields = [o.fields for line in lines for o in obs(parser.feed(line, NOW))]
    assert fields == [
        ("FAULT", "2001", "1", "LOW", "EMERGENCY STOP"),
        ("WARNING", "1001", "", "HIGH", "Lube low"),
        ("NORMAL", "2001", "", "", ""),
        ("NORMAL", "", "", "", ""),
        ("UNAVAILABLE", "", "", "", ""),
    ]


def test_duration_without_timestamp_and_timestamp_without_seconds(parser: ShdrParser) -> None:
    # MTConnect.NET adapters write ``@<duration>|key|value`` when they have no timestamp
    (a,) = obs(parser.feed("@100.5|Xact|1", NOW))
    assert a.ts == NOW and a.stamped_on_arrival
    (b,) = obs(parser.feed("2024-05-01T10:00Z|Xact|2", NOW))  # MTConnect.NET accepts these too
    assert b.ts == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def test_lines_of_mtconnect_net_adapters(parser: ShdrParser) -> None:
    # shapes written by TrakHound MTConnect.NET (ShdrAsset, ShdrDevice): asset lines with no
    # timestamp field, indented multiline XML that starts with a declaration, a device model
    assert parser.feed("@ASSET@|T5|CuttingTool|--multiline--AbCdEfGhIj\r\n", NOW) == []
    for line in [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<CuttingTool assetId="T5" toolId="5">',
        '  <CuttingToolLifeCycle><ToolLife type="MINUTES">3</ToolLife></CuttingToolLifeCycle>',
        "</CuttingTool>",
    ]:
        assert parser.feed(line + "\r\n", NOW) == []
    (asset,) = parser.feed("--multiline--AbCdEfGhIj\r\n", NOW)
    assert isinstance(asset, AssetChange) and asset.asset_id == "T5" and asset.ts == NOW
    assert asset.body.splitlines()[1] == '<CuttingTool assetId="T5" toolId="5">'
    record = AssetStore().add(asset.asset_id, asset.asset_type or "", asset.body)
    assert record is not None and record.life[0].value == 3.0  # the declaration is no error
    assert parser.feed("@DEVICE@|vmc-001|--multiline--ZYXWVUTSRQ", NOW) == []
    assert parser.feed("<Device id='d1' name='VMC1' uuid='vmc-001'/>", NOW) == []
    assert parser.feed("--multiline--ZYXWVUTSRQ", NOW) == []
    (o,) = obs(parser.feed("2024-05-01T10:00:00.1234567Z|Xact|3", NOW))
    assert o.fields == ("3",) and parser.stats.malformed == 0


def test_windows_code_page_lines_and_a_byte_order_mark(parser: ShdrParser) -> None:
    from gateway.sources.shdr import _decode

    assert _decode("Kühlmittel".encode()) == "Kühlmittel"
    assert _decode(b"2024-05-01T10:00:00Z|msg|7|K\xfchlmittel pr\xfcfen") == (
        "2024-05-01T10:00:00Z|msg|7|Kühlmittel prüfen"
    )
    (o,) = obs(parser.feed("\ufeff2024-05-01T10:00:00Z|Xact|1\r\n", NOW))
    assert o.fields == ("1",)


def test_a_source_in_shift_jis_or_gbk() -> None:
    from gateway.sources.shdr import line_decoder

    line = "2024-05-01T10:00:00Z|msg|2001|主軸過負荷"  # spindle overload, as Japanese HMIs say
    assert line_decoder("cp932")(line.encode("cp932")) == line
    assert line_decoder("auto")(line.encode("cp932")) != line  # what "auto" would have stored
    chinese = "2024-05-01T10:00:00Z|msg|3|冷却液不足"
    assert line_decoder("gbk")(chinese.encode("gbk")) == chinese
    # A byte the codec cannot read costs that character, not the line.
    assert line_decoder("cp932")(b"2024-05-01T10:00:00Z|msg|4|\x81") == (
        "2024-05-01T10:00:00Z|msg|4|\ufffd"
    )


def test_a_reconnect_mid_asset_does_not_swallow_the_next_session() -> None:
    """Over TCP: the adapter drops the connection inside a multiline asset; after the reconnect
    its data lines are read as data (before, they went into the asset body, up to 4 MiB)."""
    import asyncio

    from gateway.sources.shdr import Backoff, Record, ShdrConnection
    from tests.gateway.helpers import ShdrServer

    got: list[Record] = []

    async def sink(records: list[Record]) -> None:
        got.extend(records)

    async def scenario() -> None:
        async with ShdrServer() as server:
            parser = ShdrParser(load_devices(DATA / "Devices.xml"))
            conn = ShdrConnection(
                "127.0.0.1", server.port, parser, sink, backoff=Backoff(0.05, 0.1)
            )
            task = asyncio.create_task(conn.run())
            try:
                await server.wait_connected()
                await server.send(
                    "2024-05-01T10:00:00Z|@ASSET@|T1|CuttingTool|--multiline--XYZ",
                    "<CuttingTool assetId='T1'>",
                )
                await asyncio.sleep(0.2)
                await server.drop_clients()
                for _ in range(250):
                    if conn.connects >= 2:
                        break
                    await asyncio.sleep(0.02)
                await server.wait_connected()
                await server.send("2024-05-01T10:00:05Z|Xact|42")
                for _ in range(200):
                    if any(isinstance(r, Observation) for r in got):
                        break
                    await asyncio.sleep(0.02)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    asyncio.run(scenario())
    assert [(o.item.id, o.fields) for o in obs(got)] == [("Xact", ("42",))]
    assert not any(isinstance(r, AssetChange) for r in got)


def test_undeclared_keys_with_unavailable_values(parser: ShdrParser) -> None:
    line = "2024-05-01T10:00:00Z|u1|UNAVAILABLE|u2|5|Xact|1"
    assert [(o.item.id, o.fields) for o in obs(parser.feed(line, NOW))] == [("Xact", ("1",))]
    line = "2024-05-01T10:00:00Z|u3|UNAVAILABLE|Yact|2"
    assert [(o.item.id, o.fields) for o in obs(parser.feed(line, NOW))] == [("Yact", ("2",))]
    assert parser.feed("2024-05-01T10:00:00Z|ucond|NORMAL||||", NOW) == []
    assert parser.stats.malformed == 0


def test_runs_of_undeclared_keys_are_each_logged(
    parser: ShdrParser, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        records = obs(parser.feed("2024-05-01T10:00:00Z|u1|1|u2|UNAVAILABLE|u3|3|Xact|4", NOW))
    assert [(o.item.id, o.fields) for o in records] == [("Xact", ("4",))]
    assert parser.stats.unknown_keys == 3
    assert all(f"'{k}'" in caplog.text for k in ("u1", "u2", "u3"))


def test_a_pipe_left_unescaped_in_a_message_or_condition_text(parser: ShdrParser) -> None:
    (m,) = obs(parser.feed("2024-05-01T10:00:00Z|msg|M1|Door | open: cycle held", NOW))
    assert m.fields == ("M1", "Door | open: cycle held")
    records = obs(parser.feed("2024-05-01T10:00:00Z|system|FAULT|9|1||Servo A|B alarm|Xact|2", NOW))
    assert [(o.item.id, o.fields[-1]) for o in records] == [
        ("system", "Servo A|B alarm"),
        ("Xact", "2"),
    ]
    assert parser.stats.unknown_keys == 0


def test_trailing_pipes_after_a_condition_or_message(parser: ShdrParser) -> None:
    (c,) = obs(parser.feed("2024-05-01T10:00:00Z|system|FAULT|9|1|HIGH|Servo alarm||", NOW))
    assert c.fields == ("FAULT", "9", "1", "HIGH", "Servo alarm")
    (m,) = obs(parser.feed("2024-05-01T10:00:00Z|msg|M1|hello|", NOW))
    assert m.fields == ("M1", "hello") and parser.stats.malformed == 0
