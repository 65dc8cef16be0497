"""Per-machine pipeline: records -> normalise -> report-by-exception / deadband -> batch -> disk.

Stages and the boundaries between them (each bounded, each with a named overflow policy):

1. source -> pipeline: :class:`~gateway.queues.BoundedQueue` of parsed lines (``queue_size``,
   small), policy ``block`` (the adapter's TCP stream is back-pressured; nothing is dropped);
   an idle pipeline takes a line at once (:meth:`MachinePipeline.offer`), the queue holds what
   arrives while it is busy;
2. normalise + filter -> batch: the open batch holds at most ``max_batch`` samples and events,
   policy ``flush`` (a full batch is written out at once);
3. batch -> publisher: the on-disk outbox (:mod:`gateway.buffer`), policy ``drop_oldest`` or
   ``drop_newest`` when it holds ``max_messages``;
4. publisher -> broker: at most ``window`` QoS 1 messages in flight, policy ``block``.

Source timestamps are kept; a timestamp earlier than the machine's last one by more than
``time_jump_tolerance_s`` (adapter restart, concatenated captures) starts a new session instead
of producing negative durations; a smaller step back is clamped to the last timestamp (counted).
"""

from __future__ import annotations

__all__ = [
    "CanonicalItem",
    "MachinePipeline",
    "MachineState",
    "PipelineStats",
    "normalise",
]

import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson

from gateway.buffer import DiskQueue
from gateway.config import PipelineConfig
from gateway.queues import BoundedQueue, OverflowPolicy
from gateway.sources.assets import AssetStore, ToolLifeRecord
from gateway.sources.devices import DataItem, Target, TargetKind
from gateway.sources.shdr import AssetChange, Observation, Record
from protocol import (
    Condition,
    ConditionEvent,
    Dtype,
    Event,
    EventItem,
    Sample,
    SignalChannel,
    Telemetry,
    ValueEvent,
    encode,
    event_topic,
    telemetry_topic,
)

log = logging.getLogger(__name__)

Scalar = float | int | str | bool | None

TOOL_SIGNAL = "x_mtc_cutting_tool"
ASSET_REMOVED_SIGNAL = "x_mtc_asset_removed"
_LEVELS = ("NORMAL", "WARNING", "FAULT", "UNAVAILABLE")
_MAX_TEXT = 1024
_MAX_INT = 2**63  # the wire's integers are 64-bit; a longer one would fail the whole message


def new_session_id() -> str:
    """A session id that sorts by creation time: ``<ms since epoch, hex>-<random>``."""
    return f"{time.time_ns() // 1_000_000:011x}-{secrets.token_hex(4)}"


class MachineState:
    """A machine's session and seq counter, shared by its pipeline (which numbers messages) and
    its publisher (which starts a session at each birth)."""

    def __init__(self, site: str, machine: str) -> None:
        self.site = site
        self.machine = machine
        self.key = f"{site}/{machine}"
        self.session = new_session_id()
        self._seq = 0
        self.sessions = 1

    def start_session(self, session: str | None = None) -> str:
        """Begin a new session (seq from 0)."""
        self.session = session or new_session_id()
        self._seq = 0
        self.sessions += 1
        return self.session

    def next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq


@dataclass(slots=True)
class CanonicalItem:
    """One normalised value: a catalogue or vendor signal, or a condition."""

    ts: datetime
    signal: str
    channel: SignalChannel
    value: Scalar = None
    condition: Condition | None = None


@dataclass(slots=True)
class PipelineStats:
    """Counters of one machine's pipeline."""

    observations: int = 0
    invalid_values: int = 0
    filtered: int = 0
    messages: int = 0
    samples: int = 0
    events: int = 0
    sessions_from_time_jumps: int = 0
    clamped_timestamps: int = 0
    clock_corrections: int = 0
    asset_errors: int = 0
    dropped_by_buffer: int = 0


class _BadValueError(ValueError):
    pass


def _number(text: str) -> float:
    """``float(text)``; a counter's reset suffix (``0:MANUAL``, ``1234:SHIFT``: the value, then
    what reset it) is dropped, as the reference agent does. ``ValueError`` if not a number."""
    try:
        return float(text)
    except ValueError:
        head, colon, _trigger = text.partition(":")
        if not colon:
            raise
        return float(head)


def _unavailable(text: str) -> bool:
    """``UNAVAILABLE`` in any case, also written ``@UNAVAILABLE@``."""
    return text.strip().strip("@").upper() == "UNAVAILABLE"


