"""The analytics core against the simulator's ground truth, from the wire only.

A simulated i5 factory runs one early shift in-process (power-on at 05:45, the 06:00-14:00 shift
with both breaks) and publishes v1 messages into a ``MemorySink``. Every analytics input below is
built from those messages decoded with ``protocol.decode`` -- exactly what the platform receives --
never from the model's arrays. The answers are compared machine by machine with the truth JSON
(``arbor-sim-truth/1``, docs/simulators.md).

Tolerances follow from how the wire quantises time. Every published timestamp is the tick time
rounded to the millisecond; at 0.5 Hz a tick is 2000 ms, so the rounding is exact and each state
boundary, cycle start/end and alarm start/end on the wire is the truth's instant. Hence:

- state seconds: |analytics - truth| <= 1 ms per boundary of that state (two per interval) -- the
  bound if rounding were not exact; measured 0 (float summation noise < 1e-6 s);
- cycle, alarm and tool-change times: equal to the millisecond (they are compared as integer ms);
- counts (cycles, parts, scrap, alarms, tool changes): exact;
- minutes in cut per tool instance: the truth rounds ``cut_min`` to 1e-4 min, so 5e-5 min;
- the telemetry batch period (60 s) does not enter: events are published per tick, and samples
  are only used for in-cut time, each sample covering its own tick.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from typing import Any

import numpy as np
import pytest

from analytics.calendar import Shift, ShiftCalendar
from analytics.cycles import COMPLETED, STATUS_WORDS, condition_intervals, cycle_stats, find_cycles
from analytics.intervals import IntervalSet
from analytics.oee import (
    CATEGORIES,
    classify_iso22400,
    counter_increments,
    in_cycle_utilisation,
    time_model,
)
from analytics.states import (
    CONTROLLER_MODE,
    EXECUTION,
    UNKNOWN,
    StateIntervals,
    combine,
    state_intervals,
)
from analytics.tools import tool_usage
from protocol import ConditionEvent, Event, Status, Telemetry, ValueEvent, decode, parse_topic
from simulators.controllers import I5Controllers, MemorySink
from simulators.factory import default_factory
from simulators.model import Fleet
from simulators.programs import KINDS
from simulators.runner import run_loop
from simulators.truth import Truth

pytestmark = pytest.mark.slow

MACHINES = 20
RATE_HZ = 0.5
DT = 1.0 / RATE_HZ
BATCH_S = 60.0
SEED = 23
W0 = datetime(2025, 3, 3, 5, 45, tzinfo=UTC).timestamp()  # a Monday, before the early shift
SHIFT_S = 8 * 3600 + 15 * 60  # 05:45-14:00: power-on, the early shift and both of its breaks
W1 = W0 + SHIFT_S
OFF = "UNAVAILABLE"  # what an offline status becomes on every event stream: no data
IN_CUT_LOAD = 5.0  # %: spinning without cutting (and proving) reads 3 %, every cut far more
MS = 1e-3

# The analytics' copy of the simulator's default calendar (UTC, Mon-Fri).
CALENDAR = ShiftCalendar(
    shifts=[
        Shift(
            "early",
            time(6),
            time(14),
            frozenset(range(5)),
            ((time(9, 30), time(9, 45)), (time(12), time(12, 30))),
        ),
        Shift(
            "late",
            time(14),
            time(22),
            frozenset(range(5)),
            ((time(17, 30), time(17, 45)), (time(20), time(20, 30))),
        ),
    ]
)


def _ms(text_or_dt: str | datetime) -> int:
    d = text_or_dt if isinstance(text_or_dt, datetime) else datetime.fromisoformat(text_or_dt)
    return round(d.timestamp() * 1000)


@dataclass
class Wire:
    """What the platform received from one machine, per signal: (ts ms, value) in arrival order."""

    events: dict[str, list[tuple[int, Any]]] = field(default_factory=lambda: defaultdict(list))
    conditions: list[tuple[int, str, str]] = field(default_factory=list)  # ts, code, level
    sample_ms: list[int] = field(default_factory=list)
    sample_load: list[float] = field(default_factory=list)
    births: int = 0
    deaths: int = 0

    def stream(self, signal: str) -> tuple[np.ndarray, list[Any]]:
        rows = self.events[signal]
        return np.array([t for t, _ in rows], dtype=np.float64) / 1000.0, [v for _, v in rows]


def _collect(sink: MemorySink) -> dict[str, Wire]:
    wires: dict[str, Wire] = defaultdict(Wire)
    for msg in sink.messages:
        topic = parse_topic(msg.topic)
        w = wires[topic.machine]
        decoded = decode(topic, msg.payload)
        if isinstance(decoded, Status):
            if decoded.online:
                w.births += 1  # the snapshot event that follows sets every signal
                continue
            # Offline: from here on nothing is known. Every state stream becomes "no data" and
            # every condition UNAVAILABLE (MTConnect: an unavailable device clears its alarms).
            w.deaths += 1
            ts = _ms(decoded.ts)
            for signal in (
                "execution",
                "controller_mode",
                "program",
                "tool_number",
                "emergency_stop",
            ):
                w.events[signal].append((ts, OFF))
            w.conditions.append((ts, "", "UNAVAILABLE"))
        elif isinstance(decoded, Event):
            for item in decoded.events:
                if isinstance(item, ConditionEvent):
                    c = item.condition
                    w.conditions.append((_ms(item.ts), c.code, c.level))
                else:
                    assert isinstance(item, ValueEvent)
                    w.events[item.signal].append((_ms(item.ts), item.value))
        else:
            assert isinstance(decoded, Telemetry)
            for s in decoded.samples:
                w.sample_ms.append(_ms(s.ts))
                w.sample_load.append(float(s.values["spindle_load"]))
    return wires


@pytest.fixture(scope="module")
def run() -> tuple[dict[str, Any], dict[str, Wire]]:
    fleet = Fleet(default_factory(MACHINES, site="plant"), rate_hz=RATE_HZ, start=W0, seed=SEED)
    truth = Truth(fleet)
    sink = MemorySink()
    controllers = I5Controllers(fleet, sink, truth=truth, run_id="an1", batch_s=BATCH_S)
    run_loop(fleet, controllers, truth, duration_s=SHIFT_S, speedup=0)
    summary = truth.summary(seed=SEED)
    assert summary["window"]["seconds"] == SHIFT_S
    return summary, _collect(sink)


def _states(w: Wire, signal: str, vocabulary: tuple[str, ...]) -> StateIntervals:
    t, v = w.stream(signal)
    codes = np.array([vocabulary.index(str(x)) for x in v], dtype=np.int64)
    return state_intervals(t, codes, vocabulary, start=W0, end=W1)


def _vocab(w: Wire, signal: str) -> tuple[str, ...]:
    return (*sorted({str(v) for _, v in w.events[signal]} - {OFF}), OFF)


def _boundaries(st: StateIntervals) -> dict[str, int]:
    """Interval boundaries per state word (two per interval): each could carry 1 ms rounding."""
    out: dict[str, int] = defaultdict(int)
    for c in st.code.tolist():
        out["unknown" if c == UNKNOWN else st.vocabulary[c]] += 2
    return out


def _production(ex: StateIntervals, md: StateIntervals) -> StateIntervals:
    """Execution for cycle detection: ACTIVE counts only in AUTOMATIC (a proving run in MDI, the
    ASUT of ISO 22400, is setup, not a production cycle), otherwise it reads READY."""
    starts, ends, codes = combine(ex, md)
    active, ready = EXECUTION.index("ACTIVE"), EXECUTION.index("READY")
    automatic = CONTROLLER_MODE.index("AUTOMATIC")
    code = np.where((codes[0] == active) & (codes[1] != automatic), ready, codes[0])
    return StateIntervals(starts, ends, code.astype(np.int64), EXECUTION)


WORST: dict[str, float] = defaultdict(float)


def _note(what: str, diff: float) -> None:
    WORST[what] = max(WORST[what], abs(diff))


def test_every_machine_was_seen(run: tuple[dict[str, Any], dict[str, Wire]]) -> None:
    summary, wires = run
    assert set(wires) == set(summary["machines"])
    for mid, m in summary["machines"].items():
        assert wires[mid].births == len(m["sessions"]) >= 1
        assert wires[mid].deaths == wires[mid].births  # power off or shutdown, each published


def test_the_shift_exercises_every_path(run: tuple[dict[str, Any], dict[str, Wire]]) -> None:
    summary, _ = run
    ms = list(summary["machines"].values())
    for activity in ("setup", "prove", "feed_hold", "operator_stop", "fault", "estop", "wait"):
        assert sum(m["activity_seconds"][activity] for m in ms) > 0, activity
    cycles = [c for m in ms for c in m["cycles"]]
    assert {c["status"] for c in cycles} == {"completed", "interrupted", "open"}
    assert {c["interrupted_by"] for c in cycles} == {None, "fault", "breakage", "estop"}
    reasons = {t["reason"] for m in ms for t in m["tool_changes"]}
    assert reasons == {"life_limit", "breakage"}
    assert sum(m["parts"]["scrap"] for m in ms) > 0


def test_state_seconds_and_unknown_time(run: tuple[dict[str, Any], dict[str, Wire]]) -> None:
    summary, wires = run
    for mid, m in summary["machines"].items():
        w = wires[mid]
        for signal, vocab, key in (
            ("execution", EXECUTION, "execution_seconds"),
            ("controller_mode", CONTROLLER_MODE, "controller_mode_seconds"),
        ):
            st = _states(w, signal, vocab)
            got = st.durations()
            tol = _boundaries(st)
            assert sum(got.values()) == pytest.approx(SHIFT_S, abs=1e-6)
            for word in vocab:
                want = m[key][word] if word != OFF else 0.0
                _note("state seconds", got[word] - want)
                assert got[word] == pytest.approx(want, abs=tol[word] * MS + 1e-6), (mid, word)
            # Offline (and before the first birth) is unknown time, the truth's UNAVAILABLE.
            _note("unknown seconds", got["unknown"] - m[key]["UNAVAILABLE"])
            assert got["unknown"] == pytest.approx(
                m[key]["UNAVAILABLE"], abs=tol["unknown"] * MS + 1e-6
            ), mid


def test_cycles_per_program_match_by_start(
    run: tuple[dict[str, Any], dict[str, Wire]],
) -> None:
    summary, wires = run
    n_matched = 0
    for mid, m in summary["machines"].items():
        w = wires[mid]
        ex = _states(w, "execution", EXECUTION)
        md = _states(w, "controller_mode", CONTROLLER_MODE)
        progs = _vocab(w, "program")
        prog = _states(w, "program", progs)
        pt, pv = w.stream("part_count")
        bt, bv = w.stream("part_count_bad")
        part_t, part_inc = counter_increments(pt, pv)
        bad_t, bad_inc = counter_increments(bt, bv)
        prod = _production(ex, md)
        cyc = find_cycles(prod, prog, part_times=part_t, part_increments=part_inc)
        scrap = find_cycles(prod, prog, part_times=bad_t, part_increments=bad_inc).parts

        got = {round(s * 1000): k for k, s in enumerate(cyc.start.tolist())}  # start ms -> index
        assert len(got) == cyc.start.size == len(m["cycles"]), mid
        for c in m["cycles"]:
            k = got.get(_ms(c["start"]))
            assert k is not None, (mid, c)
            assert STATUS_WORDS[cyc.status[k]] == c["status"], (mid, c)
            assert cyc.programs[cyc.program[k]] == c["program"], (mid, c)
            assert round(cyc.end[k] * 1000) == _ms(c["end"]), (mid, c)
            _note("cycle duration", float(cyc.duration[k]) - c["duration_s"])
            assert float(cyc.duration[k]) == pytest.approx(c["duration_s"], abs=0.5 * MS)
            assert cyc.parts[k] == c["parts"], (mid, c)
            assert scrap[k] == c["scrap"], (mid, c)
            n_matched += 1

        # Per program: counts by status, and the completed durations (statistics on them).
        stats = cycle_stats(cyc)
        for name, pp in m["cycles_per_program"].items():
            idx = np.flatnonzero(np.array(cyc.programs)[cyc.program] == name)
            for word in ("completed", "interrupted", "open"):
                assert int((cyc.status[idx] == STATUS_WORDS.index(word)).sum()) == pp[word]
            if pp["completed"]:
                done = idx[cyc.status[idx] == COMPLETED]
                assert sorted(np.round(cyc.duration[done], 3).tolist()) == sorted(pp["durations_s"])
                assert stats[name].count == pp["completed"]
                assert stats[name].median == pytest.approx(
                    float(np.median(pp["durations_s"])), abs=0.5 * MS
                )

        # Parts from the counters: the period totals.
        assert part_inc.sum() == m["parts"]["good"] + m["parts"]["scrap"], mid
        assert bad_inc.sum() == m["parts"]["scrap"], mid
    assert n_matched > MACHINES * 20


def _alarms(w: Wire, levels: tuple[str, ...]) -> list[tuple[str, int, int]]:
    t = np.array([c[0] for c in w.conditions], dtype=np.float64) / 1000.0
    ai = condition_intervals(
        t,
        [c[1] for c in w.conditions],
        [c[2] for c in w.conditions],
        end=W1,
        active_levels=levels,
    )
    return sorted(
        (code, round(s * 1000), round(e * 1000))
        for code, s, e in zip(ai.code, ai.start.tolist(), ai.end.tolist(), strict=True)
    )


def test_alarm_intervals(run: tuple[dict[str, Any], dict[str, Wire]]) -> None:
    summary, wires = run
    total = 0
    for mid, m in summary["machines"].items():
        for level in ("FAULT", "WARNING"):
            want = sorted(
                (a["code"], _ms(a["start"]), _ms(a["end"]) if a["end"] else round(W1 * 1000))
                for a in m["alarms"]
                if a["level"] == level
            )
            assert _alarms(wires[mid], (level,)) == want, (mid, level)
            total += len(want)
    assert total > 0


def test_iso22400_time_model_and_utilisation(
    run: tuple[dict[str, Any], dict[str, Wire]],
) -> None:
    summary, wires = run
    pot = CALENDAR.planned_operation_time(W0, W1)
    pdt = CALENDAR.planned_down_time(W0, W1)
    assert pot.total == summary["calendar"]["block_seconds"]
    assert pdt.total == summary["calendar"]["break_seconds"]
    whole = IntervalSet.span(W0, W1)
    for mid, m in summary["machines"].items():
        w = wires[mid]
        ex = _states(w, "execution", EXECUTION)
        md = _states(w, "controller_mode", CONTROLLER_MODE)
        # Down time: FAULT conditions active or the emergency stop triggered.
        faults = _alarms(w, ("FAULT",))
        estop = _states(w, "emergency_stop", ("ARMED", "TRIGGERED", OFF))
        fault = IntervalSet.from_intervals(
            [s / 1000 for _, s, _ in faults], [e / 1000 for _, _, e in faults]
        ).union(estop.where(["TRIGGERED"]))
        cats = classify_iso22400(ex, md, fault=fault)
        tol = sum(_boundaries(ex).values()) * MS + 1e-6

        # Over the whole window every category is an activity of the model.
        act, exs = m["activity_seconds"], m["execution_seconds"]
        full = time_model(cats, whole, IntervalSet.empty())
        expected = {
            "APT": act["cycle"],
            "ASUT": act["prove"],
            "ADET": act["fault"] + act["estop"],
            "ADOT": SHIFT_S - exs["UNAVAILABLE"] - act["cycle"] - act["prove"] - act["fault"]
            - act["estop"],
            "unknown": exs["UNAVAILABLE"],
        }  # fmt: skip
        for name, want in expected.items():
            _note(f"ISO 22400 {name}", getattr(full, name) - want)
            assert getattr(full, name) == pytest.approx(want, abs=tol), (mid, name)

        # Inside the plan: the categories and unknown time tile PBT exactly.
        tm = time_model(cats, pot, pdt)
        assert tm.PBT == pot.total - pdt.total
        parts = tm.APT + tm.ASUT + tm.ADET + tm.ADOT + tm.unknown
        _note("ISO 22400 sum - PBT", parts - tm.PBT)
        assert parts == pytest.approx(tm.PBT, abs=1e-6), mid
        assert tm.APT + tm.APT_outside_plan == pytest.approx(full.APT, abs=1e-6)
        assert set(cats.vocabulary) == set(CATEGORIES)

        # MTConnect in-cycle utilisation: ACTIVE time over time with data.
        u = in_cycle_utilisation(ex, whole)
        _note("in-cycle ACTIVE seconds", u.in_state - exs["ACTIVE"])
        assert u.in_state == pytest.approx(exs["ACTIVE"], abs=tol), mid
        assert u.known == pytest.approx(SHIFT_S - exs["UNAVAILABLE"], abs=tol), mid
        assert u.utilisation is not None
        want_u = exs["ACTIVE"] / (SHIFT_S - exs["UNAVAILABLE"])
        _note("in-cycle utilisation", u.utilisation - want_u)
        assert u.utilisation == pytest.approx(want_u, abs=1e-9), mid
        # Over the whole window (coverage included) it is truth ACTIVE / window.
        assert u.utilisation * u.known / SHIFT_S == pytest.approx(exs["ACTIVE"] / SHIFT_S)


def test_tool_changes_and_minutes_in_cut(run: tuple[dict[str, Any], dict[str, Wire]]) -> None:
    """Breakage changes show on the wire as the breakage alarm; every change's minutes in cut
    follow from the tool-number events and the spindle load samples (in cut: load above 5 %)."""
    summary, wires = run
    checked = 0
    for mid, m in summary["machines"].items():
        w = wires[mid]
        kind = KINDS[m["kind"]]
        tools = (*(str(t.number) for t in kind.tools), OFF)
        tool = _states(w, "tool_number", tools)
        st = np.array(w.sample_ms, dtype=np.float64) / 1000.0
        cut = np.array(w.sample_load) > IN_CUT_LOAD
        in_cut = IntervalSet.from_intervals(st[cut], st[cut] + DT)

        # Breakage: a tool is replaced when its breakage alarm clears, and it is the tool that
        # was in the spindle when the alarm was raised.
        broke = [(s, e) for code, s, e in _alarms(w, ("FAULT",)) if code == kind.breakage_code]
        cleared = [(s, e) for s, e in broke if e < round(W1 * 1000)]
        changes = [c for c in m["tool_changes"] if c["reason"] == "breakage"]
        assert sorted(_ms(c["time"]) for c in changes) == [e for _, e in cleared], mid
        for c in changes:
            s = next(s for s, e in cleared if e == _ms(c["time"]))
            k = int(np.searchsorted(tool.start, s / 1000, side="right")) - 1
            assert tool.vocabulary[tool.code[k]] == str(c["tool"]), (mid, c)

        # Minutes in cut of each removed tool since it was mounted (or the window start).
        since: dict[int, float] = {}
        for c in m["tool_changes"]:
            t_c = _ms(c["time"]) / 1000
            t_p = since.get(c["tool"], W0)
            span = in_cut.intersect(IntervalSet.span(t_p, t_c))
            got = tool_usage(tool, span).minutes_in_cut.get(str(c["tool"]), 0.0)
            _note("minutes in cut", got - c["cut_min"])
            assert got == pytest.approx(c["cut_min"], abs=5e-5 + 1e-9), (mid, c)
            since[c["tool"]] = t_c
            checked += 1
    assert checked > 0


def test_zz_report_worst_differences() -> None:
    """Prints the measured worst-case differences (run with -s to see them)."""
    for what, diff in sorted(WORST.items()):
        print(f"worst |analytics - truth| {what}: {diff:.3g}")
    assert all(math.isfinite(d) for d in WORST.values())
