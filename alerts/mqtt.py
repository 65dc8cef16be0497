"""The worker's MQTT link: a paho-mqtt 2 client (MQTT 5, manual acks) on its own network thread.

It subscribes to telemetry and events through the shared subscription
`$share/{group}/arbor/v1/{site}/+/telemetry|event`, so N alerts workers split the stream and
each message is evaluated by one of them; it also publishes alerts on `arbor/v1/{site}/alerts`.

paho's thread only appends to the inbox (a bounded deque) and wakes the loop with
`call_soon_threadsafe`. Overflow policy of the inbox: **drop oldest**, counted in `dropped`
(its message is acked so the broker's window keeps moving). Messages are acked after they were
evaluated and the resulting state committed, so a worker that dies mid-batch has them redelivered.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from alerts.config import AlertsSettings
from alerts.errors import DeliveryError
from protocol import event_filter, shared_filter, telemetry_filter

__all__ = ["Inbound", "MqttLink"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Inbound:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int


class MqttLink:
    """Owns the paho client; `inbox` fills from paho's thread, `ready` is set on new data."""

    def __init__(self, settings: AlertsSettings, loop: asyncio.AbstractEventLoop) -> None:
        self._settings = settings
        self._loop = loop
        self.inbox: deque[Inbound] = deque()
        self.ready = asyncio.Event()
        self.connected = asyncio.Event()
        self.dropped = 0
        self.generation = 0
        self._lock = threading.Lock()
        self._wake_pending = False
        self._published: dict[int, asyncio.Future[None]] = {}
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        ep = settings.mqtt
        ep.configure(client)  # credentials, and TLS for mqtts://
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.reconnect_delay_set(1, 5)
        self._client = client
        self._endpoint = ep

    def subscriptions(self) -> list[str]:
        site = self._settings.site_filter
        group = self._settings.share_group
        return [
            shared_filter(group, telemetry_filter(site)),
            shared_filter(group, event_filter(site)),
        ]

    # --- paho's thread -------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.warning("MQTT connect refused: %s", rc)
            return
        with self._lock:
            self.generation += 1  # acks of the previous connection's messages are void now
        opts = SubscribeOptions(qos=1)
        client.subscribe([(s, opts) for s in self.subscriptions()])
        log.info("MQTT connected to %s as %s", self._endpoint, self._settings.client_id)
        self._loop.call_soon_threadsafe(self.connected.set)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        log.warning("MQTT disconnected: %s", rc)
        self._loop.call_soon_threadsafe(self.connected.clear)

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        item = Inbound(msg.topic, bytes(msg.payload), msg.mid, msg.qos, self.generation)
        with self._lock:
            self.inbox.append(item)
            overflow = len(self.inbox) > self._settings.queue_max
            oldest = self.inbox.popleft() if overflow else None
            if overflow:
                self.dropped += 1
        if oldest is not None and oldest.qos > 0 and oldest.generation == self.generation:
            client.ack(oldest.mid, oldest.qos)
        if not self._wake_pending:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._wake)

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        self._loop.call_soon_threadsafe(self._published_done, mid)

    # --- the event loop's side -----------------------------------------------------------------

    def _wake(self) -> None:
        self._wake_pending = False
        self.ready.set()

    def _published_done(self, mid: int) -> None:
        fut = self._published.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def take(self, n: int) -> list[Inbound]:
        """Up to `n` messages from the inbox, oldest first."""
        out: list[Inbound] = []
        with self._lock:
            while self.inbox and len(out) < n:
                out.append(self.inbox.popleft())
        return out

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._settings.session_expiry_s
        props.ReceiveMaximum = self._settings.receive_maximum
        self._client.connect_async(
            self._endpoint.host, self._endpoint.port, keepalive=30, clean_start=False,
            properties=props,
        )  # fmt: skip
        self._client.loop_start()

    def ack(self, items: list[Inbound]) -> None:
        generation = self.generation
        for m in items:
            if m.qos > 0 and m.generation == generation:
                self._client.ack(m.mid, m.qos)

    async def publish(self, topic: str, payload: bytes, timeout_s: float) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK (or raise `DeliveryError`)."""
        if not self.connected.is_set():
            raise DeliveryError("not connected to the broker")
        fut: asyncio.Future[None] = self._loop.create_future()
        with self._lock:  # paho may call on_publish before publish() returns
            info = self._client.publish(topic, payload, qos=1)
            self._published[info.mid] = fut
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._published.pop(info.mid, None)
            raise DeliveryError(f"publish failed: {mqtt.error_string(info.rc)}")
        if info.is_published():
            self._published.pop(info.mid, None)
            return
        try:
            await asyncio.wait_for(fut, timeout_s)
        except TimeoutError as exc:
            self._published.pop(info.mid, None)
            raise DeliveryError(f"no PUBACK within {timeout_s:g} s") from exc

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