def _convert(target: Target, raw: str, converted: bool = False) -> Scalar:
    text = raw.strip()
    if _unavailable(text):
        return None
    dtype = target.dtype
    if dtype is Dtype.FLOAT:
        if text == "":
            return None
        try:
            number = _number(text)
        except ValueError:
            if target.signal.startswith("x_"):
                return text[:_MAX_TEXT]  # vendor values may be any scalar
            raise _BadValueError(f"not a number: {text[:40]!r}") from None
        if not math.isfinite(number):
            raise _BadValueError(f"not a finite number: {text!r}")
        if converted:  # the adapter sends ``units``, not ``nativeUnits``
            return number * target.units_scale + target.units_offset
        if target.scale != 1.0 or target.offset:
            return number * target.scale + target.offset
        return number
    if dtype is Dtype.INT:
        if text == "":
            return None
        try:
            number = _number(text)
        except ValueError:
            raise _BadValueError(f"not an integer: {text[:40]!r}") from None
        if not math.isfinite(number) or abs(number) >= _MAX_INT:
            raise _BadValueError(f"not a 64-bit integer: {text[:40]!r}")
        return round(number)
    if dtype is Dtype.ENUM:
        word = text.upper()
        assert target.values is not None
        if word not in target.values:
            raise _BadValueError(f"{text[:40]!r} is not one of {', '.join(target.values)}")
        return word
    if dtype is Dtype.BOOL:
        return text.lower() in ("true", "1", "on", "yes")
    return text[:_MAX_TEXT]  # blanks around a value are not part of it (the agent trims them)


def normalise(obs: Observation) -> list[CanonicalItem]:
    """Turn one observation into canonical items; ``ValueError`` (with the reason) if invalid."""
    item: DataItem = obs.item
    target = item.target
    kind = target.kind
    f = obs.fields
    if kind is TargetKind.TELEMETRY or kind is TargetKind.EVENT:
        if item.representation == "TIME_SERIES":
            return _time_series(obs)
        if len(f) > 1:  # an ALARM (MTConnect 1.1): code|native_code|severity|state|text
            words = [x.strip() for x in f if x.strip()]
            text = None if not words or _unavailable(words[0]) else " ".join(words)
            return [CanonicalItem(obs.ts, target.signal, target.channel, text)]
        value = _convert(target, f[0], obs.converted)
        return [CanonicalItem(obs.ts, target.signal, target.channel, value)]
    if kind is TargetKind.CONDITION:
        level = "UNAVAILABLE" if _unavailable(f[0]) else f[0].strip().upper()
        if level not in _LEVELS:
            raise _BadValueError(
                f"condition level {f[0][:20]!r} is not one of {', '.join(_LEVELS)}"
            )
        condition = Condition(
            component=target.component or "device",
            level=level,  # type: ignore[arg-type]  # checked just above
            code=f[1].strip()[:64],
            native_severity=f[2].strip()[:64] or None,
            qualifier=f[3].strip()[:64] or None,
            text=f[4].strip()[:_MAX_TEXT],
        )
        return [CanonicalItem(obs.ts, "condition", SignalChannel.EVENT, condition=condition)]
    if kind is TargetKind.MESSAGE:
        code, text = f[0].strip(), f[1].strip()
        value = text or code
        if _unavailable(value):
            return [CanonicalItem(obs.ts, "message", SignalChannel.EVENT, None)]
        return [CanonicalItem(obs.ts, "message", SignalChannel.EVENT, value[:_MAX_TEXT])]
    # PATH_POSITION: "x y z"
    if _unavailable(f[0]):
        return []
    parts = f[0].split()
    if len(parts) != 3:
        raise _BadValueError(f"path position needs three numbers, got {f[0][:60]!r}")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise _BadValueError(f"path position not numeric: {f[0][:60]!r}") from None
    base = target.signal[:50]
    return [
        CanonicalItem(obs.ts, f"{base}_{axis}", SignalChannel.TELEMETRY, n)
        for axis, n in zip("xyz", numbers, strict=True)
        if math.isfinite(n)
    ]


def _time_series(obs: Observation) -> list[CanonicalItem]:
    target = obs.item.target
    _count, rate_text, values_text = obs.fields
    values = values_text.split()
    try:
        rate = float(rate_text) if rate_text.strip() else (obs.item.sample_rate or 0.0)
    except ValueError:
        raise _BadValueError(f"time series rate {rate_text!r} is not a number") from None
    if not values:
        return []
    if rate <= 0:  # no rate: only the last value can be placed in time
        value = _convert(target, values[-1], obs.converted)
        return [CanonicalItem(obs.ts, target.signal, target.channel, value)]
    step = timedelta(seconds=1 / rate)
    return [
        CanonicalItem(
            obs.ts + i * step, target.signal, target.channel, _convert(target, v, obs.converted)
        )
        for i, v in enumerate(values)
    ]


