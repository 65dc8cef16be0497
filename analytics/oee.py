"""Utilisation and OEE: the ISO 22400-2 time model and KPIs, MTConnect in-cycle utilisation, the
classical (Nakajima / InfluxDB) OEE, microstops and grouping. Formulas: docs/kpis.md.

All times are float seconds. Every result carries a ``convention`` string naming its definition.
Time with no data (``UNKNOWN``) is reported as ``unknown`` and left out of every ratio's
numerator *and* denominator; ``coverage`` says how much of the planned time had data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from analytics.intervals import IntervalSet
from analytics.states import UNKNOWN, StateIntervals, combine, state_intervals, to_seconds

__all__ = [
    "CATEGORIES",
    "ClassicalOee",
    "Iso22400Kpis",
    "Microstops",
    "TimeModel",
    "Utilisation",
    "classical_oee",
    "classify_iso22400",
    "counter_increments",
    "in_cycle_utilisation",
    "iso22400_kpis",
    "kpis_by_window",
    "microstops",
    "time_by_key",
    "time_model",
]

FloatArray = NDArray[np.float64]

# OPC UA for Machine Tools Annex C mapping of machine time onto ISO 22400 categories.
CATEGORIES: tuple[str, ...] = ("APT", "ASUT", "ADET", "ADOT")
_APT, _ASUT, _ADET, _ADOT = range(4)


def _inside(s: IntervalSet | None, t: FloatArray) -> NDArray[np.bool_]:
    if s is None or s.starts.size == 0:
        return np.zeros(t.shape, dtype=bool)
    k = np.searchsorted(s.starts, t, side="right") - 1
    return (k >= 0) & (t < s.ends[np.maximum(k, 0)])


def classify_iso22400(
    execution: StateIntervals,
    mode: StateIntervals | None = None,
    fault: IntervalSet | None = None,
    setup: IntervalSet | None = None,
) -> StateIntervals:
    """Map machine state onto APT / ASUT / ADET / ADOT (vocabulary ``CATEGORIES``) or UNKNOWN.

    Rules, first match wins: execution (or, when given, controller mode) unknown -> UNKNOWN;
    a FAULT condition or emergency stop active (``fault``) -> ADET; ACTIVE during ``setup`` or
    in a mode other than AUTOMATIC -> ASUT; ACTIVE -> APT; anything else (READY, STOPPED,
    FEED_HOLD, INTERRUPTED without a fault, WAIT, ...) -> ADOT.
    """
    lo, hi = float(execution.start[0]), float(execution.end[-1])
    parts = [execution.start]
    if mode is not None:
        if mode.start[0] != lo or mode.end[-1] != hi:
            raise ValueError("mode must cover the same window as execution")
        parts.append(mode.start)
    for extra in (fault, setup):
        if extra is not None:
            parts.extend([extra.starts, extra.ends])
    cuts = np.unique(np.clip(np.concatenate(parts), lo, hi))
    cuts = cuts[cuts < hi]
    ex = execution.code[np.searchsorted(execution.start, cuts, side="right") - 1]
    active = ex == execution.codes_of(["ACTIVE"])[0]
    unknown = ex == UNKNOWN
    setup_like = _inside(setup, cuts)
    if mode is not None:
        md = mode.code[np.searchsorted(mode.start, cuts, side="right") - 1]
        unknown |= md == UNKNOWN
        setup_like |= (md != mode.codes_of(["AUTOMATIC"])[0]) & (md != UNKNOWN)
    cat = np.full(cuts.shape, _ADOT, dtype=np.int64)
    cat[active] = _APT
    cat[active & setup_like] = _ASUT
    cat[_inside(fault, cuts)] = _ADET
    cat[unknown] = UNKNOWN
    change = np.concatenate([[True], cat[1:] != cat[:-1]])
    run_end = np.concatenate([cuts[change][1:], [hi]])
    return StateIntervals(cuts[change], run_end, cat[change], CATEGORIES)


@dataclass(frozen=True, slots=True)
class TimeModel:
    """ISO 22400-2 times in seconds for one work unit and period.

    APT/ASUT/ADET/ADOT and ``unknown`` are counted inside PBT only; ``APT_outside_plan`` is
    production outside the planned busy time (overtime, breaks worked through).
    """

    POT: float
    planned_down_time: float
    PBT: float
    APT: float
    ASUT: float
    ADET: float
    ADOT: float
    unknown: float
    APT_outside_plan: float

    @property
    def AUPT(self) -> float:  # noqa: N802 - the standard's symbol
        """Actual unit processing time = APT + ASUT."""
        return self.APT + self.ASUT

    @property
    def AUBT(self) -> float:  # noqa: N802 - the standard's symbol
        """Actual unit busy time = AUPT + ADET."""
        return self.AUPT + self.ADET

    @property
    def PBT_known(self) -> float:  # noqa: N802 - the standard's symbol
        """Planned busy time with data: PBT - unknown."""
        return self.PBT - self.unknown

    def to_dict(self) -> dict[str, float]:
        """JSON-ready dict including the derived AUPT, AUBT and PBT_known."""
        return asdict(self) | {"AUPT": self.AUPT, "AUBT": self.AUBT, "PBT_known": self.PBT_known}


def time_model(
    categories: StateIntervals, pot: IntervalSet, planned_down_time: IntervalSet
) -> TimeModel:
    """Build the time model from ``classify_iso22400`` output and the calendar's POT and planned
    down time (both interval sets, typically from ``ShiftCalendar``)."""
    if categories.vocabulary != CATEGORIES:
        raise ValueError("categories must come from classify_iso22400")
    window = IntervalSet.span(float(categories.start[0]), float(categories.end[-1]))
    pot_w = pot.intersect(window)
    pdt = planned_down_time.intersect(pot_w)
    pbt = pot_w.subtract(pdt)
    inside = categories.durations(pbt)
    apt_all = categories.durations()["APT"]
    return TimeModel(
        POT=pot_w.total,
        planned_down_time=pdt.total,
        PBT=pbt.total,
        APT=inside["APT"],
        ASUT=inside["ASUT"],
        ADET=inside["ADET"],
        ADOT=inside["ADOT"],
        unknown=inside["unknown"],
        APT_outside_plan=apt_all - inside["APT"],
    )


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


@dataclass(frozen=True, slots=True)
class Iso22400Kpis:
    """ISO 22400-2 KPIs; a ratio whose denominator is zero is None. ``availability_min`` /
    ``availability_max`` bound the availability if unknown time was all down or all productive."""

    time: TimeModel
    produced: float
    good: float
    scrap: float
    rework: float
    ideal_cycle_time: float
    availability: float | None
    availability_min: float | None
    availability_max: float | None
    effectiveness: float | None
    quality_ratio: float | None
    oee: float | None
    utilisation_efficiency: float | None
    technical_efficiency: float | None
    setup_rate: float | None
    scrap_ratio: float | None
    coverage: float | None
    convention: str = "ISO 22400-2 (OPC UA Machine Tools Annex C state mapping)"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        d = asdict(self)
        d["time"] = self.time.to_dict()
        return d


def iso22400_kpis(
    tm: TimeModel,
    *,
    produced: float,
    ideal_cycle_time: float,
    scrap: float = 0.0,
    rework: float = 0.0,
) -> Iso22400Kpis:
    """KPIs from a time model and the period's quantities.

    ``produced`` PQ, ``scrap`` SQ (GQ = PQ - SQ), ``rework`` RQ (reported, not subtracted),
    ``ideal_cycle_time`` PRU in seconds per unit.
    """
    if produced < 0 or scrap < 0 or rework < 0:
        raise ValueError("quantities must be >= 0")
    if scrap > produced:
        raise ValueError(f"scrap ({scrap}) exceeds the produced quantity ({produced})")
    if ideal_cycle_time <= 0:
        raise ValueError(f"ideal_cycle_time must be > 0 s, got {ideal_cycle_time}")
    good = produced - scrap
    availability = _ratio(tm.APT, tm.PBT_known)
    effectiveness = _ratio(ideal_cycle_time * produced, tm.APT)
    quality = _ratio(good, produced)
    oee = None
    if availability is not None and effectiveness is not None and quality is not None:
        oee = availability * effectiveness * quality
    elif tm.PBT_known > 0 and tm.APT == 0:
        oee = 0.0  # nothing was produced in planned time
    return Iso22400Kpis(
        time=tm,
        produced=produced,
        good=good,
        scrap=scrap,
        rework=rework,
        ideal_cycle_time=ideal_cycle_time,
        availability=availability,
        availability_min=_ratio(tm.APT, tm.PBT),
        availability_max=_ratio(tm.APT + tm.unknown, tm.PBT),
        effectiveness=effectiveness,
        quality_ratio=quality,
        oee=oee,
        utilisation_efficiency=_ratio(tm.APT, tm.AUBT),
        technical_efficiency=_ratio(tm.APT, tm.APT + tm.ADET),
        setup_rate=_ratio(tm.ASUT, tm.AUPT),
        scrap_ratio=_ratio(scrap, produced),
        coverage=_ratio(tm.PBT_known, tm.PBT),
    )


def counter_increments(timestamps: ArrayLike, values: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Per-reading increments of a cumulative counter (part count, scrap count).

    Returns (times (n-1,), increments (n-1,)): max(v[k] - v[k-1], 0) stamped at reading k, in time
    order. A drop is a counter reset, not negative production; parts made between the last
    reading before a reset and the reset itself cannot be known and are not invented.
    """
    t = to_seconds(timestamps)
    v = np.asarray(values, dtype=np.float64)
    if v.shape != t.shape:
        raise ValueError(f"timestamps and values differ in length: {t.shape} and {v.shape}")
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    return t[1:], np.maximum(np.diff(v), 0.0)


