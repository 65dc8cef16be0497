"""Machine kinds, their tools and their NC program libraries.

A *program* is a fixed sequence of *segments*: cutting operations (one tool, a duration at 100 %
feed override, a spindle speed, a feed, a base spindle load and a toolpath) and the non-cutting
moves between them (tool changes, rapids). The simulator runs a program by walking its segments;
nothing here is random at run time.

The built-in library is generated once per kind from a fixed seed, so program ``o5101`` on a
five-axis machine is the same in every run and every factory: later platform tests may rely on its
ideal cycle time (:attr:`Program.ideal_cycle_s`).
"""

from __future__ import annotations

__all__ = [
    "KINDS",
    "AlarmSpec",
    "MachineKind",
    "Program",
    "Segment",
    "Tool",
    "get_kind",
]

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class Tool:
    """A cutting tool in the magazine.

    ``diameter_mm`` sets the cutting speed V = pi D N / 1000 (m/min). Taylor's V T^n = C gives the
    expected life T (minutes in cut) at speed V; ``taylor_c`` is in m/min. ``vb_limit_mm`` is the
    flank wear land at which the tool is changed (the life limit).
    """

    number: int
    diameter_mm: float
    taylor_n: float
    taylor_c: float
    vb_limit_mm: float = 0.3

    def life_minutes(self, spindle_rpm: float) -> float:
        """Expected life in minutes of cutting at ``spindle_rpm`` (Taylor: T = (C / V)^(1/n))."""
        v = math.pi * self.diameter_mm * spindle_rpm / 1000.0
        return float((self.taylor_c / v) ** (1.0 / self.taylor_n))


@dataclass(frozen=True, slots=True)
class Segment:
    """One step of a program.

    ``seconds`` is the duration at 100 % feed override; ``cutting`` says whether the tool is in
    the material (wear grows, load rises with wear). ``path`` holds the parametric toolpath with
    progress f in [0, 1]: X = x0 + ax f + r cos(2 pi w f), Y = y0 + ay f + r sin(2 pi w f),
    Z = z0 + az f, A = a0 + aa f, C = c0 + ac f (mm and degrees): ``(x0, ax, y0, ay, r, w, z0, az,
    a0, aa, c0, ac)``.
    """

    name: str
    tool: int
    seconds: float
    spindle_rpm: float
    feed_mm_min: float
    load_pct: float
    cutting: bool
    path: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Program:
    """An NC program: segments run in order; one cycle makes ``parts_per_cycle`` parts."""

    name: str
    segments: tuple[Segment, ...]
    parts_per_cycle: int = 1
    load_unload_s: float = 45.0

    @property
    def ideal_cycle_s(self) -> float:
        """Cycle time at 100 % overrides without interruptions (seconds), load/unload excluded."""
        return float(sum(s.seconds for s in self.segments))


@dataclass(frozen=True, slots=True)
class AlarmSpec:
    """An alarm the controller can raise: native ``code``, ``level`` (FAULT stops the machine),
    MTConnect ``component``, ``text``, rate per hour of cycle time (FAULT) or powered time
    (WARNING), and the median repair / clear time in seconds (lognormal, sigma 0.6)."""

    code: str
    level: str
    component: str
    text: str
    rate_per_h: float
    median_s: float


@dataclass(frozen=True, slots=True)
class MachineKind:
    """A machine type: controller identity, axes, tools, programs and alarm catalogue."""

    name: str
    model: str
    controller_kind: str
    axes: tuple[str, ...]
    tools: tuple[Tool, ...]
    programs: tuple[Program, ...]
    alarms: tuple[AlarmSpec, ...]
    rated_power_kw: float
    breakage_code: str = field(default="2103")

    def tool(self, number: int) -> Tool:
        """The tool with this number (``KeyError`` if the magazine has none)."""
        for t in self.tools:
            if t.number == number:
                return t
        raise KeyError(number)


_AXES_MILL = ("x", "y", "z")
_AXES_5X = ("x", "y", "z", "a", "c")
_AXES_LATHE = ("x", "z")

_COMMON_ALARMS = (
    AlarmSpec("1010", "FAULT", "x", "Servo drive X overcurrent", 0.05, 900.0),
    AlarmSpec("1011", "FAULT", "y", "Servo drive Y following error too large", 0.04, 600.0),
    AlarmSpec("2001", "FAULT", "spindle", "Spindle overload", 0.06, 420.0),
    AlarmSpec("3004", "FAULT", "controller", "Door interlock open during cycle", 0.08, 120.0),
    AlarmSpec("4002", "FAULT", "controller", "Hydraulic pressure low", 0.03, 1500.0),
    AlarmSpec("5001", "WARNING", "controller", "Lubrication oil level low", 0.15, 1200.0),
    AlarmSpec("5003", "WARNING", "coolant", "Coolant concentration out of range", 0.10, 1800.0),
    AlarmSpec("5010", "WARNING", "spindle", "Spindle temperature high", 0.08, 600.0),
)
_BREAKAGE = AlarmSpec("2103", "FAULT", "spindle", "Tool breakage detected", 0.0, 600.0)


def _tools(rng: np.random.Generator, count: int, lathe: bool) -> tuple[Tool, ...]:
    out = []
    for i in range(count):
        d = 25.0 if lathe else float(rng.choice([6.0, 8.0, 10.0, 12.0, 16.0, 20.0, 32.0]))
        n = float(rng.uniform(0.22, 0.35))  # carbide / coated carbide (tool-wear.md)
        out.append(Tool(number=i + 1, diameter_mm=d, taylor_n=n, taylor_c=0.0, vb_limit_mm=0.3))
    return tuple(out)


