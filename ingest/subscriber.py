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
import threading
import time
from collections import deque
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


class _BufferedClient(mqtt.Client):
    """paho reads each packet with three or more ``recv`` calls and goes back to ``select``
    after every packet; at thousands of messages a second those syscalls cost more than the
    packets' parsing. This client reads up to 256 KiB at once, serves paho's small reads from
    that buffer and keeps reading packets while the buffer holds data. The buffer belongs to
    the connection: it is emptied when paho closes the socket."""

    _READ_SIZE = 256 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._rbuf = bytearray()
        super().__init__(*args, **kwargs)

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
        self._lock = threading.Lock()
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

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        via: tuple[int, ...] = ()
        if msg.properties is not None:
            ids = getattr(msg.properties, "SubscriptionIdentifier", None)
            if ids:
                via = tuple(ids)
        if via == (SUB_ANCHOR,):
            if msg.topic == self._settings.anchor_marker_topic:
                client.ack(msg.mid, msg.qos)
                if self.recovering and bytes(msg.payload) == self._marker:
                    self.recovering = False
                    log.info("anchor: caught up (connection %d)", self.generation)
                return
            if not self.recovering:
                client.ack(msg.mid, msg.qos)  # the shared subscription delivered it too
                self.anchor_skipped += 1
                return
        self.inbox.append(
            Raw(msg.topic, bytes(msg.payload), Ack(msg.mid, msg.qos, self.generation), time.time(),
                via)
        )  # fmt: skip
        if not self._wake_pending:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._wake)

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
        n = 0
        for a in acks:
            if a.qos > 0 and a.generation == generation:
                self._client.ack(a.mid, a.qos)
                n += 1
        return n

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self._client.publish(topic, payload, qos=qos)

    def stop(self) -> None:
        """Disconnect without unsubscribing: the broker keeps queueing for our session."""
        self._client.disconnect()
        self._client.loop_stop()