def _sum_in(times: FloatArray, amounts: FloatArray, within: IntervalSet) -> float:
    return float(amounts[_inside(within, times)].sum())


def kpis_by_window(
    categories: StateIntervals,
    windows: Sequence[tuple[str, IntervalSet, IntervalSet]],
    *,
    part_times: FloatArray,
    parts: FloatArray,
    ideal_cycle_time: float,
    scrap_times: FloatArray | None = None,
    scrap: FloatArray | None = None,
) -> dict[str, Iso22400Kpis]:
    """ISO 22400 KPIs per window (a shift, a day, ...): ``windows`` holds (label, POT, planned
    down time); part/scrap increments (from ``counter_increments``) are counted where they fall
    inside the window's PBT."""
    out: dict[str, Iso22400Kpis] = {}
    for label, pot, pdt in windows:
        tm = time_model(categories, pot, pdt)
        pbt = pot.subtract(pdt)
        produced = _sum_in(part_times, parts, pbt)
        sq = 0.0 if scrap is None or scrap_times is None else _sum_in(scrap_times, scrap, pbt)
        out[label] = iso22400_kpis(
            tm, produced=produced, scrap=min(sq, produced), ideal_cycle_time=ideal_cycle_time
        )
    return out


def time_by_key(
    states: StateIntervals, keys: StateIntervals, within: IntervalSet | None = None
) -> dict[str, dict[str, float]]:
    """Seconds per (key word, state word), e.g. per program: ``keys`` is a program stream coded
    against the list of program names. Unknown keys are grouped under ``"unknown"``."""
    starts, ends, codes = combine(states, keys)
    dur = ends - starts if within is None else within.overlap(starts, ends)
    ns, nk = len(states.vocabulary) + 1, len(keys.vocabulary) + 1
    s_idx = np.where(codes[0] == UNKNOWN, ns - 1, codes[0])
    k_idx = np.where(codes[1] == UNKNOWN, nk - 1, codes[1])
    table = np.bincount(k_idx * ns + s_idx, weights=dur, minlength=nk * ns).reshape(nk, ns)
    s_words = [*states.vocabulary, "unknown"]
    k_words = [*keys.vocabulary, "unknown"]
    return {
        k_words[i]: {s_words[j]: float(table[i, j]) for j in range(ns) if table[i, j] > 0}
        for i in range(nk)
        if table[i].sum() > 0
    }


