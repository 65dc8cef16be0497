"""Hypothesis strategies that build valid v1 models (shared by the protocol tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from protocol import (
    CATALOGUE,
    CONTROLLER_KINDS,
    Command,
    Condition,
    ConditionEvent,
    Controller,
    Dtype,
    Event,
    Reply,
    ReplyError,
    Sample,
    Signal,
    SignalChannel,
    Status,
    Telemetry,
    ValueEvent,
)

TELEMETRY_SIGNALS = [s for s in CATALOGUE.values() if s.channel is SignalChannel.TELEMETRY]
EVENT_SIGNALS = [s for s in CATALOGUE.values() if s.channel is SignalChannel.EVENT]

# U+0000 is refused by the contract (PostgreSQL cannot store it); every other character is fair.
_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")
timestamps = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
sessions = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")
request_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
seqs = st.integers(0, 2**63 - 1)
texts = st.text(_CHARS, max_size=50)
vendor_names = st.from_regex(r"\Ax_[a-z0-9]{1,16}_[a-z0-9][a-z0-9_]{0,20}\Z")
finite = st.floats(allow_nan=False, allow_infinity=False)


def value_for(signal: Signal) -> st.SearchStrategy[Any]:
    """Valid values (including null) for a catalogue signal."""
    base: st.SearchStrategy[Any]
    if signal.dtype is Dtype.FLOAT:
        base = finite | st.integers(-(2**53), 2**53)
    elif signal.dtype is Dtype.INT:
        base = st.integers(-(2**63), 2**63 - 1)
    elif signal.dtype is Dtype.BOOL:
        base = st.booleans()
    elif signal.dtype is Dtype.ENUM:
        assert signal.values is not None
        base = st.sampled_from(signal.values)
    else:
        base = texts
    return st.none() | base


vendor_values = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | finite | texts


@st.composite
def sample_values(draw: st.DrawFn) -> dict[str, Any]:
    chosen = draw(st.lists(st.sampled_from(TELEMETRY_SIGNALS), min_size=0, max_size=8, unique=True))
    values = {s.name: draw(value_for(s)) for s in chosen}
    for name in draw(st.lists(vendor_names, max_size=2, unique=True)):
        values[name] = draw(vendor_values)
    if not values:
        values["spindle_speed"] = draw(finite)
    return values


samples = st.builds(Sample, ts=timestamps, values=sample_values())
telemetry = st.builds(
    Telemetry,
    session=sessions,
    seq=seqs,
    historical=st.booleans(),
    samples=st.lists(samples, min_size=1, max_size=5),
)


@st.composite
def value_events(draw: st.DrawFn) -> ValueEvent:
    if draw(st.booleans()):
        signal = draw(st.sampled_from(EVENT_SIGNALS))
        return ValueEvent(ts=draw(timestamps), signal=signal.name, value=draw(value_for(signal)))
    return ValueEvent(ts=draw(timestamps), signal=draw(vendor_names), value=draw(vendor_values))


conditions = st.builds(
    Condition,
    component=st.text(_CHARS, min_size=1, max_size=20),
    level=st.sampled_from(["NORMAL", "WARNING", "FAULT", "UNAVAILABLE"]),
    code=st.text(_CHARS, max_size=10),
    native_severity=st.none() | st.text(_CHARS, max_size=10),
    qualifier=st.none() | st.sampled_from(["HIGH", "LOW"]),
    text=texts,
)
condition_events = st.builds(
    ConditionEvent, ts=timestamps, signal=st.just("condition"), condition=conditions
)
events = st.builds(
    Event,
    session=sessions,
    seq=seqs,
    historical=st.booleans(),
    events=st.lists(value_events() | condition_events, min_size=1, max_size=5),
)
statuses = st.builds(
    Status,
    online=st.booleans(),
    ts=timestamps,
    session=sessions,
    controller=st.builds(
        Controller,
        vendor=st.text(_CHARS, min_size=1, max_size=10),
        model=st.text(_CHARS, min_size=1, max_size=10),
        kind=st.sampled_from(CONTROLLER_KINDS),
        firmware=st.none() | st.text(_CHARS, max_size=10),
    ),
    reason=st.none() | st.text(_CHARS, max_size=20),
)
json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | finite | texts
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(_CHARS, max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
commands = st.builds(
    Command,
    id=request_ids,
    ts=timestamps,
    args=st.dictionaries(st.text(_CHARS, max_size=8), json_values, max_size=4),
)
replies = st.one_of(
    st.builds(
        Reply,
        id=request_ids,
        ts=timestamps,
        ok=st.just(True),
        result=st.none() | st.dictionaries(st.text(_CHARS, max_size=8), json_values, max_size=3),
    ),
    st.builds(
        Reply,
        id=request_ids,
        ts=timestamps,
        ok=st.just(False),
        error=st.builds(ReplyError, code=st.from_regex(r"\A[a-z][a-z0-9_]{0,20}\Z"), message=texts),
    ),
)


def t(offset_ms: int = 0) -> datetime:
    """A fixed UTC instant plus ``offset_ms``."""
    return datetime(2024, 5, 1, 8, 0, tzinfo=UTC) + timedelta(milliseconds=offset_ms)
