"""The v1 JSON codec: round trips, rejections with precise messages, timestamps, limits."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    Command,
    ConditionEvent,
    Controller,
    Event,
    PayloadError,
    PayloadTooLargeError,
    ProgramCommand,
    RebirthCommand,
    Reply,
    Sample,
    Status,
    Telemetry,
    TopicError,
    ValueEvent,
    decode,
    decode_command,
    decode_event,
    decode_reply,
    decode_status,
    decode_telemetry,
    encode,
    format_timestamp,
    parse_timestamp,
)
from protocol.models import Condition, ProgramArgs
from protocol.program import split_program
from tests.protocol.protocol_strategies import commands, events, replies, statuses, t, telemetry

pytestmark = pytest.mark.filterwarnings("error")

SESSION = "01HZX3K5Q8"


def tele(**values: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "session": SESSION,
        "seq": 7,
        "samples": [{"ts": "2024-05-01T08:00:00.100Z", "values": values}],
    }


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


# --- round trips ------------------------------------------------------------------------------


def test_telemetry_round_trip_and_wire_shape() -> None:
    msg = Telemetry(
        session=SESSION,
        seq=3,
        samples=[
            Sample(
                ts=t(0),
                values={"spindle_speed": 12000.0, "load_x": 12, "x_i5_servo_temp": "ok"},
            ),
            Sample(ts=t(100), values={"spindle_speed": None}),
        ],
    )
    data = encode(msg)
    assert orjson.loads(data) == {
        "v": 1,
        "session": SESSION,
        "seq": 3,
        "historical": False,
        "samples": [
            {
                "ts": "2024-05-01T08:00:00.000Z",
                "values": {"spindle_speed": 12000.0, "load_x": 12, "x_i5_servo_temp": "ok"},
            },
            {"ts": "2024-05-01T08:00:00.100Z", "values": {"spindle_speed": None}},
        ],
    }
    back = decode("arbor/v1/plant1/m01/telemetry", data)
    assert back == msg
    assert isinstance(back, Telemetry)
    assert back.samples[0].values["load_x"] == 12
    assert type(back.samples[0].values["load_x"]) is int


def test_event_round_trip_with_condition() -> None:
    msg = Event(
        session=SESSION,
        seq=0,
        historical=True,
        events=[
            ValueEvent(ts=t(0), signal="execution", value="ACTIVE"),
            ValueEvent(ts=t(1), signal="part_count", value=41),
            ValueEvent(ts=t(2), signal="program", value=None),
            ConditionEvent(
                ts=t(3),
                signal="condition",
                condition=Condition(component="spindle", level="FAULT", code="SP-101", text="hot"),
            ),
        ],
    )
    back = decode_event(encode(msg))
    assert back == msg
    assert isinstance(back.events[3], ConditionEvent)
    assert back.events[3].condition.level == "FAULT"
    assert back.historical is True


def test_status_round_trip_and_last_will() -> None:
    birth = Status(
        online=True,
        ts=t(),
        session=SESSION,
        controller=Controller(vendor="i5", model="M8", kind="five_axis_mc", firmware="3.2"),
    )
    will = birth.model_copy(update={"online": False, "reason": "connection_lost"})
    assert decode("arbor/v1/p/m/status", encode(birth)) == birth
    decoded_will = decode_status(encode(will))
    assert decoded_will.online is False
    assert decoded_will.reason == "connection_lost"
    assert decoded_will.session == SESSION


def test_commands_decode_typed_by_name() -> None:
    [chunk] = split_program("O1234", "3", b"G0 X0\nM30\n")
    cmd = ProgramCommand(id="req-1", ts=t(), args=chunk)
    data = encode(cmd)
    back = decode("arbor/v1/p/m/cmd/program", data)
    assert isinstance(back, ProgramCommand)
    assert back.args.chunk == b"G0 X0\nM30\n"
    rebirth = decode_command(encode(RebirthCommand(id="r", ts=t())), "rebirth")
    assert isinstance(rebirth, RebirthCommand)
    generic = decode_command(
        dumps({"v": 1, "id": "x", "ts": "2024-05-01T00:00:00Z", "args": {"a": [1]}}), "restart"
    )
    assert type(generic) is Command
    assert generic.args == {"a": [1]}


def test_reply_round_trip_and_ok_error_consistency() -> None:
    ok = Reply(id="req-1", ts=t(), ok=True, result={"received": 0, "complete": True})
    assert decode_reply(encode(ok)) == ok
    bad = {"v": 1, "id": "req-1", "ts": "2024-05-01T00:00:00Z", "ok": False}
    with pytest.raises(PayloadError, match=r"^error: is required when ok is false$"):
        decode_reply(dumps(bad))
    both = {**bad, "ok": True, "error": {"code": "busy", "message": ""}}
    with pytest.raises(PayloadError, match=r"^error: must be null or absent when ok is true$"):
        decode_reply(dumps(both))


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(msg=telemetry)
def test_any_valid_telemetry_round_trips(msg: Telemetry) -> None:
    assert decode_telemetry(encode(msg)) == msg


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(msg=events)
def test_any_valid_event_round_trips(msg: Event) -> None:
    assert decode_event(encode(msg)) == msg


@settings(max_examples=40)
@given(msg=statuses)
def test_any_valid_status_round_trips(msg: Status) -> None:
    assert decode_status(encode(msg)) == msg


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(msg=commands)
def test_any_valid_command_round_trips(msg: Command) -> None:
    assert decode_command(encode(msg)) == msg


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(msg=replies)
def test_any_valid_reply_round_trips(msg: Reply) -> None:
    assert decode_reply(encode(msg)) == msg


# --- rejections -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            tele(spindle_speed="abc"),
            "samples[0].values.spindle_speed: expected number, got string 'abc'",
        ),
        (
            tele(spindle_speed=True),
            "samples[0].values.spindle_speed: expected number, got boolean true",
        ),
        (tele(load_x=[1]), "samples[0].values.load_x: expected number, got array"),
        (
            tele(execution="ACTIVE"),
            "samples[0].values.execution: 'execution' belongs on the event channel",
        ),
        (tele(foo=1), "samples[0].values.foo: unknown signal 'foo'"),
        (
            tele(x_i5_thing={"a": 1}),
            "samples[0].values.x_i5_thing: expected number, string, boolean or null, got object",
        ),
        (tele(), "samples[0].values: a sample needs at least one value"),
        (
            {**tele(feedrate=1.0), "seq": -1},
            "seq: input should be greater than or equal to 0, got integer -1",
        ),
        (
            {**tele(feedrate=1.0), "seq": "1"},
            "seq: input should be a valid integer, got string '1'",
        ),
        (
            {**tele(feedrate=1.0), "seq": 1.0},
            "seq: input should be a valid integer, got number 1.0",
        ),
        ({**tele(feedrate=1.0), "session": "has space"}, "session: string should match pattern"),
        ({**tele(feedrate=1.0), "samples": []}, "samples: list should have at least 1 item"),
        (
            {**tele(feedrate=1.0), "sampels": []},
            "sampels: unknown field (not part of the v1 contract)",
        ),
        (
            {**tele(feedrate=1.0), "historical": 1},
            "historical: input should be a valid boolean, got integer 1",
        ),
        (
            {k: v for k, v in tele(feedrate=1.0).items() if k != "session"},
            "session: field required",
        ),
        (
            {**tele(feedrate=1.0), "v": 2},
            "v: unsupported message version 2 (this library speaks v1)",
        ),
        ({**tele(feedrate=1.0), "v": True}, "v: expected the integer 1, got boolean true"),
        ({k: v for k, v in tele(feedrate=1.0).items() if k != "v"}, "v: field required"),
    ],
)
def test_telemetry_rejections_name_the_field(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(PayloadError) as info:
        decode_telemetry(dumps(payload))
    assert str(info.value).startswith(message), str(info.value)


def test_error_carries_all_issues_with_paths() -> None:
    payload = tele(spindle_speed="abc")
    payload["samples"].append({"ts": "2024-05-01T08:00:00", "values": {"feedrate": 1}})
    payload["extra"] = 1
    with pytest.raises(PayloadError) as info:
        decode_telemetry(dumps(payload))
    paths = [i.path for i in info.value.issues]
    assert paths == ["samples[0].values.spindle_speed", "samples[1].ts", "extra"]
    assert info.value.path == "samples[0].values.spindle_speed"
    assert "has no time zone" in info.value.issues[1].message


EV = {"v": 1, "session": SESSION, "seq": 1}


def ev(*items: dict[str, Any]) -> bytes:
    return dumps({**EV, "events": list(items)})


TS = "2024-05-01T08:00:00.000Z"


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            {"ts": TS, "signal": "execution", "value": "RUNNING"},
            "events[0].value: 'RUNNING' is not one of READY, ACTIVE",
        ),
        (
            {"ts": TS, "signal": "controller_mode", "value": "auto"},
            "events[0].value: 'auto' is not one of AUTOMATIC",
        ),
        (
            {"ts": TS, "signal": "part_count", "value": 1.5},
            "events[0].value: expected integer, got number 1.5",
        ),
        (
            {"ts": TS, "signal": "program", "value": 5},
            "events[0].value: expected string, got integer 5",
        ),
        (
            {"ts": TS, "signal": "spindle_speed", "value": 5},
            "events[0].signal: 'spindle_speed' belongs on the telemetry channel",
        ),
        ({"ts": TS, "signal": "nope", "value": 5}, "events[0].signal: unknown signal 'nope'"),
        ({"ts": TS, "signal": "execution"}, "events[0].value: field required"),
        (
            {
                "ts": TS,
                "signal": "condition",
                "condition": {"component": "x", "level": "ALARM", "code": "1"},
            },
            "events[0].condition.level: input should be 'NORMAL', 'WARNING', 'FAULT' or "
            "'UNAVAILABLE', got string 'ALARM'",
        ),
        ({"ts": TS, "signal": "condition", "value": 1}, "events[0].condition: field required"),
        (
            {"ts": TS, "signal": "condition", "condition": {"level": "FAULT", "code": "1"}},
            "events[0].condition.component: field required",
        ),
        (
            {"ts": "yesterday", "signal": "program", "value": "a"},
            "events[0].ts: not an ISO-8601 UTC timestamp",
        ),
        (
            {"ts": "2024-05-01T08:00:00+08:00", "signal": "program", "value": "a"},
            "events[0].ts: timestamp must be UTC (Z or +00:00), got offset +08:00",
        ),
        (
            {"ts": 1714550400000, "signal": "program", "value": "a"},
            "events[0].ts: expected a timestamp string, got integer",
        ),
        (
            {"ts": "2024-02-30T00:00:00Z", "signal": "program", "value": "a"},
            "events[0].ts: invalid date or time",
        ),
    ],
)
def test_event_rejections_name_the_field(item: dict[str, Any], message: str) -> None:
    with pytest.raises(PayloadError) as info:
        decode_event(ev(item))
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'{"v": NaN}', "not valid JSON"),
        (b"[1, 2]", "payload must be a JSON object, got array"),
        (b'"x"', "payload must be a JSON object, got string 'x'"),
        (
            b'{"v":1,"session":"s","seq":0,"samples":[{"ts":"2024-05-01T08:00:00Z","values":{"feedrate":1e400}}]}',
            "not valid JSON",
        ),
    ],
)
def test_bad_json_is_a_payload_error(data: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match="^" + message):
        decode_telemetry(data)


def test_size_limit() -> None:
    data = encode(
        Telemetry(session=SESSION, seq=0, samples=[Sample(ts=t(), values={"feedrate": 1.0})])
    )
    assert decode_telemetry(data, max_bytes=len(data)).seq == 0
    with pytest.raises(PayloadTooLargeError) as info:
        decode_telemetry(data, max_bytes=len(data) - 1)
    assert info.value.size == len(data)
    assert str(info.value) == f"payload is {len(data)} bytes, the limit is {len(data) - 1} bytes"
    with pytest.raises(PayloadTooLargeError):
        decode_telemetry(b" " * (256 * 1024 + 1))


def test_decode_alerts_topic_is_a_topic_error() -> None:
    with pytest.raises(TopicError, match="no v1 payload model"):
        decode("arbor/v1/p/alerts", b"{}")


def test_program_args_checks() -> None:
    [chunk] = split_program("O1", "1", b"abc")
    args = chunk.model_dump()
    cmd = {"v": 1, "id": "r1", "ts": TS}
    with pytest.raises(
        PayloadError, match=r"^args.chunk_index: chunk_index 1 is not below chunk_count 1"
    ):
        decode_command(dumps({**cmd, "args": {**args, "chunk_index": 1}}), "program")
    with pytest.raises(PayloadError, match=r"^args.data: not valid base64"):
        decode_command(dumps({**cmd, "args": {**args, "data": "@@@"}}), "program")
    with pytest.raises(PayloadError, match=r"^args.sha256: string should match pattern"):
        decode_command(dumps({**cmd, "args": {**args, "sha256": "ABC"}}), "program")
    assert ProgramArgs.model_validate(args) == chunk


# --- timestamps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T08:00:00Z", datetime(2024, 5, 1, 8, tzinfo=UTC)),
        ("2024-05-01T08:00:00.1Z", datetime(2024, 5, 1, 8, 0, 0, 100000, tzinfo=UTC)),
        ("2024-05-01T08:00:00.123Z", datetime(2024, 5, 1, 8, 0, 0, 123000, tzinfo=UTC)),
        ("2024-05-01T08:00:00.1234567Z", datetime(2024, 5, 1, 8, 0, 0, 123456, tzinfo=UTC)),
        ("2024-05-01T08:00:00.123456789+00:00", datetime(2024, 5, 1, 8, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_parse_timestamp_keeps_microseconds(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


def test_format_timestamp_ms_or_us() -> None:
    assert (
        format_timestamp(datetime(2024, 5, 1, 8, 0, 0, 123000, tzinfo=UTC))
        == "2024-05-01T08:00:00.123Z"
    )
    assert (
        format_timestamp(datetime(2024, 5, 1, 8, 0, 0, 123456, tzinfo=UTC))
        == "2024-05-01T08:00:00.123456Z"
    )
    plus8 = timezone(timedelta(hours=8))
    assert format_timestamp(datetime(2024, 5, 1, 16, 0, tzinfo=plus8)) == "2024-05-01T08:00:00.000Z"
    with pytest.raises(ValueError, match="naive"):
        format_timestamp(datetime(2024, 5, 1))


def test_models_reject_naive_datetimes_and_normalise_offsets() -> None:
    with pytest.raises(ValueError, match="naive"):
        Sample(ts=datetime(2024, 5, 1), values={"feedrate": 1.0})
    s = Sample(
        ts=datetime(2024, 5, 1, 16, tzinfo=timezone(timedelta(hours=8))), values={"feedrate": 1.0}
    )
    assert s.ts == datetime(2024, 5, 1, 8, tzinfo=UTC)
    assert s.ts.tzinfo is UTC


def test_models_reject_nan_values_built_in_python() -> None:
    with pytest.raises(ValueError, match="expected a finite number, got nan"):
        Sample(ts=t(), values={"feedrate": float("nan")})
    with pytest.raises(ValueError, match="expected a finite number, got inf"):
        Sample(ts=t(), values={"x_acme_temp": float("inf")})


# --- fuzz: nothing but PayloadError escapes ------------------------------------------------------

decoders = [decode_status, decode_telemetry, decode_event, decode_command, decode_reply]

json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "v",
                    "session",
                    "seq",
                    "samples",
                    "events",
                    "ts",
                    "values",
                    "signal",
                    "value",
                    "condition",
                    "id",
                    "ok",
                    "error",
                    "args",
                    "online",
                    "controller",
                    "spindle_speed",
                    "execution",
                    "x",
                    "historical",
                    "level",
                    "code",
                ]
            )
            | st.text(max_size=5),
            inner,
            max_size=6,
        )
    ),
    max_leaves=20,
)


def _error(decoder: Any, data: bytes) -> PayloadError | None:
    """The PayloadError ``decoder`` raises, or None; any other exception fails the test."""
    try:
        decoder(data)
    except PayloadError as exc:
        return exc
    return None


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=200), which=st.sampled_from(decoders))
def test_random_bytes_raise_only_payload_error(data: bytes, which: Any) -> None:
    error = _error(which, data)
    assert error is None or str(error)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(obj=json_like, which=st.sampled_from(decoders), with_v=st.booleans())
def test_random_json_raises_only_payload_error_naming_fields(
    obj: Any, which: Any, with_v: bool
) -> None:
    if with_v and isinstance(obj, dict):
        obj = {**obj, "v": 1}
    error = _error(which, json.dumps(obj).encode())  # stdlib: also writes ints beyond 64 bits
    if error is None:
        return
    assert all(issue.message for issue in error.issues)
    if isinstance(obj, dict) and type(obj.get("v")) is int and obj["v"] == 1:
        # every rejection of a v1 object names the field it is about
        assert all(issue.path for issue in error.issues), error.issues


@given(
    when=st.datetimes(timezones=st.just(UTC)),
    extra=st.text(alphabet="0123456789", max_size=3),
    zone=st.sampled_from(["Z", "+00:00", "-00:00"]),
)
def test_timestamp_format_parse_identity(when: datetime, extra: str, zone: str) -> None:
    text = format_timestamp(when)
    assert text.endswith("Z")
    assert parse_timestamp(text) == when
    # More fraction digits (up to 9) are truncated to the microsecond; offsets of zero are UTC.
    full = f"{when:%Y-%m-%dT%H:%M:%S}.{when.microsecond:06d}{extra}{zone}"
    if when.year >= 1000:
        parsed = parse_timestamp(full)
        assert parsed == when
        assert parsed.tzinfo is UTC


def test_a_nul_character_anywhere_is_refused_but_an_escaped_backslash_u_is_not() -> None:
    status = {
        "v": 1, "online": True, "ts": "2025-03-03T06:00:00Z", "session": "s1",
        "controller": {"vendor": "i5", "model": "M8", "kind": "lathe"},
    }  # fmt: skip
    bad = dumps({**status, "controller": {**status["controller"], "vendor": "i\u0000"}})
    with pytest.raises(PayloadError, match="NUL") as refused:
        decode_status(bad)
    assert refused.value.path == "controller.vendor"
    # The text backslash-u-0000 (an escaped backslash) is six ordinary characters: accepted.
    ok = decode_status(dumps({**status, "reason": "path C:\\u0000"}))
    assert ok.reason == "path C:\\u0000"
