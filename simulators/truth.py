"""Ground truth: what really happened on every machine, accumulated from the model's own state.

The truth is fed the same arrays and step reports that the publishers turn into messages, tick by
tick, so it cannot disagree with what was sent. Definitions (per machine, window ``[start, end)``):

- ``execution_seconds`` / ``controller_mode_seconds`` / ``functional_mode_seconds`` /
  ``activity_seconds``: seconds during which the machine held each value; every tick counts ``dt``
  for exactly one value, so each map sums to the window length exactly. A machine that is off
  counts as ``UNAVAILABLE`` (it is offline on the wire).
- ``cycles``: every cycle that started in the window, in start order, with ``status``
  ``completed`` (ended with its part(s) counted), ``interrupted`` (a fault, tool breakage or
  emergency stop ended it; no part) or ``open`` (still running at ``end``; ``end`` is the window
  end). ``duration_s`` = end - start, feed holds and stops included.
- ``parts``: ``good`` + ``scrap`` = parts of completed cycles = ``part_count_end -
  part_count_start``; ``scrap`` = ``part_count_bad_end - part_count_bad_start``.
- ``alarms``: every condition raised in the window (FAULT and WARNING), ``end`` null if still
  active at the window end.
- ``tool_changes``: tool, time, reason (``life_limit`` | ``breakage``), the removed tool's true
  flank wear ``vb_mm`` and its minutes in cut.
- ``messages`` / ``samples``: messages the transport delivered (with MQTT: acknowledged by the
  broker, PUBACK) per channel, samples in those telemetry messages; ``sessions``: each session's
  id, birth and death times, highest delivered seq, delivered message count, and messages
  ``dropped`` (a full buffer during an outage, or refused by the broker): those seqs are gaps.

Times are ISO-8601 UTC with milliseconds.
"""

from __future__ import annotations

