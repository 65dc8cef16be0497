"""MQTT transport for the simulated controllers: paho-mqtt 2, MQTT 5, QoS 1, one thread.

Two connection layouts (:attr:`MqttTransport.shared`):

- **per machine** (default, like real i5 controllers): each machine opens its own connection when
  it powers on, with its own credentials and its retained ``status`` ``online: false`` as the Last
  Will, and closes it cleanly (after every message is acknowledged) when it powers off. A machine
  whose connection dies uncleanly is declared offline by the broker.
- **shared**: one connection (the service account) carries every machine, like a gateway. MQTT has
  one Will per connection, so machines get no Will; deaths are published explicitly.

Every socket is driven from the caller's thread: paho's sockets sit in one ``selectors`` selector
and :meth:`MqttTransport.service` reads, writes and keeps alive. Flow control is a named policy:
``block`` -- when ``max_pending`` messages are unacknowledged, :meth:`publish` services the
sockets until the broker catches up, so the simulation slows down instead of dropping anything.
"""

from __future__ import annotations

__all__ = ["MqttTransport", "TransportStats"]

import contextlib
import logging
import selectors
import socket
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from simulators.controllers import Will
from simulators.errors import SimulatorError

logger = logging.getLogger(__name__)


@dataclass
class TransportStats:
    """Counters of the transport: messages handed over, acknowledged, connections made."""

    published: int = 0
    acked: int = 0
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0

    @property
    def pending(self) -> int:
        """Messages handed to paho and not yet acknowledged by the broker."""
        return self.published - self.acked


class _Link:
    """One paho client, the machine(s) it carries and its unacknowledged count."""

    __slots__ = ("client", "closing", "connected", "failed", "key", "pending", "sock")

    def __init__(self, key: int, client: mqtt.Client) -> None:
        self.key = key
        self.client = client
        self.sock: Any = None
        self.pending = 0
        self.closing = False
        self.connected = False
        self.failed: str | None = None


