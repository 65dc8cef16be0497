"""The vectorised controller model of N machines: one call of :meth:`Fleet.step` advances all.

Time is discrete: tick k covers the simulated interval ``[t0 + k dt, t0 + (k+1) dt)`` with
``dt = 1 / rate_hz``. Every transition happens at a tick boundary, so the state held during a tick
is exactly what is published with that tick's timestamp, and state durations are whole ticks (the
ground truth sums to the window exactly).

Each machine is in one *activity* (``PHASES``), from which its MTConnect Execution, ControllerMode
and FunctionalMode follow (``EXEC_OF``, ``MODE_OF``, ``FUNC_OF``):

=============  ==================  ===================  ==========================================
activity       execution           controller mode      leaves when
=============  ==================  ===================  ==========================================
off            UNAVAILABLE         UNAVAILABLE          the power window of the calendar opens
idle           READY               AUTOMATIC            a block is running (and not on break)
setup          READY               MANUAL               setup time is over (fixtures, tools)
prove          ACTIVE              MANUAL_DATA_INPUT    first-off proving is over
cycle          ACTIVE              AUTOMATIC            the last segment ends (or a fault ...)
feed_hold      FEED_HOLD           AUTOMATIC            the operator resumes
operator_stop  INTERRUPTED         AUTOMATIC            the operator resumes
fault          STOPPED             AUTOMATIC            the repair is done (alarm cleared)
estop          STOPPED             AUTOMATIC            the emergency stop is released
unload         PROGRAM_COMPLETED   AUTOMATIC            the part is unloaded (and tools changed)
wait           WAIT                AUTOMATIC            material arrives
=============  ==================  ===================  ==========================================

Tool wear is Taylor-like: each tool instance consumes life at ``1 / T(V)`` per minute in cut, with
``T = (C / V)^(1/n)`` at the actual cutting speed (spindle override included) and a lognormal
scatter per insert; the flank wear land VB follows a three-zone curve of the consumed life ``u``
(break-in, linear, accelerating) that reaches the tool's VB limit at ``u = 1``. Spindle load of a
cutting segment rises with the tool's VB (+50 % at the limit), so a worn tool shows on the load of
the same operation. Tools are changed at the end of the cycle in which they reach the limit
(reason ``life_limit``) or after a breakage alarm (reason ``breakage``); breakage hazard rises
steeply with wear.

All randomness comes from two seeded generators: ``rng`` drives the state (so the trajectory does
not depend on whether samples are taken) and ``noise`` only perturbs sampled values.
"""

from __future__ import annotations

__all__ = [
    "EXECUTION_VALUES",
    "EXEC_OF",
    "FUNCTIONAL_MODE_VALUES",
    "FUNC_OF",
    "MODE_OF",
    "MODE_VALUES",
    "PHASES",
    "SIGNALS",
    "AlarmChange",
    "CycleRecord",
    "Fleet",
    "FleetParams",
    "StepReport",
    "ToolChange",
    "vb_of_life",
]

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from protocol.catalogue import (
    CONTROLLER_MODE_VALUES,
    EXECUTION_VALUES,
    FUNCTIONAL_MODE_VALUES,
)
from simulators.factory import Factory
from simulators.programs import KINDS, AlarmSpec, MachineKind

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# The state vocabularies are the wire contract's: the codes below index these tuples.
MODE_VALUES = CONTROLLER_MODE_VALUES

PHASES: tuple[str, ...] = (
    "off",
    "idle",
    "setup",
    "prove",
    "cycle",
    "feed_hold",
    "operator_stop",
    "fault",
    "estop",
    "unload",
    "wait",
)
OFF, IDLE, SETUP, PROVE, CYCLE, HOLD, STOP, FAULT, ESTOP, UNLOAD, WAIT = range(len(PHASES))

