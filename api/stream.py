"""The live stream behind `GET /api/v1/stream` (WebSocket): machine status changes and chosen
telemetry signals, from the broker to every connected dashboard.

    broker: arbor/v1/+/+/status and .../event always, .../telemetry while a client wants signals
      -> paho's thread: parse the topic, decode with `protocol.decode`, skip unwanted telemetry
      -> event loop: `StreamHub._apply` keeps each machine's live state and sees what changed
      -> one `Outbox` per client (bounded, named overflow policy below)
      -> the client's sender task -> WebSocket (api/routes/stream.py)

An `Outbox`'s overflow policy is **coalesce status, drop oldest telemetry**:

* status changes are never dropped: they are coalesced per machine (a newer state replaces an
  unsent one and the `changed` fields accumulate), so the outbox holds at most one status per
  machine;
* telemetry samples wait in a deque per (machine, signal) of `queue_samples`; when it is full the
  oldest sample is dropped and counted (the client sees the count as `dropped`);
* a client whose send does not complete within `send_timeout_s` is a slow consumer: it is
  disconnected with close code 4100 (`slow_consumer`), so a stuck client cannot hold memory.

Telemetry is flushed to a client at most `rate_hz` times per second (one frame per machine).
Between paho's thread and the loop, at most `ingress_limit` messages may wait; beyond that
telemetry is dropped at the door (counted), status and events never are.

State follows ingest's rules (docs/ingest.md): `online` on a birth or on data after silence,
`offline` on a Last Will of the current session (a Will of an older session is ignored),
`unknown` when an online machine is silent for `silence_timeout_s`. Historical (replayed)
messages do not drive the live stream. The state a client first receives is read from the
database (ingest's `machine`, `event` and `alarm`) overlaid with what the hub has seen since.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt

from api.mqtt import background_client
from protocol import (
    ConditionEvent,
    Event,
    ProtocolError,
    Status,
    Telemetry,
    decode,
    event_filter,
    parse_topic,
    status_filter,
    telemetry_filter,
)
from protocol.endpoint import parse_mqtt_url

__all__ = [
    "STATUS_FIELDS",
    "LiveMachine",
    "MachineKey",
    "Outbox",
    "StreamHub",
    "Subscription",
]

log = logging.getLogger(__name__)

MachineKey = tuple[str, str]  # (site, machine)

#: The fields of a status message that are pushed when they change (`last_seen` rides along).
STATUS_FIELDS = (
    "status",
    "online",
    "status_since",
    "execution",
    "execution_since",
    "mode",
    "program",
    "part_count",
    "alarms",
)
_EVENT_FIELDS = {
    "execution": "execution",
    "controller_mode": "mode",
    "program": "program",
    "part_count": "part_count",
}
_ALARM_LEVELS = ("WARNING", "FAULT")


@dataclass
class LiveMachine:
    """One machine's live state as the stream shows it."""

    site: str
    machine: str
    status: str = "unknown"
    online: bool = False
    last_seen: datetime | None = None
    status_since: datetime | None = None
    execution: str | None = None
    execution_since: datetime | None = None  # when the current execution value began
    mode: str | None = None
    program: str | None = None
    part_count: float | None = None
    session: str | None = None
    alarms: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    seeded: bool = False  # the database's state has been read in
    observed: set[str] = field(default_factory=set)  # fields set from the broker since start

    def public(self) -> dict[str, Any]:
        """The machine's state as a `status` message carries it."""
        alarms = sorted(self.alarms.values(), key=lambda a: (a["opened_at"], a["code"] or ""))
        return {
            "site": self.site,
            "machine": self.machine,
            "status": self.status,
            "online": self.online,
            "last_seen": self.last_seen,
            "status_since": self.status_since,
            "execution": self.execution,
            "execution_since": self.execution_since,
            "mode": self.mode,
            "program": self.program,
            "part_count": self.part_count,
            "active_alarms": len(alarms),
            "alarms": alarms,
        }


@dataclass(frozen=True)
class Subscription:
    """What one client asked for: machines by key, or every machine of `sites` (None = all the
    key may see) when `wildcard`; and the telemetry signals to stream."""

    machines: frozenset[MachineKey] = frozenset()
    wildcard: bool = False
    sites: frozenset[str] | None = None
    signals: frozenset[str] = frozenset()

    def covers(self, key: MachineKey) -> bool:
        if key in self.machines:
            return True
        return self.wildcard and (self.sites is None or key[0] in self.sites)


