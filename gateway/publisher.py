"""The MQTT side of one machine: birth and Last Will, store-and-forward replay, downlink intake.

Threading model: paho-mqtt 2 runs its network loop in its own thread (``loop_start``); every
paho callback only hands its arguments to the event loop with ``call_soon_threadsafe``, so all
state (the in-flight map, the disk queue, the session) is touched by the event-loop thread alone.
``publish`` is called from the event loop (paho makes it thread-safe).

Each connection is a fresh paho client (MQTT 5, QoS 1), so paho holds no state across
connections: after any disconnect the publisher itself resends every row still in the disk queue,
in order. Per connection:

1. a new session id; the Last Will is ``status`` ``online: false`` with it (retained);
2. after CONNACK: birth ``status`` ``online: true`` (retained), subscribe ``cmd/+``, call
   ``on_birth`` (the pipeline stores a snapshot of every event signal as the session's first
   message);
3. drain: rows of the live session and of older sessions (the backlog, sent with
   ``historical: true``) are interleaved, each stream in ``id`` order, at most ``window`` in
   flight; a row is deleted when its PUBACK arrives (a failure code moves it to dead letters).
"""

from __future__ import annotations

__all__ = ["MachinePublisher", "PublisherStats"]

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.buffer import DiskQueue, mark_historical
from gateway.config import ControllerConfig, MqttConfig, MqttEndpoint
from gateway.pipeline import MachineState, new_session_id
from protocol import Controller, Status, cmd_filter, encode, status_topic

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PublisherStats:
    """Counters of one machine's publisher."""

    connects: int = 0
    connect_failures: int = 0
    published: int = 0
    acked: int = 0
    historical: int = 0
    dead: int = 0
    commands: int = 0


