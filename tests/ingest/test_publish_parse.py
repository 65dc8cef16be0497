"""The subscriber's lean PUBLISH parser against paho's own decoder.

Ingest hands QoS 0/1 PUBLISH packets to ``parse_publish`` instead of paho's handler (per-message
cost); a packet it misreads would store a message under the wrong topic or ack the wrong packet
id. Every packet here is built by paho's encoder and must read the same both ways.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt._packet import decode_publish
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.subscriber import parse_publish


def _publish(
    topic: str, payload: bytes, qos: int, mid: int, props: Properties
) -> tuple[int, bytes]:
    """(fixed header byte, the packet after the remaining length), as paho's broker side sends."""
    t = topic.encode()
    body = struct.pack("!H", len(t)) + t
    if qos:
        body += struct.pack("!H", mid)
    body += props.pack() + payload
    return 0x30 | (qos << 1), body


_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=20)


@st.composite
def _properties(draw: st.DrawFn) -> Properties:
    p = Properties(PacketTypes.PUBLISH)
    ids = draw(st.lists(st.integers(1, 268_435_455), max_size=3))
    if ids:
        p.SubscriptionIdentifier = ids[0]  # paho appends on each assignment
        for i in ids[1:]:
            p.SubscriptionIdentifier = i
    if draw(st.booleans()):
        p.MessageExpiryInterval = draw(st.integers(0, 2**32 - 1))
    if draw(st.booleans()):
        p.PayloadFormatIndicator = draw(st.integers(0, 1))
    if draw(st.booleans()):
        p.ContentType = draw(_text)
    if draw(st.booleans()):
        p.ResponseTopic = draw(_text.filter(bool))
    if draw(st.booleans()):
        p.CorrelationData = draw(st.binary(max_size=20))
    for key, value in draw(st.lists(st.tuples(_text, _text), max_size=3)):
        p.UserProperty = (key, value)
    return p


@settings(max_examples=300, deadline=None)
@given(
    topic=_text.filter(bool),
    payload=st.binary(max_size=300),
    qos=st.integers(0, 1),
    mid=st.integers(1, 65535),
    props=_properties(),
)
def test_lean_parser_reads_what_paho_reads(
    topic: str, payload: bytes, qos: int, mid: int, props: Properties
) -> None:
    header, packet = _publish(topic, payload, qos, mid, props)
    ref = decode_publish(header, packet, MQTTProtocolVersion.MQTTv5)
    got = parse_publish(header, bytearray(packet))
    ids = getattr(ref.properties, "SubscriptionIdentifier", []) or []
    assert got == (ref.topic.decode(), bytes(ref.payload), ref.mid if qos else 0, qos, tuple(ids))


def test_what_it_does_not_know_goes_back_to_paho() -> None:
    """QoS 2, an unknown property, a truncated packet, a non-UTF-8 topic: ``ValueError`` (or
    ``IndexError``), which makes the client hand the packet to paho's own handler."""
    topic = "arbor/v1/s/m/telemetry"
    props = Properties(PacketTypes.PUBLISH)
    props.TopicAlias = 3  # a 2-byte property it skips: still read here
    header, packet = _publish(topic, b"{}", 1, 7, props)
    assert parse_publish(header, packet) == (topic, b"{}", 7, 1, ())
    with pytest.raises(ValueError, match="QoS 2"):
        parse_publish(0x34, packet)  # QoS 2: paho keeps the PUBREC/PUBREL state
    props_at = 2 + len(topic) + 2
    unknown = bytearray(packet)
    unknown[props_at + 1] = 0x2A  # a property id a PUBLISH cannot carry
    with pytest.raises(ValueError, match="property 0x2a"):
        parse_publish(0x32, unknown)
    with pytest.raises((ValueError, IndexError)):
        parse_publish(0x32, packet[: props_at + 2])  # properties say 3 bytes, 1 is there
    not_utf8 = struct.pack("!H", 2) + b"\xff\xfe" + struct.pack("!H", 1) + b"\x00"
    with pytest.raises(UnicodeDecodeError):
        parse_publish(0x32, not_utf8)
