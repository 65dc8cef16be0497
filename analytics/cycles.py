"""Program cycles from execution and program streams, cycle statistics per program, and the
downtime Pareto by alarm code and reason.

A cycle starts when execution becomes ACTIVE outside a cycle and ends
- *completed* at PROGRAM_COMPLETED,
- *interrupted* at READY, STOPPED, unknown time (no data) or a change of program,
- *open* when the window ends first.
FEED_HOLD, OPTIONAL_STOP, PROGRAM_STOPPED (M00), WAIT and INTERRUPTED pause a cycle; ACTIVE
afterwards resumes it. Times in float seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from analytics.intervals import IntervalSet
from analytics.states import UNKNOWN, StateIntervals, to_seconds

__all__ = [
    "COMPLETED",
    "INTERRUPTED",
    "OPEN",
    "AlarmIntervals",
    "Cycles",
    "ParetoRow",
    "ProgramStats",
    "condition_intervals",
    "cycle_stats",
    "find_cycles",
    "pareto",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

COMPLETED, INTERRUPTED, OPEN = 0, 1, 2
STATUS_WORDS = ("completed", "interrupted", "open")
_PAUSE = ("FEED_HOLD", "OPTIONAL_STOP", "PROGRAM_STOPPED", "WAIT", "INTERRUPTED")


@dataclass(frozen=True, slots=True)
class Cycles:
    """One entry per cycle, shapes (k,): start, end (s), program (index into ``programs`` or -1),
    status (COMPLETED / INTERRUPTED / OPEN), active and paused seconds, parts counted."""

    start: FloatArray
    end: FloatArray
    program: IntArray
    status: IntArray
    active_time: FloatArray
    paused_time: FloatArray
    parts: FloatArray
    programs: tuple[str, ...]

    @property
    def duration(self) -> FloatArray:
        """Wall-clock cycle time (k,) in seconds."""
        d: FloatArray = self.end - self.start
        return d

    def to_records(self) -> list[dict[str, object]]:
        """One JSON-ready dict per cycle."""
        return [
            {
                "start": float(self.start[k]),
                "end": float(self.end[k]),
                "program": self.programs[self.program[k]] if self.program[k] >= 0 else None,
                "status": STATUS_WORDS[self.status[k]],
                "duration": float(self.end[k] - self.start[k]),
                "active_time": float(self.active_time[k]),
                "paused_time": float(self.paused_time[k]),
                "parts": float(self.parts[k]),
            }
            for k in range(self.start.size)
        ]


def find_cycles(
    execution: StateIntervals,
    program: StateIntervals | None = None,
    *,
    part_times: ArrayLike | None = None,
    part_increments: ArrayLike | None = None,
    grace: float = 5.0,
) -> Cycles:
    """Detect cycles (see the module docstring).

    ``part_times``/``part_increments`` come from ``oee.counter_increments``; a cycle is credited
    with the parts counted in (start, end], a completed one up to ``grace`` seconds later but never
    past the next cycle's start (controllers often bump the counter just after PROGRAM_COMPLETED).
    """
    vocab = execution.vocabulary
    active = vocab.index("ACTIVE")
    completed = vocab.index("PROGRAM_COMPLETED")
    pause = {vocab.index(w) for w in _PAUSE if w in vocab}
    if program is not None:
        if program.start[0] != execution.start[0] or program.end[-1] != execution.end[-1]:
            raise ValueError("program must cover the same window as execution")
        cuts = np.unique(np.concatenate([execution.start, program.start]))
        ex = execution.code[np.searchsorted(execution.start, cuts, side="right") - 1]
        pg = program.code[np.searchsorted(program.start, cuts, side="right") - 1]
        programs = program.vocabulary
    else:
        cuts, ex = execution.start, execution.code
        pg = np.full(cuts.shape, UNKNOWN)
        programs = ()
    ends = np.concatenate([cuts[1:], [execution.end[-1]]])

    rows: list[tuple[float, float, int, int, float, float]] = []
    in_cycle = False
    c_start = c_active = c_pause = 0.0
    c_prog = UNKNOWN
    # A plain loop: cycle detection is a state machine over intervals, far fewer than samples.
    for s, e, code, prog in zip(
        cuts.tolist(), ends.tolist(), ex.tolist(), pg.tolist(), strict=True
    ):
        if in_cycle and prog != c_prog:
            rows.append((c_start, s, c_prog, INTERRUPTED, c_active, c_pause))
            in_cycle = False
        if code == active:
            if not in_cycle:
                in_cycle, c_start, c_active, c_pause, c_prog = True, s, 0.0, 0.0, prog
            c_active += e - s
        elif in_cycle and code in pause:
            c_pause += e - s
        elif in_cycle:
            status = COMPLETED if code == completed else INTERRUPTED
            rows.append((c_start, s, c_prog, status, c_active, c_pause))
            in_cycle = False
    if in_cycle:
        rows.append((c_start, float(ends[-1]), c_prog, OPEN, c_active, c_pause))

    arr = np.array(rows, dtype=np.float64).reshape(-1, 6)
    start, end = arr[:, 0], arr[:, 1]
    parts = np.zeros(start.shape)
    if part_times is not None and part_increments is not None:
        pt = to_seconds(part_times)
        pi = np.asarray(part_increments, dtype=np.float64)
        order = np.argsort(pt, kind="stable")
        pt, cum = pt[order], np.concatenate([[0.0], np.cumsum(pi[order])])
        next_start = np.concatenate([start[1:], [np.inf]])
        hi = np.minimum(np.where(arr[:, 3] == COMPLETED, end + grace, end), next_start)
        parts = (
            cum[np.searchsorted(pt, hi, side="right")]
            - cum[np.searchsorted(pt, start, side="right")]
        )
    return Cycles(
        start=start,
        end=end,
        program=arr[:, 2].astype(np.int64),
        status=arr[:, 3].astype(np.int64),
        active_time=arr[:, 4],
        paused_time=arr[:, 5],
        parts=parts,
        programs=tuple(programs),
    )


@dataclass(frozen=True, slots=True)
class ProgramStats:
    """Cycle-time statistics for one program over completed cycles (seconds).

    ``spread_mad`` is the scaled median absolute deviation (1.4826 MAD, a robust sigma);
    ``outliers`` are indices into the Cycles arrays whose robust z-score exceeds the limit.
    """

    program: str
    count: int
    median: float
    mean: float
    std: float
    spread_mad: float
    iqr: float
    p10: float
    p90: float
    min: float
    max: float
    parts_per_cycle: float
    outliers: list[int]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def cycle_stats(
    cycles: Cycles, *, measure: str = "duration", z_limit: float = 3.5
) -> dict[str, ProgramStats]:
    """Statistics per program over completed cycles.

    ``measure`` is "duration" (wall clock) or "active_time" (in cycle, pauses excluded).
    Outliers: |x - median| / (1.4826 MAD) > ``z_limit`` (Iglewicz and Hoaglin); when MAD is 0
    (most cycles identical), any cycle more than 10 % from the median is an outlier.
    """
    if measure not in ("duration", "active_time"):
        raise ValueError(f"measure must be 'duration' or 'active_time', got {measure!r}")
    values = cycles.duration if measure == "duration" else cycles.active_time
    out: dict[str, ProgramStats] = {}
    done = cycles.status == COMPLETED
    for prog in np.unique(cycles.program[done]).tolist():
        idx = np.nonzero(done & (cycles.program == prog))[0]
        x = values[idx]
        med = float(np.median(x))
        mad = 1.4826 * float(np.median(np.abs(x - med)))
        limit = z_limit * mad if mad > 0 else 0.1 * abs(med)
        flag = np.abs(x - med) > limit
        q10, q25, q75, q90 = np.percentile(x, [10, 25, 75, 90])
        name = cycles.programs[prog] if prog >= 0 else "unknown"
        out[name] = ProgramStats(
            program=name,
            count=int(x.size),
            median=med,
            mean=float(x.mean()),
            std=float(x.std(ddof=1)) if x.size > 1 else 0.0,
            spread_mad=mad,
            iqr=float(q75 - q25),
            p10=float(q10),
            p90=float(q90),
            min=float(x.min()),
            max=float(x.max()),
            parts_per_cycle=float(cycles.parts[idx].mean()),
            outliers=idx[flag].tolist(),
        )
    return out


@dataclass(frozen=True, slots=True)
class AlarmIntervals:
    """Active alarm conditions: native code, start, end (seconds), one entry per activation."""

    code: list[str]
    start: FloatArray
    end: FloatArray


def condition_intervals(
    timestamps: ArrayLike,
    native_codes: Sequence[str],
    levels: Sequence[str],
    *,
    end: float,
    active_levels: Sequence[str] = ("FAULT",),
) -> AlarmIntervals:
    """Turn MTConnect CONDITION events into activation intervals.

    A level in ``active_levels`` activates its native code (repeats keep the first start);
    NORMAL with a code clears that code, NORMAL or UNAVAILABLE with an empty code clears all.
    Alarms still active at ``end`` end there.
    """
    t = to_seconds(timestamps)
    if not (len(native_codes) == len(levels) == t.shape[0]):
        raise ValueError("timestamps, native_codes and levels must have the same length")
    order = np.argsort(t, kind="stable")
    active: dict[str, float] = {}
    codes: list[str] = []
    starts: list[float] = []
    ends: list[float] = []
    wanted = {w.upper() for w in active_levels}
    for k in order.tolist():
        when, code, level = float(t[k]), str(native_codes[k] or ""), str(levels[k]).upper()
        if level in wanted:
            active.setdefault(code, when)
        elif code and code in active:
            codes.append(code)
            starts.append(active.pop(code))
            ends.append(when)
        elif not code:
            for c, s in active.items():
                codes.append(c)
                starts.append(s)
                ends.append(when)
            active.clear()
    for c, s in active.items():
        codes.append(c)
        starts.append(s)
        ends.append(max(end, s))
    return AlarmIntervals(codes, np.array(starts), np.array(ends))


@dataclass(frozen=True, slots=True)
class ParetoRow:
    """One bar of a Pareto chart: label, seconds, occurrences, share and cumulative share."""

    label: str
    seconds: float
    count: int
    share: float
    cumulative_share: float


def pareto(
    labels: Sequence[str],
    starts: ArrayLike,
    ends: ArrayLike,
    within: IntervalSet | None = None,
) -> list[ParetoRow]:
    """Downtime Pareto: total time per label (alarm code or downtime reason), largest first.

    Only the part of each interval inside ``within`` counts (e.g. the ADET time, or PBT), so
    overlapping alarms are each charged their own duration; shares are of the summed total.
    """
    s = np.asarray(starts, dtype=np.float64)
    e = np.asarray(ends, dtype=np.float64)
    if not (len(labels) == s.size == e.size):
        raise ValueError("labels, starts and ends must have the same length")
    dur = (e - s) if within is None else within.overlap(s, e)
    names, inverse = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    totals = np.bincount(inverse, weights=dur, minlength=names.size)
    counts = np.bincount(inverse[dur > 0], minlength=names.size)
    order = np.lexsort((names, -totals))
    grand = float(totals.sum())
    rows: list[ParetoRow] = []
    cum = 0.0
    for k in order.tolist():
        if totals[k] <= 0:
            continue
        cum += float(totals[k])
        rows.append(
            ParetoRow(
                str(names[k]), float(totals[k]), int(counts[k]), totals[k] / grand, cum / grand
            )
        )
    return rows
