"""Sets of half-open time intervals [start, end) as sorted, disjoint float64 arrays (seconds).

The workhorse is ``covered_before``: the measure of a set up to time t, evaluated for many t at
once. The overlap of any interval [a, b) with the set is then covered(b) - covered(a), which turns
"time per state inside the planned shifts" into two ``searchsorted`` calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["IntervalSet"]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class IntervalSet:
    """Disjoint, sorted, non-empty intervals [starts[k], ends[k]); shapes (k,), seconds."""

    starts: FloatArray
    ends: FloatArray

    @classmethod
    def from_intervals(cls, starts: ArrayLike, ends: ArrayLike) -> IntervalSet:
        """Union of arbitrary (possibly overlapping, unsorted, empty) intervals."""
        s = np.atleast_1d(np.asarray(starts, dtype=np.float64))
        e = np.atleast_1d(np.asarray(ends, dtype=np.float64))
        if s.shape != e.shape:
            raise ValueError(f"starts and ends differ in length: {s.shape[0]} and {e.shape[0]}")
        if not (np.all(np.isfinite(s)) and np.all(np.isfinite(e))):
            raise ValueError("interval bounds must be finite")
        keep = e > s
        s, e = s[keep], e[keep]
        if s.size == 0:
            return cls.empty()
        order = np.argsort(s, kind="stable")
        s, e = s[order], e[order]
        reach = np.maximum.accumulate(e)
        # A new run starts where an interval begins after everything before it has ended.
        new = np.concatenate([[True], s[1:] > reach[:-1]])
        run = np.cumsum(new) - 1
        out_s = s[new]
        out_e = np.zeros(out_s.shape[0])
        np.maximum.at(out_e, run, e)
        return cls(out_s, out_e)

    @classmethod
    def empty(cls) -> IntervalSet:
        """The empty set."""
        return cls(np.zeros(0), np.zeros(0))

    @classmethod
    def span(cls, start: float, end: float) -> IntervalSet:
        """The single interval [start, end) (empty if end <= start)."""
        return cls.from_intervals([start], [end])

    @property
    def total(self) -> float:
        """Total length in seconds."""
        return float(np.sum(self.ends - self.starts))

    def covered_before(self, t: ArrayLike) -> FloatArray:
        """Measure of the set within (-inf, t), for t of any shape."""
        tt = np.asarray(t, dtype=np.float64)
        cum = np.concatenate([[0.0], np.cumsum(self.ends - self.starts)])
        k = np.searchsorted(self.starts, tt, side="right")  # intervals starting before t
        inside = np.where(k > 0, np.minimum(tt, self.ends[np.maximum(k - 1, 0)]), 0.0)
        partial = np.where(k > 0, inside - self.starts[np.maximum(k - 1, 0)], 0.0)
        before: FloatArray = cum[np.maximum(k - 1, 0)] * (k > 0) + partial
        return before

    def overlap(self, starts: ArrayLike, ends: ArrayLike) -> FloatArray:
        """Length of [starts[i], ends[i]) inside the set, per i (shape of the inputs)."""
        s = np.asarray(starts, dtype=np.float64)
        e = np.maximum(np.asarray(ends, dtype=np.float64), s)
        out: FloatArray = self.covered_before(e) - self.covered_before(s)
        return out

    def intersect(self, other: IntervalSet) -> IntervalSet:
        """Intersection with another set."""
        if self.starts.size == 0 or other.starts.size == 0:
            return IntervalSet.empty()
        # Pairwise clipping is vectorised through searchsorted: each of our intervals only
        # meets the other's intervals between two indices.
        lo = np.searchsorted(other.ends, self.starts, side="right")
        hi = np.searchsorted(other.starts, self.ends, side="left")
        counts = np.maximum(hi - lo, 0)
        mine = np.repeat(np.arange(self.starts.size), counts)
        offs = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        theirs = np.repeat(lo, counts) + offs
        s = np.maximum(self.starts[mine], other.starts[theirs])
        e = np.minimum(self.ends[mine], other.ends[theirs])
        return IntervalSet.from_intervals(s, e)

    def subtract(self, other: IntervalSet) -> IntervalSet:
        """This set minus ``other``."""
        if self.starts.size == 0 or other.starts.size == 0:
            return self
        lo = min(self.starts[0], other.starts[0]) - 1.0
        hi = max(self.ends[-1], other.ends[-1]) + 1.0
        gaps_s = np.concatenate([[lo], other.ends])
        gaps_e = np.concatenate([other.starts, [hi]])
        return self.intersect(IntervalSet.from_intervals(gaps_s, gaps_e))

    def union(self, other: IntervalSet) -> IntervalSet:
        """Union with another set."""
        return IntervalSet.from_intervals(
            np.concatenate([self.starts, other.starts]), np.concatenate([self.ends, other.ends])
        )