_E = {v: i for i, v in enumerate(EXECUTION_VALUES)}
_M = {v: i for i, v in enumerate(MODE_VALUES)}
#: Execution code (index into EXECUTION_VALUES) of each activity.
EXEC_OF = np.array(
    [
        _E[x]
        for x in (
            "UNAVAILABLE",
            "READY",
            "READY",
            "ACTIVE",
            "ACTIVE",
            "FEED_HOLD",
            "INTERRUPTED",  # operator stop: suspended, resumed by the operator (MTConnect)
            "STOPPED",  # fault: the cycle is aborted, the program is not READY
            "STOPPED",
            "PROGRAM_COMPLETED",
            "WAIT",
        )
    ],
    dtype=np.int64,
)
#: ControllerMode code (index into MODE_VALUES) of each activity.
MODE_OF = np.array(
    [
        _M[x]
        for x in (
            "UNAVAILABLE",
            "AUTOMATIC",
            "MANUAL",
            "MANUAL_DATA_INPUT",
            "AUTOMATIC",
            "AUTOMATIC",
            "AUTOMATIC",
            "AUTOMATIC",
            "AUTOMATIC",
            "AUTOMATIC",
            "AUTOMATIC",
        )
    ],
    dtype=np.int64,
)
#: FunctionalMode code (index into FUNCTIONAL_MODE_VALUES) of each activity.
FUNC_OF = np.array([2, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0], dtype=np.int64)

#: Telemetry columns of :meth:`Fleet.sample`, named as in the protocol's signal catalogue.
SIGNALS: tuple[str, ...] = (
    "spindle_speed",
    "spindle_load",
    "spindle_override",
    "feedrate",
    "feed_override",
    "power",
    "position_x",
    "position_y",
    "position_z",
    "position_a",
    "position_c",
)
_AXIS_COL = {"x": 6, "y": 7, "z": 8, "a": 9, "c": 10}

_G1 = 0.25 * (1 - math.exp(-12.0)) + 0.55 + 0.2


def vb_of_life(u: FloatArray | float, vb_limit: FloatArray | float) -> FloatArray:
    """Flank wear VB (mm) after consuming the fraction ``u`` of a tool's life.

    Three zones: break-in (fast, saturating), steady linear wear, then accelerating wear;
    ``vb_of_life(1, lim) == lim``.
    """
    u = np.asarray(u, dtype=np.float64)
    g = 0.25 * (1.0 - np.exp(-12.0 * u)) + 0.55 * u + 0.2 * u**4
    return np.asarray(np.asarray(vb_limit) * g / _G1, dtype=np.float64)


@dataclass(frozen=True)
class FleetParams:
    """Rates and durations of the stochastic behaviour (per machine; seconds and per hour)."""

    hold_per_h: float = 1.2
    hold_s: tuple[float, float] = (5.0, 90.0)
    stop_per_h: float = 0.4
    stop_median_s: float = 240.0
    estop_per_h: float = 0.02
    estop_median_s: float = 300.0
    breakage_per_h: float = 0.01  # at a new tool; x31 at the life limit
    wait_probability: float = 0.03  # per cycle start
    wait_s: tuple[float, float] = (120.0, 900.0)
    setup_median_s: float = 1800.0
    prove_s: tuple[float, float] = (240.0, 720.0)
    job_quantity: tuple[int, int] = (10, 80)
    tool_change_s: float = 90.0  # operator time per worn tool replaced at cycle end
    scrap_base: float = 0.008
    scrap_wear: float = 0.03  # added at mean tool life consumed = 1
    warm_up_min: tuple[float, float] = (5.0, 30.0)  # power on this long before a block
    cool_down_min: tuple[float, float] = (0.0, 20.0)  # power off this long after a block
    through_breaks: float = 0.25  # share of machines that keep cycling during breaks


@dataclass(frozen=True, slots=True)
class CycleRecord:
    """A cycle that ended (``status`` ``completed`` or ``interrupted``); times in epoch seconds."""

    machine: int
    program: str
    start: float
    end: float
    status: str
    interrupted_by: str | None
    good: int
    scrap: int


