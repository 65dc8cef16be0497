"""Topics: build, parse, filters."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    Channel,
    Topic,
    TopicError,
    alerts_filter,
    alerts_topic,
    all_filter,
    cmd_filter,
    cmd_topic,
    event_filter,
    event_topic,
    parse_topic,
    reply_filter,
    reply_topic,
    shared_filter,
    status_filter,
    status_topic,
    telemetry_filter,
    telemetry_topic,
)

ids = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,63}\Z")


def test_builders_give_the_documented_strings() -> None:
    assert status_topic("plant1", "m01") == "arbor/v1/plant1/m01/status"
    assert telemetry_topic("plant1", "m01") == "arbor/v1/plant1/m01/telemetry"
    assert event_topic("plant1", "m01") == "arbor/v1/plant1/m01/event"
    assert cmd_topic("plant1", "m01", "program") == "arbor/v1/plant1/m01/cmd/program"
    assert reply_topic("plant1", "m01", "program") == "arbor/v1/plant1/m01/reply/program"
    assert alerts_topic("plant1") == "arbor/v1/plant1/alerts"


def test_parse_machine_topics() -> None:
    assert parse_topic("arbor/v1/plant1/m-01_a/telemetry") == Topic(
        "plant1", "m-01_a", Channel.TELEMETRY
    )
    t = parse_topic("arbor/v1/s/m/cmd/rebirth")
    assert (t.site, t.machine, t.channel, t.command) == ("s", "m", Channel.CMD, "rebirth")
    r = parse_topic("arbor/v1/s/m/reply/program")
    assert (r.channel, r.command) == (Channel.REPLY, "program")


def test_parse_alerts_topic() -> None:
    t = parse_topic("arbor/v1/plant1/alerts")
    assert (t.site, t.machine, t.channel, t.command) == ("plant1", None, Channel.ALERTS, None)
    # a machine called "alerts" is still a machine
    assert parse_topic("arbor/v1/plant1/alerts/status").machine == "alerts"


@given(site=ids, machine=ids, command=ids, channel=st.sampled_from(list(Channel)))
def test_build_parse_round_trip(site: str, machine: str, command: str, channel: Channel) -> None:
    if channel is Channel.ALERTS:
        topic = Topic(site, None, channel)
    elif channel in (Channel.CMD, Channel.REPLY):
        topic = Topic(site, machine, channel, command)
    else:
        topic = Topic(site, machine, channel)
    assert parse_topic(str(topic)) == topic


@pytest.mark.parametrize(
    ("topic", "fragment"),
    [
        ("arbor/v1/Plant1/m1/status", "site id 'Plant1' has upper-case letters"),
        ("arbor/v1/p/M1/status", "machine id 'M1' has upper-case letters"),
        ("arbor/v1/p/" + "m" * 65 + "/status", "is 65 characters long"),
        ("arbor/v1/+/m1/status", "site id '+' contains an MQTT wildcard"),
        ("arbor/v1/p/#", "too short"),
        ("arbor/v1/p/m/#", "unknown channel '#'"),
        ("arbor/v2/p/m/status", "unsupported version 'v2'"),
        ("arbor/x/p/m/status", "second level must be the version"),
        ("other/v1/p/m/status", "must start with 'arbor'/"),
        ("arbor/v1/p/m/state", "unknown channel 'state'"),
        ("arbor/v1/p/m/status/extra", "unexpected levels after 'status'"),
        ("arbor/v1/p/m/cmd", "exactly one command name"),
        ("arbor/v1/p/m/cmd/a/b", "exactly one command name"),
        ("arbor/v1/p/m/cmd/Program", "command id 'Program'"),
        ("arbor/v1/p//status", "machine id '' is empty"),
        ("arbor/v1/_p/m/status", "must start with a lower-case letter or digit"),
        ("arbor/v1/p/m.1/status", "outside [a-z0-9_-]"),
        ("arbor/v1/p/m/alerts", "unknown channel 'alerts'"),
        ("$share/ingest/arbor/v1/#", "shared-subscription filter is not a topic"),
        ("arbor/v1", "too short"),
    ],
)
def test_parse_rejections_say_what_is_wrong(topic: str, fragment: str) -> None:
    with pytest.raises(TopicError) as info:
        parse_topic(topic)
    assert fragment in str(info.value)
    assert info.value.topic == topic


def test_topic_error_is_a_value_error_for_builders() -> None:
    with pytest.raises(ValueError, match="machine id 'BAD'"):
        status_topic("plant1", "BAD")
    with pytest.raises(TopicError, match="needs a command name"):
        Topic("s", "m", Channel.CMD)
    with pytest.raises(TopicError, match="no command name"):
        Topic("s", "m", Channel.STATUS, "x")


def test_filters() -> None:
    assert telemetry_filter() == "arbor/v1/+/+/telemetry"
    assert telemetry_filter(site="plant1") == "arbor/v1/plant1/+/telemetry"
    assert status_filter("p", "m") == "arbor/v1/p/m/status"
    assert event_filter() == "arbor/v1/+/+/event"
    assert cmd_filter("p", "m") == "arbor/v1/p/m/cmd/+"
    assert reply_filter(name="program") == "arbor/v1/+/+/reply/program"
    assert alerts_filter() == "arbor/v1/+/alerts"
    assert all_filter() == "arbor/v1/#"
    assert all_filter("p") == "arbor/v1/p/#"
    assert shared_filter("ingest") == "$share/ingest/arbor/v1/#"
    assert shared_filter("alerts", event_filter()) == "$share/alerts/arbor/v1/+/+/event"
    with pytest.raises(TopicError, match="site id '#'"):
        telemetry_filter(site="#")
    with pytest.raises(TopicError, match="share group"):
        shared_filter("In/gest")
