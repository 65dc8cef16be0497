"""MQTT transport for the simulated controllers: paho-mqtt 2, MQTT 5, QoS 1, one thread.

Two connection layouts (:attr:`MqttTransport.shared`):

- **per machine** (default, like real i5 controllers): each machine opens its own connection when
  it powers on, with its own credentials and its retained ``status`` ``online: false`` as the Last
  Will, and closes it cleanly (after every message is acknowledged) when it powers off. A machine
  whose connection dies uncleanly is declared offline by the broker.
- **shared**: one connection (the service account) carries every machine, like a gateway. MQTT has
  one Will per connection, so machines get no Will; deaths are published explicitly.

Every socket is driven from the caller's thread: paho's sockets sit in one ``selectors`` selector
and :meth:`MqttTransport.service` reads, writes, keeps alive and reconnects.

**Store and forward, like an i5 edge.** Each connection owns its messages until the broker's
PUBACK: a bounded buffer (``buffer_max`` messages per connection) of messages not yet sent, at
most ``max_inflight`` handed to paho. When a connection dies (broker restart, network) it is
reopened with exponential backoff (``reconnect_min``..``reconnect_max`` s, jittered) on a fresh
paho client, and everything not acknowledged is sent again, in order, with ``historical: true``.
A per-machine connection that comes back is a new birth: the controllers (:meth:`attach`) give
the Will of the next session before the connect and publish the birth status and snapshot after
the CONNACK, ahead of the backlog; the backlog keeps its original session and seq. Retained
statuses of the old connection are not replayed (the new birth supersedes them). When the buffer
is full the oldest message is dropped and counted (``stats.dropped``): its seq is a gap ingest
records. Each message's ``done`` callback says whether it was acknowledged (``True``) or
dropped or refused by the broker (``False``), so the ground truth counts exactly what the broker
acknowledged.

Flow control is a named policy: ``block`` -- when ``max_pending`` messages on connected links are
unacknowledged, :meth:`publish` services the sockets until the broker catches up, so the
simulation slows down instead of dropping anything while the broker is reachable.
"""

from __future__ import annotations

__all__ = ["MqttTransport", "Reconnectable", "TransportStats"]

import contextlib
import logging
import random
import selectors
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from simulators.controllers import Will
from simulators.errors import SimulatorError

logger = logging.getLogger(__name__)

_LIVE = b'"historical":false'
_REPLAYED = b'"historical":true'


class Reconnectable(Protocol):
    """What the transport asks of the controllers when a machine's connection comes back."""

    def next_will(self, machine: int) -> Will:
        """The Last Will of the session the next birth of ``machine`` will start."""

    def reborn(self, machine: int) -> None:
        """The connection is back: start that session (birth status and snapshot)."""


@dataclass
class TransportStats:
    """Counters of the transport: messages handed over, acknowledged, dropped, connections."""

    published: int = 0
    acked: int = 0
    dropped: int = 0  # oldest messages dropped from a full buffer
    refused: int = 0  # PUBACK with a failure reason code
    resent: int = 0  # messages sent again after a connection died
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    reconnects: int = 0

    @property
    def pending(self) -> int:
        """Messages handed to the transport and not yet acknowledged, dropped or refused."""
        return self.published - self.acked - self.dropped - self.refused


