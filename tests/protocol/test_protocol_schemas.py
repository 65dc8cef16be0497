"""The committed JSON Schemas equal the generated ones; the catalogue is coherent."""

from __future__ import annotations

from pathlib import Path

import orjson

from protocol import CATALOGUE, Dtype, SignalChannel, catalogue_as_dict
from protocol.schemas import SCHEMA_MODELS, generate_schemas, main, render_schema

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def test_committed_schemas_match_the_models() -> None:
    generated = generate_schemas()
    assert sorted(generated) == sorted(SCHEMA_MODELS)
    on_disk = sorted(p.stem for p in SCHEMA_DIR.glob("*.json"))
    assert on_disk == sorted(generated), "run: python -m protocol.schemas docs/schemas"
    for stem, schema in generated.items():
        committed = (SCHEMA_DIR / f"{stem}.json").read_bytes()
        assert committed == render_schema(schema), (
            f"docs/schemas/{stem}.json is stale; run: python -m protocol.schemas docs/schemas"
        )


def test_schema_main_writes_files(tmp_path: Path) -> None:
    assert main([str(tmp_path)]) == 0
    telemetry = orjson.loads((tmp_path / "telemetry.json").read_bytes())
    assert telemetry["required"][0] == "v"
    assert telemetry["x-arbor-topic"] == "arbor/v1/{site}/{machine}/telemetry"
    values = telemetry["$defs"]["Sample"]["properties"]["values"]
    assert values["additionalProperties"] is False
    assert values["properties"]["spindle_speed"]["type"] == ["number", "null"]
    assert "execution" not in values["properties"]


def test_catalogue_has_the_required_signals() -> None:
    required = {
        "execution", "controller_mode", "program", "program_line", "block", "part_count",
        "part_count_bad", "tool_number", "emergency_stop", "availability", "spindle_speed",
        "spindle_override", "spindle_load", "feedrate", "feed_override", "rapid_override",
        "position_x", "position_y", "position_z", "position_a", "position_b", "position_c",
        "load_x", "load_y", "load_z", "power", "spindle_temperature", "cutting_time",
    }  # fmt: skip
    assert required <= set(CATALOGUE)
    assert CATALOGUE["spindle_speed"].unit == "rev/min"
    assert CATALOGUE["spindle_speed"].mtc_type == "ROTARY_VELOCITY"
    assert CATALOGUE["feedrate"].mtc_type == "PATH_FEEDRATE"
    assert CATALOGUE["position_b"].unit == "deg"
    assert CATALOGUE["execution"].channel is SignalChannel.EVENT
    assert CATALOGUE["execution"].values is not None
    assert "PROGRAM_COMPLETED" in CATALOGUE["execution"].values


def test_catalogue_entries_are_consistent() -> None:
    for name, signal in CATALOGUE.items():
        assert name == signal.name
        assert not name.startswith("x_"), "x_ is the vendor namespace"
        assert (signal.dtype is Dtype.ENUM) == (signal.values is not None), name
        if signal.values is not None:
            assert signal.values[-1] == "UNAVAILABLE", name
        if signal.channel is SignalChannel.TELEMETRY:
            assert signal.dtype in (Dtype.FLOAT, Dtype.INT), name


def test_catalogue_as_dict_is_json_and_fresh() -> None:
    data = catalogue_as_dict()
    assert orjson.loads(orjson.dumps(data)) == data
    by_name = {s["name"]: s for s in data["signals"]}
    assert by_name["spindle_load"]["unit"] == "%"
    assert by_name["execution"]["mtconnect"] == {
        "type": "EXECUTION",
        "sub_type": None,
        "category": "EVENT",
    }
    data["signals"].clear()
    assert len(catalogue_as_dict()["signals"]) == len(CATALOGUE)