class MqttTransport:
    """A :class:`~simulators.controllers.Sink` and loop service over paho-mqtt.

    ``machine_ids[i]`` names machine ``i``; ``credentials`` maps a machine index to its own
    (username, password) for per-machine connections (machines without an entry use the service
    account). ``max_inflight``: per connection (paho window); ``max_pending``: unacknowledged
    messages over all connections before :meth:`publish` blocks.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        site: str,
        machine_ids: list[str],
        username: str | None,
        password: str | None,
        credentials: dict[int, tuple[str, str]] | None = None,
        shared: bool = False,
        keepalive: int = 30,
        max_inflight: int = 200,
        max_pending: int = 20000,
        client_prefix: str = "arbor-sim",
        connect_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.site = site
        self.machine_ids = machine_ids
        self.username = username
        self.password = password
        self.credentials = credentials or {}
        self.shared = shared
        self.keepalive = keepalive
        self.max_inflight = max_inflight
        self.max_pending = max_pending
        self.client_prefix = client_prefix
        self.connect_timeout = connect_timeout
        self.stats = TransportStats()
        self._sel = selectors.DefaultSelector()
        self._links: dict[int, _Link] = {}  # machine index (or -1 shared) -> link
        self._closing: list[_Link] = []
        self._dirty: set[_Link] = set()
        self._last_misc = time.monotonic()
        if shared:
            self._links[-1] = self._connect(-1, None)

    # --- connections --------------------------------------------------------------------------
    def _connect(self, key: int, will: Will | None) -> _Link:
        name = "shared" if key < 0 else self.machine_ids[key]
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"{self.client_prefix}-{self.site}-{name}",
            protocol=mqtt.MQTTv5,
        )
        user, pw = self.credentials.get(key, (self.username, self.password))
        if user is not None:
            client.username_pw_set(user, pw)
        if will is not None:
            client.will_set(will.topic, will.payload, qos=1, retain=True)
        client.max_inflight_messages_set(self.max_inflight)
        client.max_queued_messages_set(0)
        link = _Link(key, client)
        client.user_data_set(link)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        try:
            client.connect(self.host, self.port, keepalive=self.keepalive, clean_start=True)
        except OSError as exc:
            self.stats.connect_failures += 1
            raise SimulatorError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        return link

    def _on_socket_open(self, client: mqtt.Client, link: _Link, sock: Any) -> None:
        link.sock = sock
        self._sel.register(sock, selectors.EVENT_READ, link)

    def _on_socket_close(self, client: mqtt.Client, link: _Link, sock: Any) -> None:
        # Called by paho before it closes the socket: unregister while the fd is still ours.
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(sock)
        link.sock = None

    def _on_connect(
        self, client: mqtt.Client, link: _Link, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        if rc.is_failure:
            link.failed = str(rc)
            self.stats.connect_failures += 1
            logger.error("connection %s refused: %s", client._client_id, rc)
        else:
            link.connected = True
            self.stats.connects += 1

    def _on_publish(
        self, client: mqtt.Client, link: _Link, mid: int, rc: ReasonCode, props: Any
    ) -> None:
        link.pending -= 1
        self.stats.acked += 1

    def _on_disconnect(
        self, client: mqtt.Client, link: _Link, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        link.connected = False
        self.stats.disconnects += 1
        if not link.closing:
            logger.warning("connection %s lost: %s", client._client_id, rc)

    def _wait(self, done: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise SimulatorError(f"timed out after {timeout:g} s waiting for {what}")
            self.service(min(left, 0.05))

    # --- Sink ---------------------------------------------------------------------------------
    def open(self, machine: int, will: Will) -> None:
        """Open machine ``machine``'s connection with its Will (no-op when shared)."""
        if self.shared:
            return
        old = self._links.pop(machine, None)
        if old is not None:  # reborn before the old connection finished closing
            self._finish_close(old, wait=True)
        self._links[machine] = self._connect(machine, will)

    def publish(self, machine: int, topic: str, payload: bytes, retain: bool) -> None:
        """Hand a QoS 1 message over; blocks (servicing I/O) while too many are unacknowledged."""
        if self.stats.pending >= self.max_pending:
            self._wait(lambda: self.stats.pending < self.max_pending // 2, 60.0,
                       "the broker to acknowledge")  # fmt: skip
        link = self._links[-1 if self.shared else machine]
        info = link.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise SimulatorError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        link.pending += 1
        self.stats.published += 1
        self._dirty.add(link)

    def close(self, machine: int) -> None:
        """Close machine ``machine``'s connection cleanly once its messages are acknowledged."""
        if self.shared:
            return
        link = self._links.pop(machine, None)
        if link is not None:
            link.closing = True
            self._closing.append(link)

    def _finish_close(self, link: _Link, wait: bool) -> None:
        if wait:
            self._wait(
                lambda: link.pending <= 0 or link.failed is not None,
                30.0,
                f"acks of {link.client._client_id!r}",
            )
        link.closing = True
        link.client.disconnect()
        if link in self._closing:
            self._closing.remove(link)
        self._dirty.discard(link)

    # --- loop service -----------------------------------------------------------------------
    def service(self, timeout: float) -> None:
        """Do pending socket I/O, waiting up to ``timeout`` seconds for incoming data."""
        for link in list(self._dirty):
            if link.sock is not None and link.client.want_write():
                link.client.loop_write()
            else:
                self._dirty.discard(link)
        for key, _ in self._sel.select(timeout=max(0.0, timeout)):
            link = key.data
            rc = link.client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not link.closing:
                logger.warning("read on %s failed: %s", link.client._client_id,
                               mqtt.error_string(rc))  # fmt: skip
            if link.client.want_write():
                self._dirty.add(link)
        for link in [lk for lk in self._closing if lk.pending <= 0 or lk.sock is None]:
            self._finish_close(link, wait=False)
        now = time.monotonic()
        if now - self._last_misc >= 1.0:
            self._last_misc = now
            for link in list(self._links.values()):
                link.client.loop_misc()

    def wait_connected(self, timeout: float | None = None) -> None:
        """Block until every open connection is accepted (raise if one is refused)."""

        def ready() -> bool:
            bad = [lk for lk in self._links.values() if lk.failed]
            if bad:
                raise SimulatorError(f"connection refused: {bad[0].failed}")
            return all(lk.connected for lk in self._links.values())

        self._wait(ready, timeout or self.connect_timeout, "CONNACK")

    def drain(self, timeout: float = 30.0) -> bool:
        """Service I/O until every message is acknowledged; False on timeout."""
        try:
            self._wait(lambda: self.stats.pending <= 0, timeout, "acks")
        except SimulatorError:
            return False
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """Drain, then disconnect every connection cleanly."""
        self.drain(timeout)
        for link in [*self._links.values(), *self._closing]:
            link.closing = True
            link.client.disconnect()
        self._links.clear()
        self._closing.clear()
        self.service(0.0)
        self._sel.close()

    def kill(self, machine: int) -> None:
        """Drop machine ``machine``'s connection without DISCONNECT (the broker sends its Will).

        For tests and fault drills: the socket is shut down under paho's feet.
        """
        link = self._links.pop(machine)
        link.closing = True
        if link.sock is not None:
            link.sock.shutdown(socket.SHUT_RDWR)
            self.service(0.0)
        self._dirty.discard(link)
