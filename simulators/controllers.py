"""The i5 controllers' side of the MQTT contract, independent of the transport.

:class:`I5Controllers` turns the fleet's ticks into v1 messages: a retained birth ``status`` and a
snapshot ``event`` when a machine powers on (new ``session``, ``seq`` from 0), ``event`` messages by
exception (only changed signals, conditions raised or cleared), ``telemetry`` batches of
``batch_s`` seconds of samples, and a retained ``status`` with ``online: false`` when it powers off.
Telemetry and event messages share one ``seq`` counter per session.

Messages go to a :class:`Sink`; the MQTT publisher is one, :class:`MemorySink` (tests) and
:class:`NullSink` (model-only runs, benchmarks) are others. Status and event payloads are built
with the protocol's models and codec; telemetry, the hot path (one message per machine per batch),
is written straight to orjson in exactly the shape ``protocol.encode(Telemetry(...))`` produces
(a test holds the two byte-for-byte equal).
"""

from __future__ import annotations

__all__ = ["I5Controllers", "MemorySink", "NullSink", "Published", "Sink", "Will"]

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal, Protocol

import numpy as np
import orjson

from protocol import (
    Condition,
    ConditionEvent,
    Controller,
    Event,
    Status,
    ValueEvent,
    encode,
    event_topic,
    status_topic,
    telemetry_topic,
)
from simulators.model import (
    EXECUTION_VALUES,
    FUNCTIONAL_MODE_VALUES,
    MODE_VALUES,
    SIGNALS,
    Fleet,
    StepReport,
)
from simulators.programs import AlarmSpec
from simulators.truth import MachineTraffic, SessionLog, Truth, iso_ms


@dataclass(frozen=True, slots=True)
class Will:
    """A Last Will to register when a machine's connection opens."""

    topic: str
    payload: bytes


class Sink(Protocol):
    """Where the controllers' messages go (one logical connection per machine)."""

    def open(self, machine: int, will: Will) -> None:
        """The machine powers on: open its connection (with ``will``) before its birth."""

    def publish(
        self,
        machine: int,
        topic: str,
        payload: bytes,
        retain: bool,
        done: Callable[[bool], None] | None = None,
    ) -> None:
        """Hand one QoS 1 message to the transport; ``done(delivered)`` is called once when the
        broker acknowledged it (``True``) or it was dropped or refused (``False``)."""

    def close(self, machine: int) -> None:
        """The machine powered off: close its connection cleanly after its last message."""


@dataclass(frozen=True, slots=True)
class Published:
    """One message recorded by :class:`MemorySink`."""

    machine: int
    topic: str
    payload: bytes
    retain: bool


class MemorySink:
    """Keeps every message in ``messages`` (for tests); ``opened`` / ``closed`` record wills."""

    def __init__(self) -> None:
        self.messages: list[Published] = []
        self.opened: list[tuple[int, Will]] = []
        self.closed: list[int] = []

    def open(self, machine: int, will: Will) -> None:
        self.opened.append((machine, will))

    def publish(
        self,
        machine: int,
        topic: str,
        payload: bytes,
        retain: bool,
        done: Callable[[bool], None] | None = None,
    ) -> None:
        self.messages.append(Published(machine, topic, payload, retain))
        if done is not None:
            done(True)

    def close(self, machine: int) -> None:
        self.closed.append(machine)


class NullSink:
    """Drops every message (counts bytes): model-only runs and benchmarks."""

    def __init__(self) -> None:
        self.bytes = 0
        self.count = 0

    def open(self, machine: int, will: Will) -> None:
        return None

    def publish(
        self,
        machine: int,
        topic: str,
        payload: bytes,
        retain: bool,
        done: Callable[[bool], None] | None = None,
    ) -> None:
        self.bytes += len(payload)
        self.count += 1
        if done is not None:
            done(True)

    def close(self, machine: int) -> None:
        return None


_LEVELS: dict[str, Literal["WARNING", "FAULT"]] = {"WARNING": "WARNING", "FAULT": "FAULT"}


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(round(t * 1000.0) / 1000.0, UTC)