@dataclass(frozen=True, slots=True)
class Utilisation:
    """Share of the selected time spent in the chosen states (MTConnect / MachineMetrics style).

    ``utilisation`` = in_state / known (None without data); ``unknown`` is reported, not counted.
    """

    in_state: float
    known: float
    unknown: float
    utilisation: float | None
    states: tuple[str, ...]
    convention: str = "MTConnect in-cycle utilisation: time in states / time with data"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        return asdict(self)


def in_cycle_utilisation(
    execution: StateIntervals, within: IntervalSet, states: Sequence[str] = ("ACTIVE",)
) -> Utilisation:
    """In-cycle utilisation over ``within`` (e.g. PBT, or the whole day for 24/7 figures).

    Use another stream and word set for the variants: spindle rotating, in cut.
    """
    d = execution.durations(within)
    in_state = sum(d[w] for w in states)
    unknown = d["unknown"]
    known = (
        within.intersect(
            IntervalSet.span(float(execution.start[0]), float(execution.end[-1]))
        ).total
        - unknown
    )
    return Utilisation(
        in_state=in_state,
        known=known,
        unknown=unknown,
        utilisation=_ratio(in_state, known),
        states=tuple(states),
    )


@dataclass(frozen=True, slots=True)
class ClassicalOee:
    """Classical (Nakajima) OEE as InfluxDB's OEE package computes it."""

    run_time: float
    planned_time: float
    planned_time_clamped: bool
    total_count: float
    bad_count: float
    availability: float | None
    performance: float | None
    quality: float | None
    oee: float | None
    convention: str = (
        "classical OEE: availability = run time / planned time, performance = count x ideal "
        "cycle / run time, quality = (count - bad) / count"
    )

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        return asdict(self)