__all__ = ["MachineTraffic", "SessionLog", "Truth", "iso_ms"]

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from simulators.model import (
    EXECUTION_VALUES,
    FUNCTIONAL_MODE_VALUES,
    MODE_VALUES,
    PHASES,
    Fleet,
    StepReport,
    vb_of_life,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_ms(t: float) -> str:
    """Epoch seconds as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (rounded to the millisecond)."""
    d = _EPOCH + timedelta(milliseconds=round(t * 1000.0))
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


@dataclass
class SessionLog:
    """One controller session as seen by the transport layer."""

    session: str
    start: float
    end: float | None = None
    last_seq: int = -1
    messages: int = 0
    dropped: int = 0


@dataclass
class MachineTraffic:
    """Messages and samples of one machine its transport delivered."""

    messages: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    samples: int = 0
    sessions: list[SessionLog] = field(default_factory=list)


class Truth:
    """Accumulates the ground truth of a :class:`~simulators.model.Fleet` run.

    Call :meth:`observe` after every :meth:`Fleet.step`, the ``traffic`` entries from the
    transport layer, and :meth:`summary` / :meth:`write` at the end (or at any time).
    """

    def __init__(self, fleet: Fleet) -> None:
        n = fleet.n
        self.fleet = fleet
        self.start = fleet.time
        self.ticks = 0
        self._rows = np.arange(n)
        self.exec_ticks = np.zeros((n, len(EXECUTION_VALUES)), dtype=np.int64)
        self.mode_ticks = np.zeros((n, len(MODE_VALUES)), dtype=np.int64)
        self.func_ticks = np.zeros((n, len(FUNCTIONAL_MODE_VALUES)), dtype=np.int64)
        self.phase_ticks = np.zeros((n, len(PHASES)), dtype=np.int64)
        self.part_count_start = fleet.part_count.copy()
        self.part_bad_start = fleet.part_bad.copy()
        self.cycles: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        self.alarms: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        self._open_alarms: list[dict[str, dict[str, Any]]] = [{} for _ in range(n)]
        self.tool_changes: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        self.traffic = [MachineTraffic() for _ in range(n)]

    def observe(self, fleet: Fleet, rep: StepReport) -> None:
        """Count one tick of state and record the discrete happenings of ``rep``."""
        r = self._rows
        self.exec_ticks[r, fleet.execution] += 1
        self.mode_ticks[r, fleet.mode] += 1
        self.func_ticks[r, fleet.functional] += 1
        self.phase_ticks[r, fleet.phase] += 1
        self.ticks += 1
        for c in rep.cycles:
            self.cycles[c.machine].append(
                {
                    "program": c.program,
                    "start": c.start,
                    "end": c.end,
                    "status": c.status,
                    "interrupted_by": c.interrupted_by,
                    "good": c.good,
                    "scrap": c.scrap,
                }
            )
        for a in rep.alarms:
            key = f"{a.spec.component}/{a.spec.code}"
            if a.active:
                rec = {
                    "code": a.spec.code,
                    "level": a.spec.level,
                    "component": a.spec.component,
                    "text": a.spec.text,
                    "start": a.t,
                    "end": None,
                }
                self.alarms[a.machine].append(rec)
                self._open_alarms[a.machine][key] = rec
            else:
                open_rec = self._open_alarms[a.machine].pop(key, None)
                if open_rec is not None:
                    open_rec["end"] = a.t
        for tc in rep.tool_changes:
            self.tool_changes[tc.machine].append(
                {
                    "tool": tc.tool,
                    "time": tc.t,
                    "reason": tc.reason,
                    "vb_mm": round(tc.vb_mm, 6),
                    "cut_min": round(tc.cut_min, 4),
                }
            )

    @property
    def end(self) -> float:
        """Epoch end of the observed window (exclusive)."""
        return self.start + self.ticks * self.fleet.dt

    def summary(self, **run_info: Any) -> dict[str, Any]:
        """The ground truth as a JSON-ready dict (format in ``docs/simulators.md``)."""
        fl = self.fleet
        dt = fl.dt
        end = self.end
        planned, breaks = fl.factory.calendar.planned_seconds(self.start, end)
        vb = vb_of_life(fl.life, fl.vb_limit)
        machines: dict[str, Any] = {}
        for m, spec in enumerate(fl.factory.machines):
            kind = fl.kinds[m]
            cycles = [dict(c) for c in self.cycles[m]]
            if fl.phase[m] in (4, 5, 6):  # cycle, feed_hold, operator_stop: a cycle is open
                cycles.append(
                    {
                        "program": fl.program_names[fl.prog[m]],
                        "start": float(fl.cycle_start[m]),
                        "end": end,
                        "status": "open",
                        "interrupted_by": None,
                        "good": 0,
                        "scrap": 0,
                    }
                )
            cycles.sort(key=lambda c: c["start"])
            per_prog: dict[str, dict[str, Any]] = {}
            for c in cycles:
                c["duration_s"] = round(c["end"] - c["start"], 3)
                c["parts"] = c["good"] + c["scrap"]
                pp = per_prog.setdefault(
                    c["program"], {"completed": 0, "interrupted": 0, "open": 0, "durations_s": []}
                )
                pp[c["status"]] += 1
                if c["status"] == "completed":
                    pp["durations_s"].append(c["duration_s"])
                c["start"] = iso_ms(c["start"])
                c["end"] = iso_ms(c["end"])
            good = sum(c["good"] for c in cycles)
            scrap = sum(c["scrap"] for c in cycles)
            tr = self.traffic[m]
            machines[spec.machine_id] = {
                "kind": kind.name,
                "controller": {"vendor": "i5", "model": kind.model, "kind": kind.controller_kind},
                "execution_seconds": _secs(EXECUTION_VALUES, self.exec_ticks[m], dt),
                "controller_mode_seconds": _secs(MODE_VALUES, self.mode_ticks[m], dt),
                "functional_mode_seconds": _secs(FUNCTIONAL_MODE_VALUES, self.func_ticks[m], dt),
                "activity_seconds": _secs(PHASES, self.phase_ticks[m], dt),
                "cycles": cycles,
                "cycles_per_program": per_prog,
                "parts": {
                    "good": good,
                    "scrap": scrap,
                    "part_count_start": int(self.part_count_start[m]),
                    "part_count_end": int(fl.part_count[m]),
                    "part_count_bad_start": int(self.part_bad_start[m]),
                    "part_count_bad_end": int(fl.part_bad[m]),
                },
                "alarms": [
                    {
                        **a,
                        "start": iso_ms(a["start"]),
                        "end": None if a["end"] is None else iso_ms(a["end"]),
                    }
                    for a in self.alarms[m]
                ],
                "tool_changes": [{**t, "time": iso_ms(t["time"])} for t in self.tool_changes[m]],
                "tools_vb_mm_at_end": {
                    str(tl.number): round(float(vb[m, tl.number]), 6) for tl in kind.tools
                },
                "messages": dict(tr.messages),
                "samples": tr.samples,
                "sessions": [
                    {
                        "session": s.session,
                        "start": iso_ms(s.start),
                        "end": None if s.end is None else iso_ms(s.end),
                        "last_seq": s.last_seq,
                        "messages": s.messages,
                        "dropped": s.dropped,
                    }
                    for s in tr.sessions
                ],
            }
        return {
            "format": "arbor-sim-truth/1",
            "site": fl.factory.site,
            "window": {
                "start": iso_ms(self.start),
                "end": iso_ms(end),
                "seconds": round(self.ticks * dt, 6),
                "ticks": self.ticks,
                "rate_hz": round(1.0 / dt, 9),
            },
            "calendar": {"block_seconds": planned, "break_seconds": breaks},
            **run_info,
            "machines": machines,
        }

    def write(self, path: str | Path, **run_info: Any) -> dict[str, Any]:
        """Write :meth:`summary` as indented JSON to ``path``; return it."""
        data = self.summary(**run_info)
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        tmp.replace(p)  # atomic: a reader never sees half a summary
        return data


def _secs(names: tuple[str, ...], ticks: np.ndarray, dt: float) -> dict[str, float]:
    return {name: round(int(n) * dt, 6) for name, n in zip(names, ticks, strict=True)}