@dataclass(frozen=True, slots=True)
class AlarmChange:
    """An alarm raised (``active``) or cleared, at ``t`` (epoch seconds)."""

    machine: int
    spec: AlarmSpec
    active: bool
    t: float


@dataclass(frozen=True, slots=True)
class ToolChange:
    """A tool replaced at ``t``; ``vb_mm`` is the true flank wear of the removed tool."""

    machine: int
    tool: int
    reason: str
    vb_mm: float
    cut_min: float
    t: float


@dataclass
class StepReport:
    """What happened at one tick (time ``t``, epoch seconds) besides the state arrays."""

    tick: int
    t: float
    powered_on: IntArray
    powered_off: IntArray
    cycles: list[CycleRecord] = field(default_factory=list)
    alarms: list[AlarmChange] = field(default_factory=list)
    tool_changes: list[ToolChange] = field(default_factory=list)


def _lognormal(rng: np.random.Generator, median: FloatArray | float, size: int) -> FloatArray:
    return np.asarray(median * np.exp(0.6 * rng.standard_normal(size)), dtype=np.float64)


class Fleet:
    """N machines of a :class:`Factory` as numpy arrays, advanced together by :meth:`step`.

    Public state arrays (length N unless noted): ``phase`` (activity code), ``execution``,
    ``mode``, ``functional`` (value codes), ``prog`` (global program index), ``seg`` (segment),
    ``tool`` (tool number), ``part_count`` / ``part_bad`` (cumulative counters), ``estop`` (bool),
    ``life`` (N x T+1, consumed life per tool number), ``vb_limit`` (N x T+1, mm).
    """

    def __init__(
        self,
        factory: Factory,
        *,
        rate_hz: float,
        start: float,
        seed: int,
        params: FleetParams | None = None,
    ) -> None:
        if rate_hz <= 0:
            raise ValueError("rate_hz must be positive")
        self.factory = factory
        self.params = p = params or FleetParams()
        self.dt = 1.0 / rate_hz
        self.t0 = float(start)
        self.tick = 0
        n = self.n = len(factory.machines)
        ss = np.random.SeedSequence(seed)
        self.rng = np.random.default_rng(ss.spawn(1)[0])
        self.noise = np.random.default_rng(ss.spawn(1)[0])
        rng = self.rng

        # --- program tables, padded to [P, S] over every program of every kind used -----------
        kinds: list[MachineKind] = [KINDS[m.kind] for m in factory.machines]
        self.kinds = kinds
        kind_names = sorted({k.name for k in kinds})
        prog_list: list[tuple[MachineKind, int]] = []
        prog_index: dict[tuple[str, str], int] = {}
        for kn in kind_names:
            kind = KINDS[kn]
            for j, pr in enumerate(kind.programs):
                prog_index[(kn, pr.name)] = len(prog_list)
                prog_list.append((kind, j))
        n_prog = len(prog_list)
        s_max = max(len(k.programs[j].segments) for k, j in prog_list)
        self.program_names = [k.programs[j].name for k, j in prog_list]
        self.nseg = np.zeros(n_prog, dtype=np.int64)
        self.seg_secs = np.ones((n_prog, s_max))
        self.seg_tool = np.zeros((n_prog, s_max), dtype=np.int64)
        self.seg_rpm = np.zeros((n_prog, s_max))
        self.seg_feed = np.zeros((n_prog, s_max))
        self.seg_load = np.zeros((n_prog, s_max))
        self.seg_cut = np.zeros((n_prog, s_max), dtype=np.bool_)
        self.seg_path = np.zeros((n_prog, s_max, 12))
        self.seg_life_rate = np.zeros((n_prog, s_max))  # life per second in cut at 100 %
        self.seg_inv_n = np.ones((n_prog, s_max))
        self.prog_unload_s = np.zeros(n_prog)
        self.prog_ppc = np.ones(n_prog, dtype=np.int64)
        for pi, (kind, j) in enumerate(prog_list):
            pr = kind.programs[j]
            self.nseg[pi] = len(pr.segments)
            self.prog_unload_s[pi] = pr.load_unload_s
            self.prog_ppc[pi] = pr.parts_per_cycle
            for si, sg in enumerate(pr.segments):
                self.seg_secs[pi, si] = sg.seconds
                self.seg_tool[pi, si] = sg.tool
                self.seg_rpm[pi, si] = sg.spindle_rpm
                self.seg_feed[pi, si] = sg.feed_mm_min
                self.seg_load[pi, si] = sg.load_pct
                self.seg_cut[pi, si] = sg.cutting
                self.seg_path[pi, si] = sg.path
                if sg.cutting:
                    tool = kind.tool(sg.tool)
                    self.seg_life_rate[pi, si] = 1.0 / (60.0 * tool.life_minutes(sg.spindle_rpm))
                    self.seg_inv_n[pi, si] = 1.0 / tool.taylor_n

        # --- per machine constants ----------------------------------------------------------
        a_max = max(len(m.programs) for m in factory.machines)
        self.allowed = np.zeros((n, a_max), dtype=np.int64)
        self.n_allowed = np.zeros(n, dtype=np.int64)
        t_max = max(len(k.tools) for k in kinds)
        self.vb_limit = np.full((n, t_max + 1), 0.3)
        self.has_axis = np.zeros((n, 5), dtype=np.bool_)
        self.rated_kw = np.zeros(n)
        self.fault_p = np.zeros(n)
        self.warn_p = np.zeros(n)
        self._faults: dict[str, list[AlarmSpec]] = {}
        self._warnings: dict[str, list[AlarmSpec]] = {}
        self._breakage: dict[str, AlarmSpec] = {}
        for kn in kind_names:
            kind = KINDS[kn]
            self._faults[kn] = [a for a in kind.alarms if a.level == "FAULT" and a.rate_per_h > 0]
            self._warnings[kn] = [a for a in kind.alarms if a.level == "WARNING"]
            self._breakage[kn] = next(a for a in kind.alarms if a.code == kind.breakage_code)
        for i, (spec, kind) in enumerate(zip(factory.machines, kinds, strict=True)):
            idx = [prog_index[(kind.name, name)] for name in spec.programs]
            self.allowed[i, : len(idx)] = idx
            self.n_allowed[i] = len(idx)
            for tl in kind.tools:
                self.vb_limit[i, tl.number] = tl.vb_limit_mm
            for ax in kind.axes:
                self.has_axis[i, "xyzac".index(ax)] = True
            self.rated_kw[i] = kind.rated_power_kw
            self.fault_p[i] = sum(a.rate_per_h for a in self._faults[kind.name]) / 3600 * self.dt
            self.warn_p[i] = sum(a.rate_per_h for a in self._warnings[kind.name]) / 3600 * self.dt
        self.warm_s = rng.uniform(*p.warm_up_min, n) * 60.0
        self.cool_s = rng.uniform(*p.cool_down_min, n) * 60.0
        self.through_breaks = rng.random(n) < p.through_breaks

        # --- state ------------------------------------------------------------------------------
        self.phase = np.full(n, OFF, dtype=np.int64)
        self.left = np.zeros(n, dtype=np.int64)  # ticks left in a timed activity
        self.prog = self.allowed[np.arange(n), (rng.random(n) * self.n_allowed).astype(np.int64)]
        self.seg = np.zeros(n, dtype=np.int64)
        self.progress = np.zeros(n)  # seconds of the current segment done (at 100 % feed)
        self.tool = self.seg_tool[self.prog, 0].copy()
        self.job_left = rng.integers(1, p.job_quantity[1], n)
        self.sovr = np.full(n, 100.0)
        self.fovr = np.full(n, 100.0)
        self.life = rng.uniform(0.0, 0.85, (n, t_max + 1))
        self.scatter = np.exp(0.15 * rng.standard_normal((n, t_max + 1)))
        self.cut_s = np.zeros((n, t_max + 1))  # seconds in cut of the tool now mounted
        self.part_count = rng.integers(0, 5000, n)
        self.part_bad = (self.part_count * rng.uniform(0.0, 0.02, n)).astype(np.int64)
        self.estop = np.zeros(n, dtype=np.bool_)
        self.cycle_start = np.zeros(n)
        self.fault_spec: list[AlarmSpec | None] = [None] * n
        self.warn_spec: list[AlarmSpec | None] = [None] * n
        self.warn_left = np.zeros(n, dtype=np.int64)
        self.broken_tool = np.zeros(n, dtype=np.int64)  # tool to replace when a fault clears
        self.pos = np.zeros((n, 5))
        self.pos[:, 2] = 400.0
        self.execution = EXEC_OF[self.phase]
        self.mode = MODE_OF[self.phase]
        self.functional = FUNC_OF[self.phase]

    # ------------------------------------------------------------------------------------------
    @property
    def time(self) -> float:
        """Epoch time (s) of the next tick to be stepped."""
        return self.t0 + self.tick * self.dt

    def ticks(self, seconds: FloatArray | float) -> IntArray:
        """Durations in seconds as whole ticks, at least one."""
        return np.maximum(1, np.rint(np.asarray(seconds) / self.dt)).astype(np.int64)

    def vb(self) -> FloatArray:
        """True flank wear (mm) of every tool, shape (N, T+1); column 0 unused."""
        return vb_of_life(self.life, self.vb_limit)

    def _start_cycle(self, idx: IntArray, t: float) -> None:
        self.phase[idx] = CYCLE
        self.seg[idx] = 0
        self.progress[idx] = 0.0
        self.cycle_start[idx] = t
        self.tool[idx] = self.seg_tool[self.prog[idx], 0]

    def _interrupt(self, rep: StepReport, idx: IntArray, t: float, why: str) -> None:
        for m in idx.tolist():
            rep.cycles.append(
                CycleRecord(
                    m,
                    self.program_names[self.prog[m]],
                    float(self.cycle_start[m]),
                    t,
                    "interrupted",
                    why,
                    0,
                    0,
                )
            )

    def _change_tools(
        self, rep: StepReport, m: int, tools: list[int], reason: str, t: float
    ) -> None:
        for tl in tools:
            vb = float(vb_of_life(self.life[m, tl], self.vb_limit[m, tl]))
            rep.tool_changes.append(ToolChange(m, tl, reason, vb, float(self.cut_s[m, tl]) / 60, t))
            self.life[m, tl] = 0.0
            self.cut_s[m, tl] = 0.0
            self.scatter[m, tl] = math.exp(0.15 * float(self.rng.standard_normal()))

    def step(self, power_allowed: bool = True) -> StepReport:
        """Advance every machine to the next tick and return what happened at its start.

        ``power_allowed`` False keeps every machine that is idle or off powered down (used to end
        a run with every machine offline).
        """
        p = self.params
        rng = self.rng
        k = self.tick
        t = self.t0 + k * self.dt
        dt = self.dt
        n = self.n
        cal = self.factory.calendar.state(t)
        ph = self.phase
        on_list: list[int] = []
        off_list: list[int] = []
        rep = StepReport(k, t, np.zeros(0, np.int64), np.zeros(0, np.int64))

        if k > 0:
            # 1. integrate the tick that just ended: cycle progress and wear.
            cyc = np.flatnonzero(ph == CYCLE)
            if cyc.size:
                pr, sg = self.prog[cyc], self.seg[cyc]
                self.progress[cyc] += dt * self.fovr[cyc] / 100.0
                cut = self.seg_cut[pr, sg]
                if cut.any():
                    mc, pc, sc = cyc[cut], pr[cut], sg[cut]
                    tl = self.seg_tool[pc, sc]
                    speed = (self.sovr[mc] / 100.0) ** self.seg_inv_n[pc, sc]
                    self.life[mc, tl] += (
                        dt * self.seg_life_rate[pc, sc] * speed / self.scatter[mc, tl]
                    )
                    self.cut_s[mc, tl] += dt
            # 2. timed activities that end now.
            timed = self.left > 0
            self.left[timed] -= 1
            done = np.flatnonzero(timed & (self.left == 0))
            for m in done.tolist():
                a = ph[m]
                if a == SETUP:
                    ph[m] = PROVE
                    self.left[m] = self.ticks(rng.uniform(*p.prove_s))[()]
                elif a in (HOLD, STOP):
                    ph[m] = CYCLE
                elif a == FAULT:
                    spec = self.fault_spec[m]
                    assert spec is not None
                    rep.alarms.append(AlarmChange(m, spec, False, t))
                    self.fault_spec[m] = None
                    if self.broken_tool[m]:
                        self._change_tools(rep, m, [int(self.broken_tool[m])], "breakage", t)
                        self.broken_tool[m] = 0
                    ph[m] = IDLE
                elif a == ESTOP:
                    self.estop[m] = False
                    ph[m] = IDLE
                elif a == WAIT:
                    self._start_cycle(np.array([m]), t)
                else:  # PROVE, UNLOAD
                    ph[m] = IDLE
            # 3. segment and cycle completions of the machines that were cutting.
            if cyc.size:
                fin = cyc[(ph[cyc] == CYCLE) & (self.progress[cyc] >= self.seg_secs[pr, sg] - 1e-9)]
                if fin.size:
                    self.seg[fin] += 1
                    self.progress[fin] = 0.0
                    over = self.seg[fin] >= self.nseg[self.prog[fin]]
                    going = fin[~over]
                    self.tool[going] = self.seg_tool[self.prog[going], self.seg[going]]
                    # Tool life management at the tool call: an expired tool is swapped for its
                    # sister tool from the magazine, so no segment starts with a worn-out tool.
                    expired = going[self.life[going, self.tool[going]] >= 1.0]
                    for m in expired.tolist():
                        self._change_tools(rep, m, [int(self.tool[m])], "life_limit", t)
                    for m in fin[over].tolist():
                        self._complete_cycle(rep, m, t)

        # 4. power on: the calendar's power window per machine.
        want = (
            np.full(n, cal.in_block) | (cal.to_start <= self.warm_s) | (cal.since_end < self.cool_s)
        )
        if not power_allowed:
            want[:] = False
        may_start = (
            self.through_breaks if cal.in_break else np.ones(n, dtype=np.bool_)
        ) & cal.in_block
        up = np.flatnonzero((ph == OFF) & want)
        if up.size:
            ph[up] = IDLE
            on_list = up.tolist()
        # 5. idle machines: power off, start a job (setup), wait for material or start a cycle.
        idle = np.flatnonzero(ph == IDLE)
        if idle.size:
            down = idle[~want[idle]]
            if down.size:
                ph[down] = OFF
                off_list = down.tolist()
                for m in off_list:
                    if self.warn_spec[m] is not None:
                        rep.alarms.append(AlarmChange(m, self.warn_spec[m], False, t))  # type: ignore[arg-type]
                        self.warn_spec[m] = None
                        self.warn_left[m] = 0
            go = idle[want[idle] & may_start[idle]]
            if go.size:
                # Decided before the new jobs get their quantity, so they go to setup, not to a
                # cycle straight away.
                job_done = self.job_left[go] <= 0
                new_job = go[job_done]
                if new_job.size:
                    c = new_job.size
                    pick = (rng.random(c) * self.n_allowed[new_job]).astype(np.int64)
                    self.prog[new_job] = self.allowed[new_job, pick]
                    self.job_left[new_job] = rng.integers(*p.job_quantity, c)
                    odd = rng.random((2, c)) < 0.2
                    self.sovr[new_job] = np.where(odd[0], rng.integers(16, 25, c) * 5.0, 100.0)
                    self.fovr[new_job] = np.where(odd[1], rng.integers(16, 25, c) * 5.0, 100.0)
                    ph[new_job] = SETUP
                    self.left[new_job] = self.ticks(_lognormal(rng, p.setup_median_s, c))
                run = go[~job_done]
                if run.size:
                    wait = rng.random(run.size) < p.wait_probability
                    w = run[wait]
                    ph[w] = WAIT
                    self.left[w] = self.ticks(rng.uniform(*p.wait_s, w.size))
                    self._start_cycle(run[~wait], t)

        # 6. hazards in cycle: breakage, fault, emergency stop, feed hold, operator stop.
        r = rng.random((6, n))
        # Only cycles that have run since an earlier tick: a cycle started at this tick is ACTIVE
        # for at least this tick (struck at its first instant it would never show ACTIVE on the
        # wire, or be a zero-length interrupted cycle).
        cyc = np.flatnonzero((ph == CYCLE) & (self.cycle_start < t))
        if cyc.size:
            h = dt / 3600.0
            cutting = self.seg_cut[self.prog[cyc], self.seg[cyc]]
            u = self.life[cyc, self.tool[cyc]]
            brk = cutting & (r[0, cyc] < p.breakage_per_h * h * (1.0 + 30.0 * u**4))
            flt = ~brk & (r[1, cyc] < self.fault_p[cyc])
            est = ~brk & ~flt & (r[2, cyc] < p.estop_per_h * h)
            hld = ~brk & ~flt & ~est & (r[3, cyc] < p.hold_per_h * h)
            stp = ~brk & ~flt & ~est & ~hld & (r[4, cyc] < p.stop_per_h * h)
            for m in cyc[brk | flt].tolist():
                kn = self.kinds[m].name
                if brk[np.searchsorted(cyc, m)]:
                    spec = self._breakage[kn]
                    self.broken_tool[m] = self.tool[m]
                    why = "breakage"
                else:
                    faults = self._faults[kn]
                    w = np.array([a.rate_per_h for a in faults])
                    spec = faults[int(rng.choice(len(faults), p=w / w.sum()))]
                    why = "fault"
                self._interrupt(rep, np.array([m]), t, why)
                self.fault_spec[m] = spec
                rep.alarms.append(AlarmChange(m, spec, True, t))
                ph[m] = FAULT
                self.left[m] = self.ticks(_lognormal(rng, spec.median_s, 1))[0]
            e = cyc[est]
            if e.size:
                self._interrupt(rep, e, t, "estop")
                ph[e] = ESTOP
                self.estop[e] = True
                self.left[e] = self.ticks(_lognormal(rng, p.estop_median_s, e.size))
            hd = cyc[hld]
            ph[hd] = HOLD
            self.left[hd] = self.ticks(rng.uniform(*p.hold_s, hd.size))
            st = cyc[stp]
            ph[st] = STOP
            self.left[st] = self.ticks(_lognormal(rng, p.stop_median_s, st.size))

        # 7. warnings: raised on powered machines, cleared after their own time.
        wl = self.warn_left > 0
        self.warn_left[wl] -= 1
        for m in np.flatnonzero(wl & (self.warn_left == 0)).tolist():
            spec = self.warn_spec[m]
            assert spec is not None
            rep.alarms.append(AlarmChange(m, spec, False, t))
            self.warn_spec[m] = None
        new_w = np.flatnonzero((ph != OFF) & (self.warn_left == 0) & (r[5] < self.warn_p))
        for m in new_w.tolist():
            warns = self._warnings[self.kinds[m].name]
            w = np.array([a.rate_per_h for a in warns])
            spec = warns[int(rng.choice(len(warns), p=w / w.sum()))]
            self.warn_spec[m] = spec
            self.warn_left[m] = self.ticks(_lognormal(rng, spec.median_s, 1))[0]
            rep.alarms.append(AlarmChange(m, spec, True, t))

        self.execution = EXEC_OF[ph]
        self.mode = MODE_OF[ph]
        self.functional = FUNC_OF[ph]
        rep.powered_on = np.array(on_list, dtype=np.int64)
        rep.powered_off = np.array(off_list, dtype=np.int64)
        self.tick = k + 1
        return rep

    def _complete_cycle(self, rep: StepReport, m: int, t: float) -> None:
        p = self.params
        pi = int(self.prog[m])
        ppc = int(self.prog_ppc[pi])
        n_tools = self.life.shape[1] - 1
        mean_life = float(self.life[m, 1:].mean()) if n_tools else 0.0
        scrap = int((self.rng.random(ppc) < p.scrap_base + p.scrap_wear * mean_life).sum())
        self.part_count[m] += ppc
        self.part_bad[m] += scrap
        self.job_left[m] -= 1
        rep.cycles.append(
            CycleRecord(
                m,
                self.program_names[pi],
                float(self.cycle_start[m]),
                t,
                "completed",
                None,
                ppc - scrap,
                scrap,
            )
        )
        worn = np.flatnonzero(self.life[m] >= 1.0).tolist()
        self._change_tools(rep, m, worn, "life_limit", t)
        self.phase[m] = UNLOAD
        self.left[m] = self.ticks(self.prog_unload_s[pi] + p.tool_change_s * len(worn))[()]

    def sample(self, out: FloatArray | None = None) -> FloatArray:
        """Telemetry of every machine at the current tick, shape (N, len(SIGNALS)).

        Units: rev/min, % of rated, %, mm/min, %, kW, mm (x y z), degrees (a c). Axes a machine
        lacks are NaN; values of machines that are off are meaningless (not published).
        """
        n = self.n
        if out is None:
            out = np.empty((n, len(SIGNALS)))
        ph = self.phase
        pr = self.prog
        sg = np.minimum(self.seg, self.nseg[pr] - 1)
        z = self.noise.standard_normal((2, n))
        cyc = ph == CYCLE
        cut = cyc & self.seg_cut[pr, sg]
        spinning = cut | (ph == HOLD) & self.seg_cut[pr, sg]
        rpm = self.seg_rpm[pr, sg] * self.sovr / 100.0
        out[:, 0] = np.where(
            spinning, rpm * (1.0 + 0.002 * z[0]), np.where(ph == PROVE, 800.0, 0.0)
        )
        wear = vb_of_life(
            self.life[np.arange(n), self.tool], self.vb_limit[np.arange(n), self.tool]
        )
        load = self.seg_load[pr, sg] * (1.0 + 0.5 * wear / self.vb_limit[np.arange(n), self.tool])
        load *= (self.fovr / 100.0) ** 0.7 * (1.0 + 0.03 * z[1])
        out[:, 1] = np.where(cut, load, np.where(spinning | (ph == PROVE), 3.0, 0.0))
        out[:, 2] = self.sovr
        out[:, 3] = np.where(
            cut, self.seg_feed[pr, sg] * self.fovr / 100.0, np.where(ph == PROVE, 200.0, 0.0)
        )
        out[:, 4] = self.fovr
        out[:, 5] = np.where(ph == OFF, 0.0, 1.2 + self.rated_kw * out[:, 1] / 100.0)
        if cyc.any():
            c = np.flatnonzero(cyc)
            f = np.minimum(1.0, self.progress[c] / self.seg_secs[pr[c], sg[c]])
            q = self.seg_path[pr[c], sg[c]]
            ang = 2.0 * np.pi * q[:, 5] * f
            self.pos[c, 0] = q[:, 0] + q[:, 1] * f + q[:, 4] * np.cos(ang)
            self.pos[c, 1] = q[:, 2] + q[:, 3] * f + q[:, 4] * np.sin(ang)
            self.pos[c, 2] = q[:, 6] + q[:, 7] * f
            self.pos[c, 3] = q[:, 8] + q[:, 9] * f
            self.pos[c, 4] = np.mod(q[:, 10] + q[:, 11] * f, 360.0)
        out[:, 6:11] = np.where(self.has_axis, self.pos, np.nan)
        return out