class Outbox:
    """A client's bounded queue: status coalesced per machine, telemetry drop-oldest."""

    def __init__(self, queue_samples: int) -> None:
        if queue_samples < 1:
            raise ValueError("queue_samples must be at least 1")
        self.queue_samples = queue_samples
        self.wakeup = asyncio.Event()
        self.dropped_total = 0
        self._status: dict[MachineKey, tuple[dict[str, Any], set[str] | None]] = {}
        self._samples: dict[MachineKey, dict[str, deque[tuple[datetime, Any]]]] = {}
        self._dropped: dict[MachineKey, int] = {}
        self._control: deque[dict[str, Any]] = deque(maxlen=64)

    def put_control(self, message: dict[str, Any]) -> None:
        """Queue an answer to the client (`subscribed`, `error`, `pong`); sent before status.

        At most 64 wait (drop oldest): a client that floods requests without reading loses
        answers, never status."""
        self._control.append(message)
        self.wakeup.set()

    def take_control(self) -> list[dict[str, Any]]:
        out = list(self._control)
        self._control.clear()
        return out

    def put_status(
        self, key: MachineKey, state: dict[str, Any], changed: Iterable[str] | None
    ) -> None:
        """Queue `state`; `changed=None` marks a snapshot (the client's first view)."""
        pending = self._status.get(key)
        merged: set[str] | None
        if pending is None:
            merged = None if changed is None else set(changed)
        elif pending[1] is None or changed is None:
            merged = None
        else:
            merged = pending[1] | set(changed)
        self._status[key] = (state, merged)
        self.wakeup.set()

    def put_sample(self, key: MachineKey, signal: str, ts: datetime, value: Any) -> None:
        signals = self._samples.setdefault(key, {})
        queue = signals.get(signal)
        if queue is None:
            queue = signals[signal] = deque(maxlen=self.queue_samples)
        if len(queue) == self.queue_samples:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            self.dropped_total += 1
        queue.append((ts, value))
        self.wakeup.set()

    @property
    def has_telemetry(self) -> bool:
        return bool(self._samples)

    def take_status(self) -> list[dict[str, Any]]:
        out = []
        for state, changed in self._status.values():
            message: dict[str, Any] = {"type": "status", **state}
            message["snapshot"] = changed is None
            message["changed"] = list(STATUS_FIELDS) if changed is None else sorted(changed)
            out.append(message)
        self._status.clear()
        return out

    def take_telemetry(self) -> list[dict[str, Any]]:
        out = []
        for (site, machine), signals in self._samples.items():
            out.append(
                {
                    "type": "telemetry",
                    "site": site,
                    "machine": machine,
                    "signals": {name: [[t, v] for t, v in q] for name, q in signals.items()},
                    "dropped": self._dropped.get((site, machine), 0),
                }
            )
        self._samples.clear()
        self._dropped.clear()
        return out

    def forget(self, keep: Subscription) -> None:
        """Drop whatever is queued for machines or signals no longer subscribed."""
        for key in [k for k in self._status if not keep.covers(k)]:
            del self._status[key]
        for key in list(self._samples):
            signals = self._samples[key]
            for name in [s for s in signals if not keep.covers(key) or s not in keep.signals]:
                del signals[name]
            if not signals:
                del self._samples[key]
                self._dropped.pop(key, None)


@dataclass(eq=False)
class Client:
    """A connected stream client, as the hub sees it."""

    outbox: Outbox
    subscription: Subscription = field(default_factory=Subscription)


@dataclass(frozen=True)
class _Decoded:
    site: str
    machine: str
    message: Status | Telemetry | Event
    retained: bool
    received: datetime