class _Msg:
    __slots__ = ("done", "payload", "retain", "topic")

    def __init__(
        self, topic: str, payload: bytes, retain: bool, done: Callable[[bool], None] | None
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.retain = retain
        self.done = done


class _Link:
    """One connection (a fresh paho client per attempt), its buffer and in-flight messages."""

    __slots__ = ("attempt_at", "backlog", "backoff", "client", "closing", "connected",
                 "ever_connected", "failed", "inflight", "key", "next_attempt", "queue",
                 "reborn_due", "replay_due", "sock", "will")  # fmt: skip

    def __init__(self, key: int, will: Will | None) -> None:
        self.key = key
        self.will = will
        self.client: mqtt.Client | None = None
        self.sock: Any = None
        self.closing = False
        self.connected = False
        self.ever_connected = False
        self.failed: str | None = None
        self.queue: deque[_Msg] = deque()  # current session, not yet handed to paho
        self.backlog: deque[_Msg] = deque()  # from before a reconnect: replayed, historical
        self.inflight: dict[int, _Msg] = {}  # mid -> message, handed to paho, awaiting PUBACK
        self.next_attempt = 0.0
        self.attempt_at = 0.0
        self.backoff = 0.0
        self.reborn_due = False
        self.replay_due = False

    @property
    def pending(self) -> int:
        return len(self.queue) + len(self.backlog) + len(self.inflight)


class MqttTransport:
    """A :class:`~simulators.controllers.Sink` and loop service over paho-mqtt.

    ``machine_ids[i]`` names machine ``i``; ``credentials`` maps a machine index to its own
    (username, password) for per-machine connections (machines without an entry use the service
    account). ``max_inflight``: per connection (paho window); ``max_pending``: unacknowledged
    messages over all connected links before :meth:`publish` blocks; ``buffer_max``: messages a
    connection keeps while it cannot deliver them (oldest dropped beyond).
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
        buffer_max: int = 1000,
        reconnect_min: float = 0.25,
        reconnect_max: float = 5.0,
        client_prefix: str = "arbor-sim",
        connect_timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
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
        self.buffer_max = max(1, buffer_max)
        # The shared connection buffers for every machine it carries.
        self._bound = self.buffer_max * (len(machine_ids) if shared else 1)
        self.reconnect_min = reconnect_min
        self.reconnect_max = max(reconnect_min, reconnect_max)
        self.client_prefix = client_prefix
        self.connect_timeout = connect_timeout
        # One context for every connection (a machine each): the CA is read once.
        self.tls = tls
        self.stats = TransportStats()
        self.controllers: Reconnectable | None = None
        #: ``on_command(topic, payload)``: set to receive ``cmd/+`` of the machines (downlink);
        #: called from :meth:`service`, outside paho's callbacks.
        self.on_command: Callable[[str, bytes], None] | None = None
        self._commands: list[tuple[str, bytes]] = []
        self._sel = selectors.DefaultSelector()
        self._links: dict[int, _Link] = {}  # machine index (or -1 shared) -> link
        self._closing: list[_Link] = []
        self._dirty: set[_Link] = set()
        self._down: set[_Link] = set()  # links waiting for their next connection attempt
        self._connacked: list[_Link] = []
        self._refill: set[_Link] = set()  # links whose in-flight window has room again
        self._rng = random.Random()
        self._reached = False  # a TCP connection to the broker has succeeded once
        self._last_misc = time.monotonic()
        if shared:
            link = _Link(-1, None)
            self._links[-1] = link
            self._attempt(link, first=True)

    def attach(self, controllers: Reconnectable) -> None:
        """Let a reconnecting per-machine connection start a new session (birth) via these."""
        self.controllers = controllers

    # --- connections --------------------------------------------------------------------------
    def _client_id(self, key: int) -> str:
        name = "shared" if key < 0 else self.machine_ids[key]
        return f"{self.client_prefix}-{self.site}-{name}"

    def _new_client(self, link: _Link, will: Will | None) -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self._client_id(link.key),
            protocol=mqtt.MQTTv5,
        )
        user, pw = self.credentials.get(link.key, (self.username, self.password))
        if user is not None:
            client.username_pw_set(user, pw)
        if self.tls is not None:
            client.tls_set_context(self.tls)
        if will is not None:
            client.will_set(will.topic, will.payload, qos=1, retain=True)
        client.max_inflight_messages_set(self.max_inflight)
        client.max_queued_messages_set(0)
        client.user_data_set(link)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        return client

    def _attempt(self, link: _Link, first: bool = False) -> None:
        """One connection attempt; on failure schedule the next (or raise, see below).

        A failure raises only when no connection of this transport ever reached the broker (it
        is not there at all: a configuration error); afterwards machines retry with backoff.
        """
        self._down.discard(link)
        will = link.will
        reborn = link.ever_connected and not link.closing and link.key >= 0
        if reborn and self.controllers is not None:
            will = link.will = self.controllers.next_will(link.key)
            link.reborn_due = True
        client = self._new_client(link, will)
        link.client = client
        link.attempt_at = time.monotonic()
        try:
            client.connect(self.host, self.port, keepalive=self.keepalive, clean_start=True)
        except OSError as exc:
            self.stats.connect_failures += 1
            self._drop_client(link)
            if not self._reached and first:
                raise SimulatorError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
            self._schedule(link, str(exc))
            return
        self._reached = True

    def _schedule(self, link: _Link, why: str) -> None:
        link.backoff = min(self.reconnect_max, max(self.reconnect_min, link.backoff * 2))
        delay = link.backoff * self._rng.uniform(0.5, 1.0)
        link.next_attempt = time.monotonic() + delay
        self._down.add(link)
        logger.debug("%s: reconnect in %.2f s (%s)", self._client_id(link.key), delay, why)

    def _drop_client(self, link: _Link) -> None:
        """Forget the link's paho client, closing its socket if paho has not."""
        client, link.client = link.client, None
        link.connected = False
        self._dirty.discard(link)
        sock = link.sock
        if sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(sock)
            link.sock = None
            with contextlib.suppress(OSError):
                sock.close()
        del client

    def _lost(self, link: _Link, why: str) -> None:
        """The connection died: everything unacknowledged becomes the backlog, in order."""
        was = link.connected
        self._drop_client(link)
        if link.inflight or link.queue:
            self.stats.resent += len(link.inflight)
            link.backlog = deque([*link.inflight.values(), *link.backlog, *link.queue])
            link.inflight.clear()
            link.queue.clear()
        if was:
            self.stats.disconnects += 1
            logger.warning("connection %s lost: %s; %d message(s) kept for replay",
                           self._client_id(link.key), why, link.pending)  # fmt: skip
        if link in self._links.values() or link in self._closing:
            self._schedule(link, why)

    def _on_socket_open(self, client: mqtt.Client, link: _Link, sock: Any) -> None:
        if client is not link.client:
            return
        link.sock = sock
        self._sel.register(sock, selectors.EVENT_READ, link)

    def _on_socket_close(self, client: mqtt.Client, link: _Link, sock: Any) -> None:
        # Called by paho before it closes the socket: unregister while the fd is still ours.
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(sock)
        if link.sock is sock:
            link.sock = None

    def _on_connect(
        self, client: mqtt.Client, link: _Link, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        if client is not link.client:
            return
        if rc.is_failure:
            link.failed = str(rc)
            self.stats.connect_failures += 1
            logger.error("connection %s refused: %s", self._client_id(link.key), rc)
            self._lost(link, f"refused: {rc}")
            return
        link.connected = True
        link.failed = None
        link.backoff = 0.0
        self.stats.connects += 1
        if link.ever_connected:
            link.replay_due = True
            self.stats.reconnects += 1
            logger.info("connection %s back; %d message(s) to replay",
                        self._client_id(link.key), len(link.backlog))  # fmt: skip
        link.ever_connected = True
        self._connacked.append(link)

    def _on_publish(
        self, client: mqtt.Client, link: _Link, mid: int, rc: ReasonCode, props: Any
    ) -> None:
        if client is not link.client:
            return
        msg = link.inflight.pop(mid, None)
        if msg is None:
            return
        ok = not rc.is_failure
        if ok:
            self.stats.acked += 1
        else:
            self.stats.refused += 1
            logger.warning("%s: broker refused %s: %s", self._client_id(link.key), msg.topic, rc)
        if msg.done is not None:
            msg.done(ok)
        self._refill.add(link)

    def _on_message(self, client: mqtt.Client, link: _Link, msg: mqtt.MQTTMessage) -> None:
        if client is link.client:
            self._commands.append((msg.topic, bytes(msg.payload)))

    def _subscribe_commands(self, link: _Link) -> None:
        if self.on_command is None or link.client is None:
            return
        machine = "+" if link.key < 0 else self.machine_ids[link.key]
        link.client.subscribe(f"arbor/v1/{self.site}/{machine}/cmd/+", qos=1)

    def _on_disconnect(
        self, client: mqtt.Client, link: _Link, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        if client is not link.client:
            return
        if link.closing and not link.pending:
            link.connected = False
            return
        self._lost(link, str(rc))

    def _wait(self, done: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise SimulatorError(f"timed out after {timeout:g} s waiting for {what}")
            self.service(min(left, 0.05))

    # --- Sink ---------------------------------------------------------------------------------
    def open(self, machine: int, will: Will) -> None:
        """Open machine ``machine``'s connection with its Will (no-op when shared).

        Messages an earlier connection of the machine still holds (it powered off during an
        outage) are carried over as backlog, after the birth.
        """
        if self.shared:
            return
        link = _Link(machine, will)
        for old in [lk for lk in [self._links.pop(machine, None), *self._closing]
                    if lk is not None and lk.key == machine]:  # fmt: skip
            self._retire(old, into=link)
        self._links[machine] = link
        self._attempt(link, first=True)

    def _retire(self, old: _Link, into: _Link) -> None:
        if old in self._closing:
            self._closing.remove(old)
        self._down.discard(old)
        if old.client is not None and old.connected:
            with contextlib.suppress(Exception):
                old.client.disconnect()
                old.client.loop_write()
        self._drop_client(old)
        carried = deque([*old.inflight.values(), *old.backlog, *old.queue])
        old.inflight.clear()
        old.backlog.clear()
        old.queue.clear()
        into.backlog.extend(self._replayable(carried, keep_status=False))

    def _replayable(self, msgs: deque[_Msg], keep_status: bool) -> deque[_Msg]:
        out: deque[_Msg] = deque()
        for msg in msgs:
            if msg.retain and not keep_status:
                # A status of an older connection: the new birth supersedes it.
                self.stats.dropped += 1
                if msg.done is not None:
                    msg.done(False)
                continue
            if not msg.retain:
                msg.payload = msg.payload.replace(_LIVE, _REPLAYED, 1)
            out.append(msg)
        return out

    def publish(
        self,
        machine: int,
        topic: str,
        payload: bytes,
        retain: bool,
        done: Callable[[bool], None] | None = None,
    ) -> None:
        """Hand a QoS 1 message over; blocks (servicing I/O) while too many are unacknowledged
        on connected links. ``done(acknowledged)`` is called exactly once per message."""
        if self.stats.pending >= self.max_pending and self._connected_pending() >= self.max_pending:
            self._wait(lambda: self._connected_pending() < self.max_pending // 2, 60.0,
                       "the broker to acknowledge")  # fmt: skip
        key = -1 if self.shared else machine
        link = self._links.get(key)
        if link is None:  # a machine publishing without a connection: not delivered
            if done is not None:
                done(False)
            return
        link.queue.append(_Msg(topic, payload, retain, done))
        self.stats.published += 1
        # While connected the block policy bounds the buffer; while not, drop_oldest does.
        while not link.connected and link.pending > self._bound and (link.backlog or link.queue):
            self._drop_oldest(link)
        self._pump(link)

    def _drop_oldest(self, link: _Link) -> None:
        src = link.backlog if link.backlog else link.queue  # (in-flight ones are on the wire)
        # Keep a birth status at the head of the queue: it is what makes the session known.
        i = 1 if src is link.queue and len(src) > 1 and src[0].retain else 0
        msg = src[i]
        del src[i]
        self.stats.dropped += 1
        if self.stats.dropped == 1 or self.stats.dropped % 1000 == 0:
            logger.warning("%s: buffer full (%d), dropped the oldest message (%d dropped so far)",
                           self._client_id(link.key), self._bound,
                           self.stats.dropped)  # fmt: skip
        if msg.done is not None:
            msg.done(False)

    def _connected_pending(self) -> int:
        links = [*self._links.values(), *self._closing]
        return sum(lk.pending for lk in links if lk.connected)

    def _next(self, link: _Link) -> _Msg | None:
        q = link.queue
        if q and q[0].retain:  # a birth goes first, then the backlog, then live data
            return q.popleft()
        if link.backlog:
            return link.backlog.popleft()
        return q.popleft() if q else None

    def _pump(self, link: _Link) -> None:
        """Hand queued messages to paho up to the in-flight window (connected links only)."""
        client = link.client
        if client is None or not link.connected:
            return
        while len(link.inflight) < self.max_inflight:
            msg = self._next(link)
            if msg is None:
                break
            info = client.publish(msg.topic, msg.payload, qos=1, retain=msg.retain)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                link.inflight[info.mid] = msg
                continue
            if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN or link.client is not client:
                link.queue.appendleft(msg)  # the connection just died: kept for the replay
                if link.client is client:
                    self._lost(link, mqtt.error_string(info.rc))
                return
            raise SimulatorError(f"publish to {msg.topic} failed: {mqtt.error_string(info.rc)}")
        if link.client is not None:
            self._dirty.add(link)

    def close(self, machine: int) -> None:
        """Close machine ``machine``'s connection cleanly once its messages are acknowledged."""
        if self.shared:
            return
        link = self._links.pop(machine, None)
        if link is not None:
            link.closing = True
            self._closing.append(link)

    def _finish_close(self, link: _Link) -> None:
        link.closing = True
        if link.client is not None:
            with contextlib.suppress(Exception):
                link.client.disconnect()
        if link in self._closing:
            self._closing.remove(link)
        self._down.discard(link)
        self._dirty.discard(link)

    # --- loop service -----------------------------------------------------------------------
    def service(self, timeout: float) -> None:
        """Do pending socket I/O and reconnects, waiting up to ``timeout`` s for incoming data."""
        for link in list(self._dirty):
            client = link.client
            if client is not None and link.sock is not None and client.want_write():
                client.loop_write()
            else:
                self._dirty.discard(link)
        now = time.monotonic()
        if self._down:
            due = [lk for lk in self._down if lk.next_attempt <= now]
            for link in due:
                self._attempt(link)
            waits = [lk.next_attempt for lk in self._down]
            if waits:
                timeout = min(timeout, max(0.0, min(waits) - now))
        for key, _ in self._sel.select(timeout=max(0.0, timeout)):
            link = key.data
            client = link.client
            if client is None:
                continue
            rc = client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not link.closing:
                logger.debug("read on %s failed: %s", self._client_id(link.key),
                             mqtt.error_string(rc))  # fmt: skip
            if link.client is client and client.want_write():
                self._dirty.add(link)
        while self._connacked:
            link = self._connacked.pop(0)
            if link.client is None or not link.connected:
                continue
            self._subscribe_commands(link)
            if link.replay_due:
                # Everything still here was produced before this connection: the backlog.
                link.replay_due = False
                rebirth = link.reborn_due and self.controllers is not None
                old = deque([*link.backlog, *link.queue])
                link.queue.clear()
                link.backlog = self._replayable(old, keep_status=not rebirth)
            if link.reborn_due and self.controllers is not None:
                link.reborn_due = False
                self.controllers.reborn(link.key)
            self._pump(link)
        while self._refill:
            self._pump(self._refill.pop())
        if self._commands:
            commands, self._commands = self._commands, []
            for topic, payload in commands:
                if self.on_command is not None:
                    self.on_command(topic, payload)
        for link in [lk for lk in self._closing if lk.pending <= 0 and lk.connected]:
            self._finish_close(link)
        now = time.monotonic()
        if now - self._last_misc >= 1.0:
            self._last_misc = now
            for link in [*self._links.values(), *self._closing]:
                if link.client is None:
                    continue
                if not link.connected and now - link.attempt_at > self.connect_timeout:
                    self._lost(link, f"no CONNACK within {self.connect_timeout:g} s")
                elif link.sock is not None:
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
        """Service I/O until every message is acknowledged (or dropped); False on timeout."""
        try:
            self._wait(lambda: self.stats.pending <= 0, timeout, "acks")
        except SimulatorError:
            return False
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """Drain, then disconnect every connection cleanly. Messages still unacknowledged then
        are never reported done (so the ground truth does not count them)."""
        if not self.drain(timeout):
            logger.warning("stopping with %d message(s) unacknowledged", self.stats.pending)
        for link in [*self._links.values(), *self._closing]:
            link.closing = True
            if link.client is not None and link.connected:
                with contextlib.suppress(Exception):
                    link.client.disconnect()
        self.service(0.0)
        for link in [*self._links.values(), *self._closing]:
            self._drop_client(link)
        self._links.clear()
        self._closing.clear()
        self._down.clear()
        self._sel.close()

    def kill(self, machine: int) -> None:
        """Drop machine ``machine``'s connection without DISCONNECT (the broker sends its Will).

        For tests and fault drills: the socket is shut down under paho's feet and the machine's
        connection is forgotten (no reconnect).
        """
        link = self._links.pop(machine)
        link.closing = True
        if link.sock is not None:
            link.sock.shutdown(socket.SHUT_RDWR)
            self.service(0.0)
        self._down.discard(link)
        self._drop_client(link)