def classical_oee(
    timestamps: ArrayLike,
    codes: ArrayLike,
    vocabulary: Sequence[str],
    *,
    start: float,
    end: float,
    total_count: float,
    bad_count: float,
    ideal_cycle_time: float,
    running: Sequence[str] = ("ACTIVE",),
    planned_time: float | None = None,
) -> ClassicalOee:
    """Classical OEE over [start, end).

    Run time: each event lasts until the next one, the last until ``end``; the state before the
    first event in the window is the last event before it when given, otherwise not running.
    ``planned_time`` (s) defaults to the window; a value longer than the window is clamped to it
    (time outside the window cannot have been observed) and ``planned_time_clamped`` says so.
    Counts are period totals (see ``counter_increments``).
    """
    window = end - start
    planned = window if planned_time is None else float(planned_time)
    if planned <= 0:
        raise ValueError(f"planned_time must be > 0 s, got {planned_time}")
    clamped = planned > window
    planned = min(planned, window)
    if bad_count > total_count or bad_count < 0:
        raise ValueError(f"bad_count must lie in [0, total_count], got {bad_count}")
    st = state_intervals(timestamps, codes, vocabulary, start=start, end=end, unknown=())
    run = sum(st.durations()[w] for w in running)
    availability = run / planned
    performance = _ratio(total_count * ideal_cycle_time, run)
    quality = _ratio(total_count - bad_count, total_count)
    oee = None
    if performance is not None and quality is not None:
        oee = availability * performance * quality
    return ClassicalOee(
        run_time=run,
        planned_time=planned,
        planned_time_clamped=clamped,
        total_count=total_count,
        bad_count=bad_count,
        availability=availability,
        performance=performance,
        quality=quality,
        oee=oee,
    )


@dataclass(frozen=True, slots=True)
class Microstops:
    """Stops shorter than ``threshold`` seconds between two running intervals (performance
    losses); ``starts`` and ``durations`` shape (k,)."""

    threshold: float
    count: int
    total: float
    starts: FloatArray
    durations: FloatArray

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        return {
            "threshold": self.threshold,
            "count": self.count,
            "total": self.total,
            "starts": self.starts.tolist(),
            "durations": self.durations.tolist(),
        }


def microstops(
    states: StateIntervals, threshold: float = 120.0, running: Sequence[str] = ("ACTIVE",)
) -> Microstops:
    """Find microstops: maximal runs of non-running time, with data throughout, that begin and
    end with running and last less than ``threshold`` seconds."""
    run_mask = np.isin(states.code, states.codes_of(running))
    # Label each maximal run of non-running intervals, then test its neighbours and content.
    stop = ~run_mask
    begins = stop & np.concatenate([[True], ~stop[:-1]])
    group = np.cumsum(begins) - 1
    idx = np.nonzero(stop)[0]
    if idx.size == 0:
        return Microstops(threshold, 0, 0.0, np.zeros(0), np.zeros(0))
    g = group[idx]
    n_groups = int(g.max()) + 1
    g_start = np.full(n_groups, np.inf)
    np.minimum.at(g_start, g, states.start[idx])
    g_end = np.zeros(n_groups)
    np.maximum.at(g_end, g, states.end[idx])
    has_unknown = np.zeros(n_groups, dtype=bool)
    np.logical_or.at(has_unknown, g, states.code[idx] == UNKNOWN)
    first = np.full(n_groups, states.code.size)
    np.minimum.at(first, g, idx)
    last = np.zeros(n_groups, dtype=np.int64)
    np.maximum.at(last, g, idx)
    before_ok = (first > 0) & run_mask[np.maximum(first - 1, 0)]
    after_ok = (last < states.code.size - 1) & run_mask[np.minimum(last + 1, states.code.size - 1)]
    dur = g_end - g_start
    ok = before_ok & after_ok & ~has_unknown & (dur < threshold)
    return Microstops(threshold, int(ok.sum()), float(dur[ok].sum()), g_start[ok], dur[ok])
