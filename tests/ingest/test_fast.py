"""The telemetry fast path against the protocol's decoder (differential, property-based).

The fast path may decline anything (the protocol's decoder then decides), but what it accepts
the protocol must accept, with the same rows; and the decoder as a whole must give the same rows
and the same dead letters (kind and reason) with and without it.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.config import IngestSettings
from ingest.decode import Decoder
from ingest.fast import fast_telemetry
from ingest.records import WIDE_SIGNALS, Ack, Raw
from protocol import CATALOGUE, PayloadError, SignalChannel, decode_telemetry

MAX_BYTES = 256 * 1024
NOW = datetime.now(UTC).replace(microsecond=0)
TELEMETRY = sorted(n for n, s in CATALOGUE.items() if s.channel is SignalChannel.TELEMETRY)
EVENT_NAMES = sorted(n for n, s in CATALOGUE.items() if s.channel is SignalChannel.EVENT)

names = st.one_of(
    st.sampled_from(TELEMETRY),
    st.sampled_from(TELEMETRY),
    st.sampled_from(TELEMETRY),
    st.sampled_from(EVENT_NAMES),
    st.sampled_from(["x_i5_servo_temp", "x_Bad_name", "spindle", "ts", "\0ts", "", "X_a_b"]),
    st.text(max_size=8),
)
good_numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
)
scalars = st.one_of(
    good_numbers,
    good_numbers,
    good_numbers,
    st.none(),
    st.booleans(),
    st.text(max_size=5),
    st.just([]),
    st.just({}),
    st.integers(min_value=2**64, max_value=2**70),  # orjson: beyond u64 -> float or error
)


def _ts_text(offset_ms: int, form: int) -> Any:
    t = NOW + timedelta(milliseconds=offset_ms)
    text = t.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return [
        text,
        text.replace("Z", "+00:00"),
        text.replace("Z", "-00:00"),
        text.replace("Z", "+01:00"),
        text[:-1],
        text.replace("T", " "),
        text.replace(".", ","),
        t.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        text[:-5] + "Z",
        text[:-1] + "123456789Z",
        "2024-02-30T00:00:00Z",
        "2024-05-01T24:00:00Z",
        "not a time",
        int(t.timestamp()),
        None,
        "２０２４-05-01T12:00:00Z",
    ][form]


timestamps = st.builds(
    _ts_text,
    st.integers(min_value=-(10**10), max_value=10**10),
    st.one_of(st.just(0), st.just(0), st.just(0), st.integers(min_value=0, max_value=15)),
)


good_values = st.dictionaries(
    st.sampled_from(TELEMETRY), st.one_of(good_numbers, st.none()), min_size=1, max_size=14
)
any_values = st.dictionaries(names, scalars, min_size=0, max_size=14)
near = st.integers(min_value=-200_000, max_value=200_000)  # within the accepted time range
far = st.integers(min_value=-(10**10), max_value=10**10)


@st.composite
def samples(draw: st.DrawFn, broken: bool) -> Any:
    """A valid sample, or (``broken``) one with a random fault in one of its parts."""
    ts = _ts_text(draw(near), 0)
    values: Any = draw(good_values)
    if not broken:
        return {"ts": ts, "values": values}
    fault = draw(st.integers(min_value=0, max_value=6))
    if fault == 0:
        ts = draw(timestamps)
    elif fault == 1:
        ts = _ts_text(draw(far), 0)
    elif fault == 2:
        values = draw(any_values)
    elif fault == 3:
        values = {**values, draw(names): draw(scalars)}
    elif fault == 4:
        values = draw(st.sampled_from([[], None, "x", 1, {}]))
    elif fault == 5:
        return draw(st.sampled_from([[], None, "x", 1, {"ts": ts}, {"values": values}]))
    else:
        return {"ts": ts, "values": values, "extra": 1}
    return {"ts": ts, "values": values}


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """Telemetry payloads: about half valid, the rest with one or more faults anywhere."""
    broken = draw(st.booleans())
    n = draw(st.integers(min_value=1, max_value=6))
    bad_sample = draw(st.integers(min_value=0, max_value=n - 1)) if broken else -1
    obj: dict[str, Any] = {
        "v": 1,
        "session": draw(st.sampled_from(["s1", "01HZX3K7Q5", "a.b:c-d_e", "bench", "a" * 64])),
        "seq": draw(st.integers(min_value=0, max_value=10**6)),
        "samples": [draw(samples(broken=i == bad_sample)) for i in range(n)],
    }
    if draw(st.booleans()):
        obj["historical"] = draw(st.booleans())
    if broken and draw(st.booleans()):
        field = draw(st.sampled_from(["v", "session", "seq", "historical", "samples", "sampels"]))
        obj[field] = draw(
            st.one_of(
                st.sampled_from([1, 2, True, 1.0, "1", None, -1, 2**63 - 1, 2**63, [], {}]),
                st.sampled_from(["", "-x", "a b", "é", "a" * 65, "s1\n", "s1"]),
                st.text(max_size=10),
            )
        )
        if draw(st.booleans()):
            del obj[field]
    if broken and draw(st.integers(min_value=0, max_value=10)) == 0:
        return draw(st.sampled_from([b"", b"{", b"[]", b"null", b'{"v":1,"seq":NaN}', b"\xff"]))
    return json.dumps(obj).encode()  # stdlib: integers beyond 64 bits too


def _reference_rows(payload: bytes) -> list[tuple[Any, ...]]:
    """The `sample` rows ingest built from the protocol's model before the fast path."""
    msg = decode_telemetry(payload, max_bytes=MAX_BYTES)
    return [(s.ts, *map(s.values.get, WIDE_SIGNALS)) for s in msg.samples]