@dataclass(slots=True)
class _Last:
    value: Scalar
    ts: datetime
    reported_at: float
    channel: SignalChannel


@dataclass(slots=True)
class _Batch:
    samples: list[tuple[datetime, dict[str, Scalar]]] = field(default_factory=list)
    events: list[EventItem] = field(default_factory=list)
    opened: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.samples or self.events)


class MachinePipeline:
    """The pipeline of one machine. Feed it records with :meth:`process` (or run :meth:`run` on
    its queue); it writes finished messages to the disk queue and wakes the publisher."""

    def __init__(
        self,
        state: MachineState,
        store: DiskQueue,
        config: PipelineConfig,
        *,
        deadband: dict[str, float] | None = None,
        wake: Callable[[], None] = lambda: None,
        on_time_jump: Callable[[], None] = lambda: None,
        timestamps: str = "auto",
    ) -> None:
        """``wake`` tells the publisher new rows are stored; ``on_time_jump`` is called after a
        backward time jump started a new session (the publisher announces it with a birth);
        ``timestamps`` is the source's setting (auto, source or arrival)."""
        self.state = state
        self.store = store
        self.config = config
        self.deadband = deadband or {}
        self.wake = wake
        self.on_time_jump = on_time_jump
        self.queue: BoundedQueue[list[Record]] = BoundedQueue(
            f"{state.key} source->pipeline", config.queue_size, OverflowPolicy.BLOCK
        )
        self.stats = PipelineStats()
        #: True while :meth:`run` waits on an empty queue (see :meth:`offer`).
        self.idle = False
        self.assets = AssetStore()
        self._last: dict[str, _Last] = {}
        self._conditions: dict[tuple[str, str], ConditionEvent] = {}
        self._batch = _Batch()
        self._last_ts: datetime | None = None
        self.timestamps = timestamps
        self._clock_offset = timedelta(0)
        self._bad_logged: set[tuple[str, str]] = set()
        self._telemetry_topic = telemetry_topic(state.site, state.machine)
        self._event_topic = event_topic(state.site, state.machine)

    # -- feeding -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume the queue forever, flushing batches when they are due."""
        interval = self.config.batch_interval_s
        while True:
            # With no batch open, still wake every interval: :meth:`offer` may open one while
            # this task waits, and it must reach the disk within the interval.
            timeout = interval
            if self._batch:
                timeout = max(0.0, self._batch.opened + interval - time.monotonic())
            self.idle = True
            try:
                got = await self.queue.wait_not_empty(timeout)
            finally:
                self.idle = False
            if got:
                # Drain what is queued, but never keep a batch open past its interval: under
                # load the queue refills as fast as it empties, and what is neither on disk nor
                # in the kernel's socket buffer dies with the process (SIGKILL).
                while len(self.queue):
                    self.process(self.queue.get_nowait())
                    if self._batch and time.monotonic() - self._batch.opened >= interval:
                        break
            if self._batch and time.monotonic() - self._batch.opened >= interval:
                self.flush()

    def offer(self, records: list[Record]) -> bool:
        """Process one line's records at once if this pipeline is idle, waiting on an empty
        queue (True); else False, and the caller queues them (in order, behind the others).

        The adapter's reader calls this: handing each line through the queue woke this task
        once per line and machine, and those wake-ups cost the gateway more than its parsing.
        """
        if not self.idle or len(self.queue):
            return False
        self.process(records)
        return True

    def process(self, records: list[Record]) -> None:
        """Normalise, filter and batch the records of one line."""
        for record in records:
            if isinstance(record, Observation):
                self._observation(record)
            elif isinstance(record, AssetChange):
                self._asset(record)
        batch = self._batch
        if (
            len(batch.samples) >= self.config.max_batch
            or len(batch.events) >= self.config.max_batch
            or (batch and time.monotonic() - batch.opened >= self.config.batch_interval_s)
        ):
            self.flush()

    def _source_time(self, ts: datetime, arrival: datetime) -> datetime:
        """The time an observation is published with (see `SourceConfig.timestamps`).

        In "auto", a source clock within the window around the gateway's is trusted to the
        millisecond; outside it, the source's times are shifted by one offset (arrival - source
        at the first line outside), which keeps their spacing. The offset is measured again
        when shifted times leave the window (a capture played fast), and dropped once the
        source's own times are well inside it again (half the window: a clock set right)."""
        if self.timestamps == "arrival":
            return self._check_time(arrival)
        if self.timestamps == "auto":
            ahead = timedelta(seconds=self.config.clock_max_ahead_s)
            behind = timedelta(seconds=self.config.clock_max_behind_s)
            offset = self._clock_offset
            if offset and arrival - behind / 2 <= ts <= arrival + ahead / 2:
                offset = timedelta(0)
            elif not arrival - behind <= ts + offset <= arrival + ahead:
                offset = timedelta(0) if arrival - behind <= ts <= arrival + ahead else arrival - ts
            if offset != self._clock_offset:
                self.stats.clock_corrections += 1
                log.warning(
                    "machine %s: source clock is %.0f s %s the gateway's; its times are "
                    'shifted by %+.3f s from here on (timestamps = "source" keeps them as sent)',
                    self.state.key,
                    abs((ts - arrival).total_seconds()),
                    "ahead of" if ts > arrival else "behind",
                    offset.total_seconds(),
                )
                self._clock_offset = offset
            ts += offset
        # Jumps are judged on the published times: a new offset that steps back starts a
        # session like any backward jump.
        return self._check_time(ts)

    def _check_time(self, ts: datetime) -> datetime:
        last = self._last_ts
        if last is not None and ts < last:
            back = (last - ts).total_seconds()
            if back > self.config.time_jump_tolerance_s:
                log.warning(
                    "machine %s: source time jumped back %.3f s (%s -> %s): new session",
                    self.state.key,
                    back,
                    last.isoformat(),
                    ts.isoformat(),
                )
                self.flush()
                self._last.clear()
                self._conditions.clear()
                self.stats.sessions_from_time_jumps += 1
                self.state.start_session()
                self.on_time_jump()
            else:
                self.stats.clamped_timestamps += 1
                ts = last
        self._last_ts = ts
        return ts

    def _observation(self, obs: Observation) -> None:
        self.stats.observations += 1
        try:
            items = normalise(obs)
        except ValueError as exc:
            self.stats.invalid_values += 1
            key = (obs.item.id, str(exc)[:60])
            if key not in self._bad_logged and len(self._bad_logged) < 10_000:
                self._bad_logged.add(key)
                log.warning(
                    "machine %s key %s: invalid value skipped: %s (logged once)",
                    self.state.key,
                    obs.item.id,
                    exc,
                )
            return
        for item in items:
            if (
                not obs.stamped_on_arrival
            ):  # arrival stamps are the gateway's clock, not the source's
                item.ts = self._source_time(item.ts, obs.arrival)
            try:
                self._add(item)
            except ValueError as exc:  # the event model refused it (pydantic ValidationError)
                self.stats.invalid_values += 1
                log.warning(
                    "machine %s key %s: value skipped: %s", self.state.key, obs.item.id, exc
                )

    def _asset(self, change: AssetChange) -> None:
        # An asset's timestamp is when the asset last changed, not a reading of the stream's
        # clock: adapters send their whole tool table at connect, stamped hours back (Okuma).
        # So it neither starts a session nor moves the clock; an older one is placed at the
        # stream's current time. (`_clock_offset` is zero unless the source's times are shifted.)
        ts = change.arrival if self.timestamps == "arrival" else change.ts + self._clock_offset
        if self._last_ts is not None and ts < self._last_ts:
            ts = self._last_ts
        try:
            record: ToolLifeRecord | None = None
            if change.action == "add":
                record = self.assets.add(change.asset_id, change.asset_type or "", change.body)
            elif change.action == "update":
                record = self.assets.update(change.asset_id, change.updates)
            elif change.action == "remove":
                self.assets.remove(change.asset_id)
                self._event(ValueEvent(ts=ts, signal=ASSET_REMOVED_SIGNAL, value=change.asset_id))
            elif change.action == "remove_all":
                for gone in self.assets.remove_all(change.asset_type or ""):
                    self._event(ValueEvent(ts=ts, signal=ASSET_REMOVED_SIGNAL, value=gone))
        except ValueError as exc:
            self.stats.asset_errors += 1
            log.warning("machine %s asset %s: %s", self.state.key, change.asset_id, exc)
            return
        if record is not None:
            self._event(ValueEvent(ts=ts, signal=TOOL_SIGNAL, value=_tool_json(record)))

    # -- report by exception -------------------------------------------------------------------

    def _add(self, item: CanonicalItem) -> None:
        if item.condition is not None:
            cond = ConditionEvent(ts=item.ts, signal="condition", condition=item.condition)
            key = (item.condition.component, item.condition.code)
            if item.condition.level == "UNAVAILABLE" or (
                item.condition.level == "NORMAL" and not item.condition.code
            ):  # all clear, or nothing known any more: no condition of the component is active
                for k in [k for k in self._conditions if k[0] == item.condition.component]:
                    del self._conditions[k]
                if item.condition.level == "UNAVAILABLE":
                    self._conditions[key] = cond
            elif item.condition.level == "NORMAL":
                self._conditions.pop(key, None)
            else:
                self._conditions[key] = cond
            self._event(cond)
            return
        now = time.monotonic()
        last = self._last.get(item.signal)
        if self.config.report_by_exception and last is not None and self._same(item, last, now):
            self.stats.filtered += 1
            return
        self._last[item.signal] = _Last(item.value, item.ts, now, item.channel)
        if item.channel is SignalChannel.TELEMETRY:
            self._sample(item)
        else:
            self._event(ValueEvent(ts=item.ts, signal=item.signal, value=item.value))

    def _same(self, item: CanonicalItem, last: _Last, now: float) -> bool:
        if item.channel is SignalChannel.TELEMETRY and now - last.reported_at >= (
            self.config.max_interval_s
        ):
            return False
        a, b = item.value, last.value
        if a == b and type(a) is type(b):
            return True
        band = self.deadband.get(item.signal, 0.0)
        if band > 0 and isinstance(a, float | int) and isinstance(b, float | int):
            return abs(a - b) < band
        return False

    # -- batching ------------------------------------------------------------------------------

    def _open(self) -> None:
        if not self._batch:
            self._batch.opened = time.monotonic()

    def _sample(self, item: CanonicalItem) -> None:
        self._open()
        samples = self._batch.samples
        if (
            samples
            and samples[-1][0] == item.ts
            and item.signal not in samples[-1][1]
            and len(samples[-1][1]) < 256
        ):
            samples[-1][1][item.signal] = item.value
            return
        samples.append((item.ts, {item.signal: item.value}))

    def _event(self, event: EventItem) -> None:
        self._open()
        self._batch.events.append(event)

    def flush(self) -> None:
        """Write the open batch as telemetry and/or event messages to the disk queue."""
        batch, self._batch = self._batch, _Batch()
        if batch.samples:
            for start in range(0, len(batch.samples), 1000):
                chunk = batch.samples[start : start + 1000]
                self._store_telemetry(chunk)
        if batch.events:
            for start in range(0, len(batch.events), 1000):
                self._store_event(batch.events[start : start + 1000])
        if batch:
            self.wake()

    def _store_telemetry(self, chunk: list[tuple[datetime, dict[str, Scalar]]]) -> None:
        state = self.state
        samples = []
        for ts, values in chunk:
            try:
                samples.append(Sample(ts=ts, values=values))
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                self.stats.invalid_values += 1
                log.warning("machine %s: sample dropped: %s", state.key, exc)
        if not samples:
            return
        msg = Telemetry(session=state.session, seq=state.next_seq(), samples=samples)
        self._store(self._telemetry_topic, msg.seq, encode(msg))
        self.stats.samples += len(samples)

    def _store_event(self, events: list[EventItem]) -> None:
        state = self.state
        msg = Event(session=state.session, seq=state.next_seq(), events=events)
        self._store(self._event_topic, msg.seq, encode(msg))
        self.stats.events += len(events)

    def _store(self, topic: str, seq: int, payload: bytes) -> None:
        before = self.store.dropped
        self.store.append(self.state.key, self.state.session, seq, topic, payload)
        self.stats.dropped_by_buffer += self.store.dropped - before
        self.stats.messages += 1

    def store_snapshot(self) -> None:
        """Store the current value of every event signal and each active condition as one
        event message of the current session (sent after a birth or a rebirth request)."""
        self.flush()
        events: list[EventItem] = [
            ValueEvent(ts=last.ts, signal=name, value=last.value)
            for name, last in self._last.items()
            if last.channel is SignalChannel.EVENT
        ]
        events.extend(self._conditions.values())
        if events:
            events.sort(key=lambda e: e.ts)
            for start in range(0, len(events), 1000):
                self._store_event(events[start : start + 1000])
            self.wake()


def _tool_json(record: ToolLifeRecord) -> str:
    data = record.as_dict()
    text = orjson.dumps(data).decode()
    while len(text) > _MAX_TEXT and data["life"]:
        data["life"].pop()
        text = orjson.dumps(data).decode()
    return text[:_MAX_TEXT]
