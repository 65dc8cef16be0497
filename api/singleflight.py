"""Request coalescing: identical requests that arrive while one is being computed share it.

The fleet's utilisation is the same answer for every client asking the same window with the
same scope, and it is the API's most expensive read (some 1,000 machines' seconds per state):
20 dashboards asking for it at once queued 20 identical computations on the database. Here the
first request of a key computes; every request with that key arriving before it finishes
awaits the same result (the same bytes, or the same exception). Nothing is kept afterwards: the
next request computes again, so an answer is always that of a computation that ran while the
request was waiting, never an older one.

The key must hold everything the answer depends on, the caller's authorisation scope included
(a site-scoped key never shares a computation with another scope). The computation runs as a
task of its own: a waiter whose client goes away is cancelled alone, and the others still get
the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["SingleFlight"]

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """At most one computation in flight per key; `on_join` is called for each request that
    shares one instead of computing (the API counts them in /metrics)."""

    def __init__(self, on_join: Callable[[], None] | None = None) -> None:
        self._flights: dict[Hashable, asyncio.Future[T]] = {}
        self._on_join = on_join

    async def run(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(compute())
            self._flights[key] = flight
            flight.add_done_callback(lambda done: self._landed(key, done))
        elif self._on_join is not None:
            self._on_join()
        return await asyncio.shield(flight)

    def _landed(self, key: Hashable, flight: asyncio.Future[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved: no "never retrieved" warning when every waiter left

    def __len__(self) -> int:
        return len(self._flights)
