"""The MQTT side: a paho-mqtt 2 client (MQTT 5, persistent session, manual acks) on its own
network thread, handing messages to asyncio without blocking either side.

Why a network thread rather than aiomqtt-style ``add_reader``: paho's thread does the socket
reads, packet parsing and keep-alives while the event loop is busy with COPY and the decoder
threads; it only appends to a deque (``deque.append`` is atomic) and wakes the loop at most once
per drain with ``call_soon_threadsafe``. Acks go back with ``client.ack(mid, qos)``, which paho
makes safe to call from another thread. Memory is bounded by the broker, not by us: Receive
Maximum caps the unacked QoS 1 messages the broker may send, and we ack only after commit, so a
stalled database stops the flow at the broker (overflow policy: *block at the broker*).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.config import SUB_ANCHOR, IngestSettings
from ingest.records import Ack, Raw

__all__ = ["Subscriber"]

log = logging.getLogger(__name__)


#: What a lean PUBLISH hands over: topic, payload, packet id, QoS, subscription identifiers.
Deliver = Callable[[str, bytes, int, int, tuple[int, ...]], None]

_PUBACK = struct.Struct("!BBH")
# PUBLISH properties (MQTT 5.0, 3.3.2.3) by how their value is laid out, for skipping them: a
# byte, a two-byte integer, a four-byte integer, a string or binary (two-byte length), a string
# pair. 0x0B (Subscription Identifier, a variable byte integer) is read, not skipped.
_PROP_FIXED = {0x01: 1, 0x23: 2, 0x02: 4}
_PROP_LENGTH_PREFIXED = frozenset({0x03, 0x08, 0x09})
_PROP_USER = 0x26
_SUBSCRIPTION_ID = 0x0B


def _varint(data: bytes | bytearray, pos: int) -> tuple[int, int]:
    """An MQTT variable byte integer at ``pos``: (value, position after it)."""
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise ValueError("variable byte integer longer than 4 bytes")


def parse_publish(header: int, packet: bytes | bytearray) -> tuple[str, bytes, int, int,
                                                                    tuple[int, ...]]:  # fmt: skip
    """An MQTT 5 PUBLISH's (topic, payload, packet id, QoS, subscription identifiers).

    Raises ``ValueError`` for anything it does not expect (QoS 2, a property it does not know,
    a truncated packet, a topic that is not UTF-8): the caller then lets paho handle the packet.
    """
    qos = (header & 0x06) >> 1
    if qos > 1:
        raise ValueError("QoS 2")
    tlen = (packet[0] << 8) | packet[1]
    pos = 2 + tlen
    topic = bytes(packet[2:pos]).decode()
    mid = 0
    if qos:
        mid = (packet[pos] << 8) | packet[pos + 1]
        pos += 2
    plen, pos = _varint(packet, pos)
    end = pos + plen
    ids: list[int] = []
    while pos < end:
        prop = packet[pos]
        pos += 1
        if prop == _SUBSCRIPTION_ID:
            value, pos = _varint(packet, pos)
            ids.append(value)
        elif prop in _PROP_FIXED:
            pos += _PROP_FIXED[prop]
        elif prop in _PROP_LENGTH_PREFIXED:
            pos += 2 + ((packet[pos] << 8) | packet[pos + 1])
        elif prop == _PROP_USER:
            for _ in range(2):
                pos += 2 + ((packet[pos] << 8) | packet[pos + 1])
        else:
            raise ValueError(f"property 0x{prop:02x}")
    if pos != end or end > len(packet):
        raise ValueError("properties overrun")
    return topic, bytes(packet[end:]), mid, qos, tuple(ids)


class _BufferedClient(mqtt.Client):
    """paho, with three costs of its receive path taken out (each measured at thousands of
    messages a second; docs/ingest.md, "Throughput"):

    * reads: paho reads each packet with three or more ``recv`` calls and goes back to
      ``select`` after every packet. This client reads up to 256 KiB at once, serves paho's
      small reads from that buffer and keeps reading packets while the buffer holds data. The
      buffer belongs to the connection: it is emptied when paho closes the socket.
    * PUBLISH handling: paho builds a ``Properties`` object, an ``MQTTMessage`` and runs the
      topic matcher for every message. With ``deliver`` set, QoS 0/1 PUBLISH packets are parsed
      here (``parse_publish``) and handed over directly; anything unusual goes through paho's
      own handler and ``on_message`` as before.
    * acks: one ``ack`` is one PUBACK packet queued, one wake-up byte written to paho's socket
      pair and one ``send``. ``ack_many`` queues the PUBACKs of a whole batch as one write.

    Everything else (connect, subscribe, keep-alive, reconnect, TLS) is paho's."""

    _READ_SIZE = 256 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._rbuf = bytearray()
        self.deliver: Deliver | None = None
        self.after_read: Callable[[], None] | None = None
        super().__init__(*args, **kwargs)

    def _handle_publish(self) -> MQTTErrorCode:
        deliver = self.deliver
        if deliver is not None:
            try:
                topic, payload, mid, qos, ids = parse_publish(
                    self._in_packet["command"], self._in_packet["packet"]
                )
            except (ValueError, IndexError):
                pass  # paho's handler decides (and words any protocol error)
            else:
                deliver(topic, payload, mid, qos, ids)
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._handle_publish()

    def ack_many(self, mids: Iterable[int]) -> None:
        """PUBACK (success) every QoS 1 packet id in ``mids``, in one write. Thread-safe like
        paho's ``ack``: the packet goes on paho's outgoing deque and its thread is woken once."""
        data = b"".join(_PUBACK.pack(0x40, 2, mid) for mid in mids)
        if data:
            self._packet_queue(0x40, data, 0, 1)

    def _sock_recv(self, bufsize: int) -> bytes:
        buf = self._rbuf
        if not buf:
            data = super()._sock_recv(self._READ_SIZE)
            if len(data) <= bufsize:
                return data
            buf += data
        out = bytes(buf[:bufsize])
        del buf[:bufsize]
        return out

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        # Each round consumes buffered bytes (a partial packet is kept by paho), so this ends.
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._rbuf and self._sock is not None:
            rc = super().loop_read(max_packets)
        if self.after_read is not None:
            self.after_read()
        return rc

    def _sock_close(self) -> None:
        self._rbuf.clear()
        super()._sock_close()