class I5Controllers:
    """Sessions, sequence numbers and message building for every machine of a fleet.

    ``run_id`` makes session ids unique across runs (``<run_id>-<machine index>-<birth #>``), so
    two runs with the same seed never collide in the platform's (machine, session, seq) dedup.
    ``batch_s``: seconds of samples per telemetry message. ``decimals``: rounding of sample
    values (keeps payloads small; the model's resolution is far coarser anyway).
    """

    def __init__(
        self,
        fleet: Fleet,
        sink: Sink,
        *,
        truth: Truth | None = None,
        run_id: str | None = None,
        batch_s: float = 1.0,
        decimals: int = 3,
    ) -> None:
        self.fleet = fleet
        self.sink = sink
        self.truth = truth
        self.run_id = run_id or secrets.token_hex(4)
        n = fleet.n
        site = fleet.factory.site
        ids = [m.machine_id for m in fleet.factory.machines]
        self.topics_status = [status_topic(site, mid) for mid in ids]
        self.topics_event = [event_topic(site, mid) for mid in ids]
        self.topics_telemetry = [telemetry_topic(site, mid) for mid in ids]
        self.controllers = [
            Controller(vendor="i5", model=k.model, kind=k.controller_kind)  # type: ignore[arg-type]
            for k in fleet.kinds
        ]
        # Telemetry columns per kind: the catalogue names of the axes that kind has. Samples are
        # converted to Python floats one kind group at a time (one tolist per group and batch).
        self._groups: list[tuple[np.ndarray, list[int], tuple[str, ...]]] = []
        self._group_of = np.zeros(n, dtype=np.int64)
        self._pos_in_group = np.zeros(n, dtype=np.int64)
        for kn in sorted({k.name for k in fleet.kinds}):
            axes = next(k.axes for k in fleet.kinds if k.name == kn)
            members = np.array([i for i, k in enumerate(fleet.kinds) if k.name == kn])
            cols = [
                i for i, s in enumerate(SIGNALS) if not s.startswith("position_") or s[-1] in axes
            ]
            self._group_of[members] = len(self._groups)
            self._pos_in_group[members] = np.arange(members.size)
            self._groups.append((members, cols, tuple(SIGNALS[i] for i in cols)))
        self.batch = max(1, round(batch_s / fleet.dt))
        self.decimals = decimals
        self._buf = np.zeros((self.batch, n, len(SIGNALS)))
        self._ts: list[str] = [""] * self.batch
        self._fill = np.zeros(n, dtype=np.int64)  # samples buffered per machine, from row 0
        self._first = np.zeros(n, dtype=np.int64)  # first buffered row per machine
        self._j = 0
        self.online = np.zeros(n, dtype=np.bool_)
        self.session: list[str] = [""] * n
        self.seq = np.zeros(n, dtype=np.int64)
        self.births = np.zeros(n, dtype=np.int64)
        self._prev: dict[str, np.ndarray] = {}
        self._active: list[dict[str, AlarmSpec]] = [{} for _ in range(n)]
        self._t_last = fleet.time  # time of the last tick: the state the snapshot holds
        attach = getattr(sink, "attach", None)
        if callable(attach):  # a transport that reconnects asks us for the next birth
            attach(self)

    # --- message helpers ------------------------------------------------------------------
    def _send(self, m: int, topic: str, payload: bytes, channel: str, samples: int = 0) -> None:
        seq = int(self.seq[m])
        self.seq[m] += 1
        done = None
        if self.truth is not None:
            tr = self.truth.traffic[m]
            done = partial(_delivered, tr, tr.sessions[-1], channel, samples, seq)
        self.sink.publish(m, topic, payload, False, done)

    def _publish_status(self, m: int, payload: bytes) -> None:
        done = None
        if self.truth is not None:
            done = partial(_status_delivered, self.truth.traffic[m])
        self.sink.publish(m, self.topics_status[m], payload, True, done)

    def _status(
        self, m: int, online: bool, t: float, reason: str | None, session: str | None = None
    ) -> bytes:
        return encode(
            Status(
                online=online,
                ts=_dt(t),
                session=session or self.session[m],
                controller=self.controllers[m],
                reason=reason,
            )
        )

    def _values(self, m: int) -> dict[str, Any]:
        f = self.fleet
        return {
            "execution": EXECUTION_VALUES[f.execution[m]],
            "controller_mode": MODE_VALUES[f.mode[m]],
            "functional_mode": FUNCTIONAL_MODE_VALUES[f.functional[m]],
            "program": f.program_names[f.prog[m]],
            "tool_number": int(f.tool[m]),
            "part_count": int(f.part_count[m]),
            "part_count_bad": int(f.part_bad[m]),
            "emergency_stop": "TRIGGERED" if f.estop[m] else "ARMED",
        }

    def _snapshot_arrays(self) -> dict[str, np.ndarray]:
        f = self.fleet
        return {
            "execution": f.execution,
            "controller_mode": f.mode,
            "functional_mode": f.functional,
            "program": f.prog,
            "tool_number": f.tool,
            "part_count": f.part_count,
            "part_count_bad": f.part_bad,
            "emergency_stop": f.estop,
        }

    # --- per tick -----------------------------------------------------------------------------
    def on_step(self, rep: StepReport) -> None:
        """Publish what tick ``rep`` changed and buffer its samples (call after ``fleet.step``)."""
        f = self.fleet
        t = rep.t
        self._t_last = t
        ts = _dt(t)
        cur = self._snapshot_arrays()
        conds: dict[int, list[ConditionEvent]] = {}
        for a in rep.alarms:
            key = f"{a.spec.component}/{a.spec.code}"
            if a.active:
                self._active[a.machine][key] = a.spec
            else:
                self._active[a.machine].pop(key, None)
            conds.setdefault(a.machine, []).append(self._condition(a.spec, a.active, ts))
        # Deaths first: flush the buffered samples, then the offline status.
        for m in rep.powered_off.tolist():
            self._flush_one(m)
            self._publish_status(m, self._status(m, False, t, "power_off"))
            self.sink.close(m)
            self.online[m] = False
            if self.truth is not None:
                self.truth.traffic[m].sessions[-1].end = t
            conds.pop(m, None)
        born = set(rep.powered_on.tolist())
        for m in sorted(born):
            self._birth(m, t, ts)
        # Changes of online machines that were not just born (births carry a full snapshot).
        if self._prev:
            changed = np.zeros(f.n, dtype=np.bool_)
            for name, arr in cur.items():
                changed |= arr != self._prev[name]
            cand = set(np.flatnonzero(changed & self.online).tolist()) | set(conds)
            for m in sorted(cand - born):
                if not self.online[m]:
                    continue
                vals = self._values(m)
                items: list[ValueEvent | ConditionEvent] = [
                    ValueEvent(ts=ts, signal=name, value=vals[name])
                    for name, arr in cur.items()
                    if arr[m] != self._prev[name][m]
                ]
                items += conds.get(m, [])
                if items:
                    self._event(m, items)
        self._prev = {k: v.copy() for k, v in cur.items()}
        # Samples of this tick.
        j = self._j
        f.sample(self._buf[j])
        self._ts[j] = iso_ms(t)
        on = self.online
        starting = on & (self._fill == 0)
        self._first[starting] = j
        self._fill[on] += 1
        self._j += 1
        if self._j == self.batch:
            self.flush()

    def _condition(self, spec: AlarmSpec, active: bool, ts: datetime) -> ConditionEvent:
        return ConditionEvent(
            ts=ts,
            signal="condition",
            condition=Condition(
                component=spec.component,
                level=_LEVELS[spec.level] if active else "NORMAL",
                code=spec.code,
                text=spec.text if active else "",
            ),
        )

    def _event(self, m: int, items: list[ValueEvent | ConditionEvent]) -> None:
        payload = encode(Event(session=self.session[m], seq=int(self.seq[m]), events=items))
        self._send(m, self.topics_event[m], payload, "event")

    def _session_id(self, m: int, birth: int) -> str:
        return f"{self.run_id}-{m}-{birth}"

    def next_will(self, m: int) -> Will:
        """The Last Will of the session machine ``m``'s next birth starts (for a transport that
        reconnects: the Will is fixed at connect time, the birth follows the CONNACK)."""
        session = self._session_id(m, int(self.births[m]) + 1)
        payload = self._status(m, False, self._t_last, "connection_lost", session)
        return Will(self.topics_status[m], payload)

    def reborn(self, m: int) -> None:
        """Machine ``m``'s connection came back after it died: a new birth (new session, seq
        from 0, birth status and full snapshot stamped with the last tick, whose state they
        hold). Messages of the old session still buffered keep their session and seq."""
        if not self.online[m]:
            return
        t = self._t_last
        if self.truth is not None:
            self.truth.traffic[m].sessions[-1].end = t
        self._announce(m, t, _dt(t), will=False)

    def _birth(self, m: int, t: float, ts: datetime) -> None:
        self._fill[m] = 0
        self._announce(m, t, ts, will=True)

    def _announce(self, m: int, t: float, ts: datetime, will: bool) -> None:
        self.births[m] += 1
        self.session[m] = self._session_id(m, int(self.births[m]))
        self.seq[m] = 0
        if self.truth is not None:
            self.truth.traffic[m].sessions.append(SessionLog(self.session[m], t))
        if will:
            payload = self._status(m, False, t, "connection_lost")
            self.sink.open(m, Will(self.topics_status[m], payload))
        self._publish_status(m, self._status(m, True, t, None))
        self.online[m] = True
        self._snapshot(m, ts)

    def republish(self, m: int) -> bool:
        """``cmd/rebirth``: the birth status and a full snapshot again, in the same session
        (stamped with the last tick); False when the machine is off."""
        if not self.online[m]:
            return False
        t = self._t_last
        self._publish_status(m, self._status(m, True, t, None))
        self._snapshot(m, _dt(t))
        return True

    def _snapshot(self, m: int, ts: datetime) -> None:
        vals = self._values(m)
        items: list[ValueEvent | ConditionEvent] = [
            ValueEvent(ts=ts, signal=k, value=v) for k, v in vals.items()
        ]
        items.append(ValueEvent(ts=ts, signal="availability", value="AVAILABLE"))
        active = list(self._active[m].values())
        items += [self._condition(s, True, ts) for s in active]
        if not active:
            # No alarm: clear whatever the platform may still hold from the last session.
            items.append(
                ConditionEvent(
                    ts=ts,
                    signal="condition",
                    condition=Condition(component="controller", level="NORMAL", code=""),
                )
            )
        self._event(m, items)

    def _rows(self, m: int, a: int, n: int) -> list[list[float]]:
        cols = self._groups[self._group_of[m]][1]
        block = np.round(self._buf[a : a + n, m, cols], self.decimals)
        return block.tolist()  # type: ignore[no-any-return]

    def _encode_telemetry(self, m: int, rows: list[list[float]], tss: list[str]) -> None:
        names = self._groups[self._group_of[m]][2]
        samples = [
            {"ts": ts, "values": dict(zip(names, row, strict=True))}
            for ts, row in zip(tss, rows, strict=True)
        ]
        payload = orjson.dumps(
            {
                "v": 1,
                "session": self.session[m],
                "seq": int(self.seq[m]),
                "historical": False,
                "samples": samples,
            }
        )
        self._fill[m] = 0
        self._send(m, self.topics_telemetry[m], payload, "telemetry", len(rows))

    def _flush_one(self, m: int) -> None:
        n = int(self._fill[m])
        if n:
            a = int(self._first[m])
            self._encode_telemetry(m, self._rows(m, a, n), self._ts[a : a + n])

    def flush(self) -> None:
        """Publish the buffered samples of every machine (end of a batch, or at shutdown)."""
        j = self._j
        self._j = 0
        if j == 0 or not self._fill.any():
            return
        buf = self._buf[:j]
        for members, cols, _ in self._groups:
            fill = self._fill[members]
            if not fill.any():
                continue
            # One conversion per kind group: (machines, rows, columns) as nested Python lists.
            block = np.round(buf[:, members][:, :, cols], self.decimals).transpose(1, 0, 2)
            lists = block.tolist()
            for gi in np.flatnonzero(fill).tolist():
                m = int(members[gi])
                a = int(self._first[m])
                n = int(fill[gi])
                self._encode_telemetry(m, lists[gi][a : a + n], self._ts[a : a + n])
        self._fill[:] = 0

    def shutdown(self, t: float) -> None:
        """End of run: flush samples, publish ``online: false`` (reason ``shutdown``) for every
        online machine and close its connection."""
        self.flush()
        for m in np.flatnonzero(self.online).tolist():
            self._publish_status(m, self._status(m, False, t, "shutdown"))
            self.sink.close(m)
            self.online[m] = False
            if self.truth is not None:
                self.truth.traffic[m].sessions[-1].end = t


def _delivered(
    tr: MachineTraffic, s: SessionLog, channel: str, samples: int, seq: int, ok: bool
) -> None:
    """The truth counts a telemetry or event message once the broker acknowledged it."""
    if not ok:
        s.dropped += 1
        return
    tr.messages[channel] += 1
    tr.samples += samples
    s.messages += 1
    s.last_seq = max(s.last_seq, seq)


def _status_delivered(tr: MachineTraffic, ok: bool) -> None:
    if ok:
        tr.messages["status"] += 1