class _Connection:
    """One paho client and what is in flight on it."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self.inflight: dict[int, int] = {}  # mid -> row id
        self.live_after = 0
        self.hist_after = 0
        self.lost = asyncio.Event()
        self.connack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()


class MachinePublisher:
    """Publishes one machine's outbox and status; hands ``cmd/*`` messages to ``on_command``."""

    def __init__(
        self,
        state: MachineState,
        store: DiskQueue,
        endpoint: MqttEndpoint,
        mqtt_config: MqttConfig,
        controller: ControllerConfig,
        *,
        client_id: str,
        on_birth: Callable[[], None] = lambda: None,
        on_command: Callable[[str, bytes], None] = lambda topic, payload: None,
    ) -> None:
        self.state = state
        self.store = store
        self.endpoint = endpoint
        self.config = mqtt_config
        self.controller = Controller(
            vendor=controller.vendor,
            model=controller.model,
            kind=controller.kind,  # type: ignore[arg-type]  # validated in config
            firmware=controller.firmware,
        )
        self.client_id = client_id
        self.on_birth = on_birth
        self.on_command = on_command
        self.stats = PublisherStats()
        self.connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._conn: _Connection | None = None
        self._status_topic = status_topic(state.site, state.machine)

    def wake(self) -> None:
        """New rows are in the disk queue."""
        self._wake.set()

    # -- run -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, publish, reconnect with jittered capped backoff; forever (until cancelled)."""
        delay = self.config.reconnect_min_s
        while True:
            conn: _Connection | None = None
            try:
                conn = await self._connect()
                delay = self.config.reconnect_min_s
                await self._drain(conn)
            except (OSError, TimeoutError, ConnectionError) as exc:
                self.stats.connect_failures += 1
                log.warning("mqtt %s: %s", self.state.key, str(exc) or type(exc).__name__)
            finally:
                self.connected.clear()
                if conn is not None:
                    await self._close(conn)
                self._conn = None
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.config.reconnect_max_s)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        # The first birth adopts the session the pipeline numbered its first messages with, so
        # data captured while the first connection was being made is not marked historical.
        session = self.state.session if self.stats.connects == 0 else new_session_id()
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
        )
        self.endpoint.configure(client)  # credentials, and TLS for mqtts://
        will = Status(
            online=False,
            ts=datetime.now(UTC),
            session=session,
            controller=self.controller,
            reason="connection_lost",
        )
        client.will_set(self._status_topic, encode(will), qos=1, retain=True)
        client.max_inflight_messages_set(self.config.window)
        conn = _Connection(client)

        def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
            loop.call_soon_threadsafe(_resolve, conn.connack, rc)

        def on_disconnect(c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
            c.loop_stop()  # stop paho's own reconnecting: we reconnect with a fresh client
            loop.call_soon_threadsafe(self._lost, conn)

        def on_publish(c: Any, u: Any, mid: int, rc: Any, props: Any) -> None:
            loop.call_soon_threadsafe(self._acked, conn, mid, rc)

        def on_message(c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
            loop.call_soon_threadsafe(self._command, msg.topic, bytes(msg.payload))

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        client.on_message = on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.config.session_expiry_s
        timeout = self.config.connect_timeout_s
        self._conn = conn
        rc = await asyncio.wait_for(
            asyncio.to_thread(
                client.connect,
                self.endpoint.host,
                self.endpoint.port,
                self.config.keepalive_s,
                clean_start=False,
                properties=props,
            ),
            timeout,
        )
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"connect failed: {mqtt.error_string(rc)}")
        client.loop_start()
        reason = await asyncio.wait_for(conn.connack, timeout)
        if getattr(reason, "is_failure", False):
            raise ConnectionError(f"broker refused the connection: {reason}")
        self.stats.connects += 1
        # The first connection adopts the pipeline's session: its messages already stored keep
        # their seqs and the numbering goes on (restarting it at 0 gave two messages one key
        # when a batch reached the disk before CONNACK, as on a loaded gateway's start).
        if session != self.state.session:
            self.state.start_session(session)
        birth = Status(
            online=True, ts=datetime.now(UTC), session=session, controller=self.controller
        )
        client.publish(self._status_topic, encode(birth), qos=1, retain=True)
        client.subscribe(cmd_filter(self.state.site, self.state.machine), qos=1)
        log.info("mqtt %s: connected, session %s", self.state.key, session)
        self.connected.set()
        self.on_birth()
        return conn

    async def _close(self, conn: _Connection) -> None:
        client = conn.client
        with contextlib.suppress(Exception):  # closing a half-dead paho client
            client.disconnect()
        await asyncio.to_thread(client.loop_stop)

    async def stop(self) -> None:
        """Publish ``online: false`` (reason shutdown) and disconnect cleanly, if connected."""
        conn = self._conn
        if conn is None or not self.connected.is_set():
            return
        status = Status(
            online=False,
            ts=datetime.now(UTC),
            session=self.state.session,
            controller=self.controller,
            reason="shutdown",
        )
        info = conn.client.publish(self._status_topic, encode(status), qos=1, retain=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.to_thread(info.wait_for_publish, 2.0), 3.0)

    # -- drain ---------------------------------------------------------------------------------

    async def _drain(self, conn: _Connection) -> None:
        window = self.config.window
        key = self.state.key
        while not conn.lost.is_set():
            # Cleared before reading the queue, not after: a row stored (or an ack) from here
            # on wakes the wait below, and rows stored before are in the queries' answers.
            self._wake.clear()
            room = window - len(conn.inflight)
            more = False
            if room > 0:
                session = self.state.session
                live_limit = max(1, room // 2)
                live = self.store.pending(
                    key, after=conn.live_after, limit=live_limit, session=session, live=True
                )
                hist_limit = room - len(live)
                hist = self.store.pending(
                    key, after=conn.hist_after, limit=hist_limit, session=session, live=False
                )
                # A full answer may leave rows behind: look again at once. Otherwise the queue
                # is empty and only a new row (or a freed window slot) brings work: querying
                # again on every turn cost two SELECTs per message for nothing.
                more = len(live) == live_limit or (hist_limit > 0 and len(hist) == hist_limit)
                for row in live:
                    if not self._send(conn, row.id, row.topic, row.payload):
                        more = False  # paho refused (disconnecting): wait, do not spin
                        break
                    conn.live_after = row.id
                for row in hist:
                    if not self._send(conn, row.id, row.topic, mark_historical(row.payload)):
                        more = False
                        break
                    conn.hist_after = row.id
                    self.stats.historical += 1
            if not more:
                # One event (a lost connection sets it too) under one deadline: two
                # ensure_future tasks and an asyncio.wait per idle turn cost more than the
                # publish itself, and a publisher goes idle after every message.
                if conn.lost.is_set():
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()
        raise ConnectionError("connection lost")

    def _lost(self, conn: _Connection) -> None:
        conn.lost.set()
        self._wake.set()  # the drain loop waits on this one event

    def _send(self, conn: _Connection, row_id: int, topic: str, payload: bytes) -> bool:
        info = conn.client.publish(topic, payload, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        conn.inflight[info.mid] = row_id
        self.stats.published += 1
        return True

    def _acked(self, conn: _Connection, mid: int, rc: Any) -> None:
        row_id = conn.inflight.pop(mid, None)
        if row_id is None:
            return
        if getattr(rc, "is_failure", False):
            self.stats.dead += 1
            log.error(
                "mqtt %s: broker refused message (row %d): %s; moved to dead letters",
                self.state.key,
                row_id,
                rc,
            )
            self.store.dead_letter(row_id, str(rc))
        else:
            self.stats.acked += 1
            self.store.ack(row_id)
        if len(conn.inflight) + 1 >= self.config.window:
            self._wake.set()  # a slot in a full window: rows may be waiting for it

    # -- downlink ------------------------------------------------------------------------------

    def _command(self, topic: str, payload: bytes) -> None:
        self.stats.commands += 1
        self.on_command(topic, payload)

    def publish_now(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """Publish outside the disk queue (replies, rebirth status); False when offline."""
        conn = self._conn
        if conn is None or not self.connected.is_set():
            return False
        info = conn.client.publish(topic, payload, qos=1, retain=retain)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def rebirth(self) -> bool:
        """Publish the birth status again (same session); False when offline."""
        birth = Status(
            online=True,
            ts=datetime.now(UTC),
            session=self.state.session,
            controller=self.controller,
        )
        return self.publish_now(self._status_topic, encode(birth), retain=True)


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)