class Subscriber:
    """Owns the paho client. ``inbox`` fills from paho's thread; ``ready`` is set on new data."""

    def __init__(self, settings: IngestSettings, loop: asyncio.AbstractEventLoop) -> None:
        self._settings = settings
        self._loop = loop
        self.inbox: deque[Raw] = deque()
        self.ready = asyncio.Event()
        self.connected = asyncio.Event()
        self._wake_pending = False
        # The inbox length at which paho's thread wakes the event loop: 1 while the batcher
        # waits for a first message, the rest of a full batch while it collects one (its age
        # deadline wakes it otherwise). Set by the loop before it looks at the inbox, read by
        # paho's thread after it appends, so a message is never left without a wake-up.
        self.wake_at = 1
        self._skipped: list[int] = []  # anchor copies to ack after the current read
        self.generation = 0
        # True from the broker's SUBACKs until a disconnect: from then on nothing published under
        # our filters is missed, which is what readiness means for a store-everything consumer.
        self.subscribed = False
        self._pending_subs: dict[int, int] = {}  # SUBSCRIBE mid -> subscription identifier
        # The anchor (see docs/ingest.md, "Broker restarts"): while recovering, its copies are
        # stored like any message; once our marker, published after every SUBACK of this
        # connection, comes back through it, the shared subscription is known to be in place and
        # the anchor's copies are acked unprocessed.
        self.recovering = False
        self._marker: bytes | None = None
        self.anchor_skipped = 0
        ep = settings.mqtt
        client = _BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        ep.configure(client)  # credentials, and TLS for mqtts://
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.deliver = self._deliver
        client.after_read = self._after_read
        client.reconnect_delay_set(1, 5)
        client.max_queued_messages_set(0)
        self._client = client
        self._endpoint = ep

    # --- paho's thread -----------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.warning("MQTT connect refused: %s", rc)
            return
        self.generation += 1  # acks of the previous connection's messages are void now
        self.subscribed = False
        self._pending_subs.clear()
        if self._settings.has_anchor:
            # After any reconnect (the broker may have restarted and forgotten the shared
            # subscriptions) store the anchor's copies until our marker comes back.
            self.recovering = True
            self._marker = f"{self.generation}-{secrets.token_hex(8)}".encode()
        # One SUBSCRIBE per filter: a subscription identifier belongs to a whole SUBSCRIBE.
        for sub_id, topic_filter in self._settings.subscriptions():
            props = Properties(PacketTypes.SUBSCRIBE)  # type: ignore[no-untyped-call]
            props.SubscriptionIdentifier = sub_id
            # The anchor does not want the retained messages again on every reconnect.
            opts = SubscribeOptions(qos=1, retainHandling=1 if sub_id == SUB_ANCHOR else 0)
            _rc, mid = client.subscribe([(topic_filter, opts)], properties=props)
            if mid is not None:
                self._pending_subs[mid] = sub_id
        log.info("MQTT connected as %s (connection %d)", self._settings.client_id,
                 self.generation)  # fmt: skip
        self._loop.call_soon_threadsafe(self.connected.set)

    def _on_subscribe(self, client: mqtt.Client, _u: Any, mid: int, codes: list[Any],
                      _p: Any) -> None:  # fmt: skip
        sub_id = self._pending_subs.pop(mid, None)
        refused = [str(rc) for rc in codes if rc.is_failure]
        if refused:
            log.error("MQTT subscription %s refused: %s", sub_id, ", ".join(refused))
            return
        if self._pending_subs:
            return
        self.subscribed = True
        if self.recovering and self._marker is not None:
            # Published on this connection after every SUBACK: the broker routes it after the
            # shared subscription exists, and queues it for us behind everything it routed to
            # the anchor before.
            client.publish(self._settings.anchor_marker_topic, self._marker, qos=1)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.subscribed = False
        log.warning("MQTT disconnected: %s", rc)
        self._loop.call_soon_threadsafe(self.connected.clear)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        """paho's own path (packets ``parse_publish`` left to it)."""
        via: tuple[int, ...] = ()
        if msg.properties is not None:
            ids = getattr(msg.properties, "SubscriptionIdentifier", None)
            if ids:
                via = tuple(ids)
        self._deliver(msg.topic, bytes(msg.payload), msg.mid, msg.qos, via)

    def _deliver(self, topic: str, payload: bytes, mid: int, qos: int,
                 via: tuple[int, ...]) -> None:  # fmt: skip
        if via == (SUB_ANCHOR,):
            if topic == self._settings.anchor_marker_topic:
                self._client.ack(mid, qos)
                if self.recovering and payload == self._marker:
                    self.recovering = False
                    log.info("anchor: caught up (connection %d)", self.generation)
                return
            if not self.recovering:
                # The shared subscription delivered it too; acked with the others of this read.
                if qos:
                    self._skipped.append(mid)
                self.anchor_skipped += 1
                return
        inbox = self.inbox
        inbox.append(Raw(topic, payload, Ack(mid, qos, self.generation), time.time(), via))
        # Wake the event loop only when it waits for this many messages (see ``wake_at``): a
        # wake-up per message costs a syscall on both sides and a loop iteration.
        if len(inbox) >= self.wake_at and not self._wake_pending:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._wake)

    def _after_read(self) -> None:
        if self._skipped:
            self._client.ack_many(self._skipped)
            self._skipped.clear()

    # --- the event loop's side ---------------------------------------------------------------

    def _wake(self) -> None:
        self._wake_pending = False
        self.ready.set()

    def start(self) -> None:
        """Connect (clean start off, session kept) and start paho's network thread."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._settings.session_expiry_s
        props.ReceiveMaximum = self._settings.receive_maximum
        self._client.connect_async(
            self._endpoint.host, self._endpoint.port, keepalive=30, clean_start=False,
            properties=props,
        )  # fmt: skip
        self._client.loop_start()

    def ack(self, acks: list[Ack]) -> int:
        """Ack committed messages of the current connection; returns how many were acked."""
        generation = self.generation
        mids = [a.mid for a in acks if a.qos == 1 and a.generation == generation]
        self._client.ack_many(mids)
        return len(mids)

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self._client.publish(topic, payload, qos=qos)

    def stop(self) -> None:
        """Disconnect without unsubscribing: the broker keeps queueing for our session."""
        self._client.disconnect()
        self._client.loop_stop()