def _stored(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A `sample` row as the database stores it: the timestamp, then each value as float8 or
    NULL. The fast path's rows hold floats (an int converted exactly as float() does) and NaN
    for an absent signal, the protocol's the JSON numbers and None; both encoders
    (ingest.copybinary, asyncpg's) store those the same way."""
    ts, *values = row
    assert type(ts) is datetime and ts.tzinfo is not None
    out: list[Any] = [ts]
    for x in values:
        assert x is None or type(x) in (float, int), x
        out.append(None if x is None or (type(x) is float and math.isnan(x)) else float(x))
    return tuple(out)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads())
def test_fast_path_accepts_only_what_the_protocol_accepts_with_the_same_rows(
    payload: bytes,
) -> None:
    fast = fast_telemetry(payload, MAX_BYTES)
    if fast is None:
        return  # declined: the protocol's decoder decides (checked below, end to end)
    msg = decode_telemetry(payload, max_bytes=MAX_BYTES)  # must not raise
    assert (fast.session, fast.seq, fast.historical) == (msg.session, msg.seq, msg.historical)
    stamps = [s.ts for s in msg.samples]
    assert (fast.first, fast.lo, fast.hi) == (stamps[0], min(stamps), max(stamps))
    assert fast.n_values == sum(len(s.values) for s in msg.samples)
    reference = _reference_rows(payload)
    assert len(fast.rows) == len(reference)
    for got, want in zip(fast.rows, reference, strict=True):
        assert len(got) == len(want)
        assert _stored(got) == _stored(want)


def _batch(payloads_: list[bytes], fast_path: bool) -> Any:
    decoder = Decoder(
        IngestSettings(database_url="postgresql://x/y", mqtt_url="mqtt://x"), fast_path=fast_path
    )
    now = NOW.timestamp()
    raws = [
        Raw(f"arbor/v1/site/m{i % 3}/telemetry", p, Ack(i + 1, 1, 1), now)
        for i, p in enumerate(payloads_)
    ]
    out = decoder.decode(raws)
    accepted = [
        (a.site, a.machine, a.session, a.seq, a.ts, a.historical, a.n_values,
         [_stored(r) for r in a.wide], a.extra)
        for a in out.accepted
    ]  # fmt: skip
    dead = [(d.kind, d.reason, d.topic, d.payload) for d in out.dead]
    return accepted, dead


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payloads(), min_size=1, max_size=5))
def test_decoder_gives_the_same_rows_and_dead_letters_with_and_without_the_fast_path(
    batch: list[bytes],
) -> None:
    assert _batch(batch, fast_path=True) == _batch(batch, fast_path=False)


def test_the_common_shapes_take_the_fast_path() -> None:
    base = {"v": 1, "session": "s1", "seq": 3}
    ts = [
        (NOW + timedelta(milliseconds=100 * k)).isoformat().replace("+00:00", "Z") for k in (0, 1)
    ]
    common = [
        {**base, "samples": [{"ts": t, "values": {"spindle_speed": 1.5, "load_x": 3}} for t in ts]},
        {**base, "historical": True, "samples": [{"ts": ts[0], "values": {"power": None}}]},
    ]
    for obj in common:
        fast = fast_telemetry(orjson.dumps(obj), MAX_BYTES)
        assert fast is not None
        assert [_stored(r) for r in fast.rows] == [
            _stored(r) for r in _reference_rows(orjson.dumps(obj))
        ]


def test_declined_payloads_still_get_the_protocols_error() -> None:
    payload = orjson.dumps(
        {"v": 1, "session": "s1", "seq": 0,
         "samples": [{"ts": NOW.isoformat(), "values": {"spindle_speed": "fast"}}]}
    )  # fmt: skip
    assert fast_telemetry(payload, MAX_BYTES) is None
    _, dead = _batch([payload], fast_path=True)
    with pytest.raises(PayloadError) as exc:
        decode_telemetry(payload)
    assert dead == [("wrong_type", str(exc.value), "arbor/v1/site/m0/telemetry", payload)]
