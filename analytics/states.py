"""State intervals from event streams (MTConnect Execution, ControllerMode, any coded state).

Events are (timestamp, code) pairs: timestamps as int64 nanoseconds or float seconds since the
epoch (or numpy datetime64), codes as small ints indexing a vocabulary list. Each state lasts
until the next event; the state in force at the window start is the last event at or before it.

Time without data is *unknown* (code ``UNKNOWN`` = -1): before the first event, after the
``until`` horizon (when the source was last heard from), and while the state is one of the
``unknown`` words (by default UNAVAILABLE). Unknown time is kept apart; no figure counts it as idle
or as running. Events out of order are sorted (stable, so for equal timestamps the later arrival
wins); duplicates and repeated states merge; zero-length states vanish.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from analytics.intervals import IntervalSet

__all__ = [
    "CONTROLLER_MODE",
    "EXECUTION",
    "UNKNOWN",
    "StateIntervals",
    "combine",
    "durations_by_group",
    "state_intervals",
    "to_seconds",
]

EXECUTION: tuple[str, ...] = (
    "READY", "ACTIVE", "INTERRUPTED", "FEED_HOLD", "STOPPED", "OPTIONAL_STOP", "PROGRAM_STOPPED",
    "PROGRAM_COMPLETED", "WAIT", "UNAVAILABLE",
)  # fmt: skip
CONTROLLER_MODE: tuple[str, ...] = (
    "AUTOMATIC", "MANUAL", "MANUAL_DATA_INPUT", "SEMI_AUTOMATIC", "EDIT", "UNAVAILABLE",
)  # fmt: skip
UNKNOWN = -1

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def to_seconds(t: ArrayLike, field: str = "timestamps") -> FloatArray:
    """Timestamps as float64 seconds since the epoch.

    Floats are seconds; datetime64 any unit; integers are int64 nanoseconds as stored by ingest
    when any magnitude reaches 1e14 (1e14 s is three million years, 1e14 ns one day after the
    epoch), otherwise seconds, so ``[0, 30, 60]`` in a test means seconds.
    """
    arr = np.asarray(t)
    if np.issubdtype(arr.dtype, np.datetime64):
        return arr.astype("datetime64[ns]").astype(np.int64) / 1e9
    if np.issubdtype(arr.dtype, np.integer):
        as_int = arr.astype(np.int64)
        if as_int.size and int(np.abs(as_int).max()) >= 10**14:
            return as_int / 1e9
        return as_int.astype(np.float64)
    if np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float64)
        if not np.all(np.isfinite(out)):
            raise ValueError(f"{field} contain NaN or infinite values")
        return out
    raise ValueError(f"{field} must be int64 ns, float seconds or datetime64, got {arr.dtype}")


@dataclass(frozen=True, slots=True)
class StateIntervals:
    """Consecutive intervals [start, end) with a state code each; shapes (k,), seconds.

    Intervals tile [window_start, window_end) exactly; ``code`` is an index into ``vocabulary``
    or ``UNKNOWN``.
    """

    start: FloatArray
    end: FloatArray
    code: IntArray
    vocabulary: tuple[str, ...]

    @property
    def duration(self) -> FloatArray:
        """Interval lengths (k,) in seconds."""
        d: FloatArray = self.end - self.start
        return d

    def codes_of(self, words: Sequence[str]) -> IntArray:
        """Vocabulary indices of ``words`` (ValueError naming an unknown word)."""
        missing = [w for w in words if w not in self.vocabulary]
        if missing:
            raise ValueError(f"state(s) {missing} not in the vocabulary {list(self.vocabulary)}")
        return np.array([self.vocabulary.index(w) for w in words], dtype=np.int64)

    def durations(self, within: IntervalSet | None = None) -> dict[str, float]:
        """Seconds per state word (and ``"unknown"``), optionally only inside ``within``."""
        d = self.duration if within is None else within.overlap(self.start, self.end)
        idx = np.where(self.code == UNKNOWN, len(self.vocabulary), self.code)
        totals = np.bincount(idx, weights=d, minlength=len(self.vocabulary) + 1)
        out = {w: float(totals[k]) for k, w in enumerate(self.vocabulary)}
        out["unknown"] = float(totals[-1])
        return out

    def where(self, words: Sequence[str]) -> IntervalSet:
        """The time spent in any of ``words``."""
        mask = np.isin(self.code, self.codes_of(words))
        return IntervalSet.from_intervals(self.start[mask], self.end[mask])

    def known(self) -> IntervalSet:
        """The time with data."""
        mask = self.code != UNKNOWN
        return IntervalSet.from_intervals(self.start[mask], self.end[mask])


def state_intervals(
    timestamps: ArrayLike,
    codes: ArrayLike,
    vocabulary: Sequence[str],
    *,
    start: float,
    end: float,
    until: float | None = None,
    unknown: Sequence[str] = ("UNAVAILABLE",),
) -> StateIntervals:
    """Turn events into state intervals tiling the window [start, end) (seconds).

    Args:
        timestamps: (n,) event times (see ``to_seconds``), any order.
        codes: (n,) ints in [0, len(vocabulary)).
        vocabulary: the state words.
        start, end: the window in seconds since the epoch.
        until: data horizon; after it (e.g. the gateway went silent) the state is unknown.
            Defaults to ``end``.
        unknown: words that mean "no data".
    """
    if not end > start:
        raise ValueError(f"window end {end} must be after its start {start}")
    t = to_seconds(timestamps)
    c = np.asarray(codes)
    if t.ndim != 1 or c.shape != t.shape:
        raise ValueError(
            f"timestamps and codes must be 1-D of equal length, got {t.shape} and {c.shape}"
        )
    if c.size and not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"codes must be integers indexing the vocabulary, got {c.dtype}")
    c = c.astype(np.int64)
    vocab = tuple(vocabulary)
    if c.size and (c.min() < 0 or c.max() >= len(vocab)):
        raise ValueError(f"codes must lie in [0, {len(vocab)}) for a vocabulary of {len(vocab)}")
    horizon = end if until is None else min(float(until), end)

    order = np.argsort(t, kind="stable")
    t, c = t[order], c[order]
    unknown_codes = [vocab.index(w) for w in unknown if w in vocab]
    c = np.where(np.isin(c, unknown_codes), UNKNOWN, c)
    # The state at the window start is the last event at or before it; earlier ones are moot.
    first = max(int(np.searchsorted(t, start, side="right")) - 1, 0)
    t, c = t[first:], c[first:]
    t = np.clip(t, start, None)
    keep = t < horizon
    t, c = t[keep], c[keep]
    # Events sharing a timestamp: the last one (latest arrival after the stable sort) wins.
    if t.size:
        last_at_time = np.concatenate([t[1:] != t[:-1], [True]])
        t, c = t[last_at_time], c[last_at_time]
    starts = (
        np.concatenate([[start], t, [horizon]]) if horizon < end else np.concatenate([[start], t])
    )
    labels = (
        np.concatenate([[UNKNOWN], c, [UNKNOWN]])
        if horizon < end
        else np.concatenate([[UNKNOWN], c])
    )
    ends = np.concatenate([starts[1:], [end]])
    keep = ends > starts
    starts, ends, labels = starts[keep], ends[keep], labels[keep]
    change = np.concatenate([[True], labels[1:] != labels[:-1]])
    run = np.cumsum(change) - 1
    merged_end = np.zeros(int(change.sum()))
    np.maximum.at(merged_end, run, ends)
    return StateIntervals(
        start=starts[change],
        end=merged_end,
        code=labels[change].astype(np.int64),
        vocabulary=vocab,
    )


def combine(*streams: StateIntervals) -> tuple[FloatArray, FloatArray, IntArray]:
    """Overlay several state streams on the union of their change points.

    Returns segment starts (s,), ends (s,) and codes (len(streams), s). All streams must tile
    the same window.
    """
    if not streams:
        raise ValueError("combine needs at least one stream")
    lo, hi = streams[0].start[0], streams[0].end[-1]
    for k, s in enumerate(streams):
        if s.start[0] != lo or s.end[-1] != hi:
            raise ValueError(f"stream {k} covers a different window than stream 0")
    cuts = np.unique(np.concatenate([s.start for s in streams]))
    ends = np.concatenate([cuts[1:], [hi]])
    codes = np.stack([s.code[np.searchsorted(s.start, cuts, side="right") - 1] for s in streams])
    return cuts, ends, codes


def durations_by_group(
    group: ArrayLike,
    timestamps: ArrayLike,
    codes: ArrayLike,
    n_groups: int,
    vocabulary: Sequence[str],
    *,
    start: float,
    end: float,
    unknown: Sequence[str] = ("UNAVAILABLE",),
) -> FloatArray:
    """Seconds per (group, state) in [start, end) for many machines at once.

    Same rules as ``state_intervals`` + ``durations`` (no ``until`` horizon), in one pass over all
    events: ``group`` (n,) ints in [0, n_groups) (e.g. machine index), ``timestamps`` and ``codes``
    (n,). Returns (n_groups, len(vocabulary) + 1); the last column is unknown time.
    """
    g = np.asarray(group, dtype=np.int64)
    t = to_seconds(timestamps)
    c = np.asarray(codes, dtype=np.int64)
    if not (g.shape == t.shape == c.shape) or t.ndim != 1:
        raise ValueError("group, timestamps and codes must be 1-D arrays of the same length")
    vocab = tuple(vocabulary)
    if g.size and (g.min() < 0 or g.max() >= n_groups):
        raise ValueError(f"group indices must lie in [0, {n_groups})")
    if c.size and (c.min() < 0 or c.max() >= len(vocab)):
        raise ValueError(f"codes must lie in [0, {len(vocab)}) for a vocabulary of {len(vocab)}")
    width = len(vocab) + 1
    unknown_codes = [vocab.index(w) for w in unknown if w in vocab]
    col = np.where(np.isin(c, unknown_codes), width - 1, c)
    dg, dt = np.diff(g), np.diff(t)
    if not np.all((dg > 0) | ((dg == 0) & (dt >= 0))):
        # Stable sort by (group, time): for equal timestamps the later arrival keeps the time.
        # Skipped when rows come ordered by (machine, time), as a database query returns them.
        order = np.lexsort((t, g))
        g, t, col = g[order], t[order], col[order]
    same_next = np.concatenate([g[1:] == g[:-1], [False]])
    nxt = np.where(same_next, np.concatenate([t[1:], [end]]), end)
    seg = np.clip(nxt, start, end) - np.clip(t, start, end)
    out = np.bincount(g * width + col, weights=seg, minlength=n_groups * width).astype(np.float64)
    out = out.reshape(n_groups, width)
    first = np.concatenate([[True], g[1:] != g[:-1]]) if g.size else np.zeros(0, dtype=bool)
    lead = np.full(n_groups, float(end - start))
    lead[g[first]] = np.clip(t[first], start, end) - start
    out[:, -1] += lead
    return out