class StreamHub:
    """One MQTT connection per API process feeding every stream client (see the module doc)."""

    def __init__(
        self,
        url: str,
        *,
        silence_timeout_s: float = 60.0,
        queue_samples: int = 256,
        ingress_limit: int = 50_000,
    ) -> None:
        endpoint = parse_mqtt_url(url)
        self._host = endpoint.host
        self._port = endpoint.port
        self.silence_timeout_s = silence_timeout_s
        self.queue_samples = queue_samples
        self.ingress_limit = ingress_limit
        self.machines: dict[MachineKey, LiveMachine] = {}
        self.clients: set[Client] = set()
        self.counts = {"received": 0, "bad": 0, "ingress_dropped": 0}
        self._loop = asyncio.get_running_loop()
        self._connected = False
        self._first_connect = asyncio.Event()
        self._pending = 0
        self._pending_lock = threading.Lock()
        # Read by paho's thread: swapped whole (never mutated), so no lock is needed.
        self._wanted: frozenset[MachineKey] = frozenset()
        self._want_all = False
        self._telemetry_subscribed = False
        self._silence_task: asyncio.Task[None] | None = None
        self._client = background_client(endpoint, "api-stream", self)

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def endpoint(self) -> str:
        return f"{self._host}:{self._port}"

    def start(self) -> None:
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()
        self._silence_task = asyncio.create_task(self._silence_loop(), name="stream_silence")

    async def wait_connected(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self._first_connect.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        if self._silence_task is not None:
            self._silence_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._silence_task
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    # --- clients -----------------------------------------------------------------------------

    def add_client(self) -> Client:
        client = Client(Outbox(self.queue_samples))
        self.clients.add(client)
        return client

    def remove_client(self, client: Client) -> None:
        self.clients.discard(client)
        self._update_wanted()

    def subscribe(
        self, client: Client, subscription: Subscription, seed: list[LiveMachine]
    ) -> None:
        """Replace `client`'s subscription; `seed` is the database's state of its machines,
        merged in for fields the broker has not told the hub yet. Queues a snapshot of each."""
        for row in seed:
            key = (row.site, row.machine)
            live = self.machines.get(key)
            if live is None:
                row.seeded = True
                self.machines[key] = row
            elif not live.seeded:
                self._merge_seed(live, row)
        client.subscription = subscription
        client.outbox.forget(subscription)
        for row in seed:
            key = (row.site, row.machine)
            client.outbox.put_status(key, self.machines[key].public(), None)
        self._update_wanted()

    @staticmethod
    def _merge_seed(live: LiveMachine, row: LiveMachine) -> None:
        for name in ("status", "online", "status_since", "execution", "mode", "program"):
            if name not in live.observed:
                setattr(live, name, getattr(row, name))
        if "execution" not in live.observed:
            live.execution_since = row.execution_since
        if "part_count" not in live.observed:
            live.part_count = row.part_count
        if "alarms" not in live.observed:
            live.alarms = row.alarms
        if live.last_seen is None or (row.last_seen and row.last_seen > live.last_seen):
            live.last_seen = row.last_seen
        live.seeded = True

    def _update_wanted(self) -> None:
        wanting = [c.subscription for c in self.clients if c.subscription.signals]
        self._want_all = any(s.wildcard for s in wanting)
        self._wanted = frozenset(k for s in wanting for k in s.machines)
        want = bool(wanting)
        if want != self._telemetry_subscribed and self._connected:
            if want:
                self._client.subscribe(telemetry_filter(), qos=0)
            else:
                self._client.unsubscribe(telemetry_filter())
        self._telemetry_subscribed = want

    # --- the event loop side -----------------------------------------------------------------

    def _apply(self, item: _Decoded) -> None:
        with self._pending_lock:
            self._pending -= 1
        try:
            key = (item.site, item.machine)
            live = self.machines.get(key)
            if live is None:
                live = self.machines[key] = LiveMachine(item.site, item.machine)
            message = item.message
            if isinstance(message, Status):
                self._on_status(live, message, item)
            elif isinstance(message, Event):
                self._on_event(live, message, item.received)
            else:
                self._on_telemetry(live, message, item.received)
        except Exception:  # the loop's top for one message: log and carry on
            log.exception("stream: applying a message of %s:%s failed", item.site, item.machine)

    def _changed(self, live: LiveMachine, changed: set[str]) -> None:
        if not changed:
            return
        live.observed |= changed
        key = (live.site, live.machine)
        state = None
        for client in self.clients:
            if client.subscription.covers(key):
                state = state or live.public()
                client.outbox.put_status(key, state, changed)

    def _set(self, live: LiveMachine, changed: set[str], name: str, value: Any) -> None:
        if getattr(live, name) != value:
            setattr(live, name, value)
            changed.add(name)

    def _seen(self, live: LiveMachine, at: datetime, changed: set[str]) -> None:
        live.last_seen = at
        if live.online and live.status != "online":  # data after silence
            self._set(live, changed, "status", "online")
            live.status_since = at
            changed.add("status_since")

    def _on_status(self, live: LiveMachine, status: Status, item: _Decoded) -> None:
        changed: set[str] = set()
        if item.retained:
            # A retained message describes the past: the database has its times. Only learn
            # the session, so a later Will can be judged.
            if status.online and live.session is None:
                live.session = status.session
            return
        if status.online:
            live.session = status.session
            self._set(live, changed, "online", True)
            if live.status != "online":
                self._set(live, changed, "status", "online")
                live.status_since = item.received
                changed.add("status_since")
        elif live.session is None or status.session == live.session:
            self._set(live, changed, "online", False)
            if live.status != "offline":
                self._set(live, changed, "status", "offline")
                live.status_since = item.received
                changed.add("status_since")
        live.last_seen = item.received
        self._changed(live, changed)

    def _on_event(self, live: LiveMachine, event: Event, received: datetime) -> None:
        if event.historical:
            return
        changed: set[str] = set()
        self._seen(live, received, changed)
        for e in event.events:
            if isinstance(e, ConditionEvent):
                c = e.condition
                if c.level in _ALARM_LEVELS:
                    old = live.alarms.get((c.component, c.code))
                    live.alarms[(c.component, c.code)] = {
                        "component": c.component,
                        "code": c.code,
                        "level": c.level,
                        "text": c.text,
                        "opened_at": old["opened_at"] if old else e.ts,
                    }
                    if old is None or old["level"] != c.level or old["text"] != c.text:
                        changed.add("alarms")
                else:  # NORMAL (or UNAVAILABLE) clears that code, or the component with code ""
                    gone = [
                        k
                        for k in live.alarms
                        if k[0] == c.component and (c.code == "" or k[1] == c.code)
                    ]
                    for k in gone:
                        del live.alarms[k]
                    if gone:
                        changed.add("alarms")
                continue
            name = _EVENT_FIELDS.get(e.signal)
            if name is None:
                continue
            value: Any = e.value
            if name == "part_count":
                value = None if value is None else float(value)
            elif value is not None:
                value = str(value)
            if name == "execution" and value != live.execution:
                # Time in state starts at the machine's timestamp of the change (a repeated
                # snapshot value does not restart it).
                live.execution_since = e.ts
                changed.add("execution_since")
            self._set(live, changed, name, value)
        self._changed(live, changed)

    def _on_telemetry(self, live: LiveMachine, telemetry: Telemetry, received: datetime) -> None:
        if telemetry.historical:
            return
        changed: set[str] = set()
        self._seen(live, received, changed)
        self._changed(live, changed)
        key = (live.site, live.machine)
        for client in self.clients:
            sub = client.subscription
            if not sub.signals or not sub.covers(key):
                continue
            for sample in telemetry.samples:
                for name, value in sample.values.items():
                    if name in sub.signals:
                        client.outbox.put_sample(key, name, sample.ts, value)

    async def _silence_loop(self) -> None:
        """Turn online machines silent for `silence_timeout_s` into `unknown`."""
        period = min(1.0, self.silence_timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            now = datetime.now(UTC)
            for live in list(self.machines.values()):
                if (
                    live.status == "online"
                    and live.last_seen is not None
                    and (now - live.last_seen).total_seconds() > self.silence_timeout_s
                ):
                    live.status = "unknown"
                    live.status_since = now
                    self._changed(live, {"status", "status_since"})

    # --- paho's thread -----------------------------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason_code: object,
        properties: object,
    ) -> None:
        if getattr(reason_code, "is_failure", False):
            log.warning("broker %s refused the stream: %s", self.endpoint, reason_code)
            return
        client.subscribe([(status_filter(), 1), (event_filter(), 1)])
        if self._telemetry_subscribed:
            client.subscribe(telemetry_filter(), qos=0)
        self._connected = True
        self._loop.call_soon_threadsafe(self._first_connect.set)

    def _on_disconnect(self, client: mqtt.Client, *args: object) -> None:
        self._connected = False

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.counts["received"] += 1
        try:
            topic = parse_topic(msg.topic)
        except ProtocolError:
            self.counts["bad"] += 1
            return
        if topic.machine is None:
            return
        key = (topic.site, topic.machine)
        is_telemetry = msg.topic.endswith("/telemetry")
        if is_telemetry and not (self._want_all or key in self._wanted):
            return
        with self._pending_lock:
            if is_telemetry and self._pending >= self.ingress_limit:
                self.counts["ingress_dropped"] += 1
                return
            self._pending += 1
        try:
            message = decode(topic, bytes(msg.payload))
        except ProtocolError as exc:
            with self._pending_lock:
                self._pending -= 1
            self.counts["bad"] += 1
            log.debug("stream: bad message on %s: %s", msg.topic, exc)
            return
        if not isinstance(message, Status | Telemetry | Event):
            with self._pending_lock:
                self._pending -= 1
            return
        item = _Decoded(topic.site, topic.machine, message, bool(msg.retain), datetime.now(UTC))
        self._loop.call_soon_threadsafe(self._apply, item)