def _calibrate(tool: Tool, rpm: float, life_min: float) -> Tool:
    """Set Taylor's C so that the tool lasts ``life_min`` minutes in cut at ``rpm``: C = V T^n."""
    v = math.pi * tool.diameter_mm * rpm / 1000.0
    return Tool(
        tool.number, tool.diameter_mm, tool.taylor_n, v * life_min**tool.taylor_n, tool.vb_limit_mm
    )


def _library(
    kind: str, seed: int, n_programs: int, n_tools: int, axes: tuple[str, ...], lathe: bool
) -> tuple[tuple[Tool, ...], tuple[Program, ...]]:
    """Generate a deterministic program library and calibrated tools for one machine kind."""
    rng = np.random.default_rng(seed)
    tools = list(_tools(rng, n_tools, lathe))
    # Nominal speed per tool, chosen so that V is in a carbide range (80-250 m/min).
    rpm_of = {}
    for t in tools:
        v = float(rng.uniform(80.0, 250.0))
        rpm_of[t.number] = min(12000.0, 1000.0 * v / (math.pi * t.diameter_mm))
    # Tool lives of 25-90 min in cut: several changes per machine per shift.
    tools = [_calibrate(t, rpm_of[t.number], float(rng.uniform(25.0, 90.0))) for t in tools]
    programs = []
    prefix = {"five_axis": "o5", "mill": "o3", "lathe": "o7"}[kind]
    for p in range(n_programs):
        n_ops = int(rng.integers(3, 7))
        used = rng.choice(n_tools, size=n_ops, replace=True) + 1
        segs: list[Segment] = []
        prev_tool = 0
        for k, tn in enumerate(used):
            tn = int(tn)
            if tn != prev_tool:
                segs.append(
                    Segment(
                        f"T{tn} M06",
                        tn,
                        float(rng.uniform(3.0, 6.0)),
                        0.0,
                        0.0,
                        0.0,
                        False,
                        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 400.0, 0.0, 0.0, 0.0, 0.0, 0.0),
                    )
                )
                prev_tool = tn
            rpm = rpm_of[tn] * float(rng.uniform(0.85, 1.1))
            secs = float(rng.uniform(25.0, 240.0))
            feed = float(rng.uniform(150.0, 2500.0)) if not lathe else float(rng.uniform(60, 400))
            load = float(rng.uniform(18.0, 65.0))
            if lathe:
                x0 = float(rng.uniform(20.0, 120.0))
                path = (
                    x0,
                    -float(rng.uniform(2.0, 15.0)),
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    -float(rng.uniform(20.0, 150.0)),
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                )
            else:
                five = "a" in axes
                path = (
                    float(rng.uniform(-200, 200)),
                    float(rng.uniform(-100, 100)),
                    float(rng.uniform(-150, 150)),
                    float(rng.uniform(-80, 80)),
                    float(rng.uniform(5.0, 60.0)),
                    float(rng.integers(1, 12)),
                    float(rng.uniform(-300, -50)),
                    float(rng.uniform(-20, 0)),
                    float(rng.uniform(-30, 30)) if five else 0.0,
                    float(rng.uniform(-60, 60)) if five else 0.0,
                    float(rng.uniform(0, 360)) if five else 0.0,
                    float(rng.uniform(-360, 360)) if five else 0.0,
                )
            segs.append(Segment(f"OP{(k + 1) * 10}", tn, secs, rpm, feed, load, True, path))
        # Return to the tool-change position at the end of the cycle.
        segs.append(
            Segment(
                "G28",
                prev_tool,
                4.0,
                0.0,
                0.0,
                0.0,
                False,
                (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 400.0, 0.0, 0.0, 0.0, 0.0, 0.0),
            )
        )
        programs.append(
            Program(
                f"{prefix}{101 + p:03d}",
                tuple(segs),
                parts_per_cycle=1,
                load_unload_s=float(rng.uniform(25.0, 90.0)),
            )
        )
    return tuple(tools), tuple(programs)


def _kind(
    name: str, model: str, controller_kind: str, axes: tuple[str, ...], seed: int, power_kw: float
) -> MachineKind:
    lathe = name == "lathe"
    tools, programs = _library(
        name, seed, n_programs=6, n_tools=10 if lathe else 16, axes=axes, lathe=lathe
    )
    return MachineKind(
        name,
        model,
        controller_kind,
        axes,
        tools,
        programs,
        (*_COMMON_ALARMS, _BREAKAGE),
        power_kw,
        _BREAKAGE.code,
    )


#: The built-in machine kinds, by name: ``five_axis`` (i5 M8 five-axis machining centre),
#: ``mill`` (i5 M8 three-axis vertical machining centre), ``lathe`` (i5 T-series turning centre).
KINDS: dict[str, MachineKind] = {
    "five_axis": _kind("five_axis", "M8", "five_axis_mc", _AXES_5X, 5101, 30.0),
    "mill": _kind("mill", "M8", "vertical_mc", _AXES_MILL, 3101, 18.5),
    "lathe": _kind("lathe", "T5", "lathe", _AXES_LATHE, 7101, 15.0),
}


def get_kind(name: str) -> MachineKind:
    """The built-in kind called ``name``; ``ValueError`` listing the known kinds otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown machine kind {name!r}; known: {', '.join(KINDS)}") from None
