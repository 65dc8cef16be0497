"""The API's link to the broker: publish commands, receive `reply/#` into a bounded queue.

paho runs its network loop in its own thread (`loop_start`); everything it hands over crosses into
asyncio with `call_soon_threadsafe`. Replies go into a bounded queue whose overflow policy is
**drop newest** (counted in `dropped`): a flood of replies must not grow memory without bound,
and a dropped reply only leaves a push in state `sent`, visible to the user.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from api.errors import UnavailableError
from protocol import reply_filter
from protocol.endpoint import MqttEndpoint, parse_mqtt_url

__all__ = ["BrokerLink", "Incoming", "background_client"]


def background_client(endpoint: MqttEndpoint, name: str, handler: Any) -> mqtt.Client:
    """A paho MQTT 5 client for one of the API's broker links: a unique id (``arbor-{name}-...``),
    credentials and TLS from ``endpoint``, reconnecting 1-30 s, and ``handler``'s
    ``_on_connect``, ``_on_disconnect`` and ``_on_message`` as its callbacks."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"arbor-{name}-{secrets.token_hex(4)}",
        protocol=mqtt.MQTTv5,
    )
    endpoint.configure(client)  # credentials, and TLS for mqtts://
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    client.on_connect = handler._on_connect
    client.on_disconnect = handler._on_disconnect
    client.on_message = handler._on_message
    return client


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes


class BrokerLink:
    """One MQTT 5 connection for the API process; reconnects on its own (paho's backoff)."""

    def __init__(self, url: str, *, timeout_s: float, queue_size: int = 10_000) -> None:
        endpoint = parse_mqtt_url(url)
        self._host = endpoint.host
        self._port = endpoint.port
        self._timeout_s = timeout_s
        self.replies: asyncio.Queue[Incoming] = asyncio.Queue(maxsize=queue_size)
        self.dropped = 0
        self._loop = asyncio.get_running_loop()
        self._connected = False
        self._first_connect = asyncio.Event()
        self._client = background_client(endpoint, "api", self)

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def endpoint(self) -> str:
        return f"{self._host}:{self._port}"

    def start(self) -> None:
        """Start connecting in the background; the API serves even while the broker is down."""
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()

    async def wait_connected(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the first connection; False if it has not happened yet."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._first_connect.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish with QoS 1 and wait for the broker's PUBACK (bounded by the timeout)."""
        if not self._connected:
            raise UnavailableError(
                f"the broker at {self.endpoint} is not connected", code="broker_unavailable"
            )
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise UnavailableError(
                f"publish to {topic} failed: {mqtt.error_string(info.rc)}",
                code="broker_unavailable",
            )
        await asyncio.to_thread(info.wait_for_publish, self._timeout_s)
        if not info.is_published():
            raise UnavailableError(
                f"the broker did not acknowledge {topic} within {self._timeout_s} s",
                code="broker_unavailable",
            )

    # --- paho's thread ---------------------------------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason_code: object,
        properties: object,
    ) -> None:
        if getattr(reason_code, "is_failure", False):
            log.warning("broker %s refused the API: %s", self.endpoint, reason_code)
            return
        client.subscribe(reply_filter(), qos=1)
        self._connected = True
        self._loop.call_soon_threadsafe(self._first_connect.set)
        log.info("connected to broker %s", self.endpoint)

    def _on_disconnect(self, client: mqtt.Client, *args: object) -> None:
        self._connected = False

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self._loop.call_soon_threadsafe(self._enqueue, Incoming(msg.topic, bytes(msg.payload)))

    def _enqueue(self, item: Incoming) -> None:
        try:
            self.replies.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning(
                "reply queue full: dropped %s (%d dropped so far)", item.topic, self.dropped
            )
