"""A bounded asyncio queue with a named overflow policy and a drop counter (asyncua's pattern)."""

from __future__ import annotations

__all__ = ["BoundedQueue", "OverflowPolicy"]

import asyncio
from collections import deque
from enum import StrEnum
from typing import Generic, TypeVar

T = TypeVar("T")


class OverflowPolicy(StrEnum):
    """What ``put`` does when the queue is full."""

    BLOCK = "block"  # wait for room: backpressure to the producer (nothing is lost)
    DROP_OLDEST = "drop_oldest"  # make room by discarding the oldest item (counted)
    DROP_NEWEST = "drop_newest"  # discard the item being put (counted)


class BoundedQueue(Generic[T]):
    """FIFO of at most ``maxsize`` items; ``dropped`` counts items lost to the policy."""

    def __init__(self, name: str, maxsize: int, policy: OverflowPolicy) -> None:
        if maxsize < 1:
            raise ValueError(f"queue {name}: maxsize must be positive, got {maxsize}")
        self.name = name
        self.maxsize = maxsize
        self.policy = policy
        self.dropped = 0
        self._items: deque[T] = deque()
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: T) -> bool:
        """Add ``item``; False if the policy discarded it (``drop_newest`` on a full queue)."""
        while len(self._items) >= self.maxsize:
            if self.policy is OverflowPolicy.BLOCK:
                self._not_full.clear()
                await self._not_full.wait()
                continue
            self.dropped += 1
            if self.policy is OverflowPolicy.DROP_NEWEST:
                return False
            self._items.popleft()
        self._items.append(item)
        self._not_empty.set()
        return True

    async def get(self) -> T:
        """Remove and return the oldest item, waiting for one."""
        while not self._items:
            self._not_empty.clear()
            await self._not_empty.wait()
        return self.get_nowait()

    def get_nowait(self) -> T:
        """Remove and return the oldest item; ``IndexError`` when empty."""
        item = self._items.popleft()
        self._not_full.set()
        if not self._items:
            self._not_empty.clear()
        return item

    async def wait_not_empty(self, wait_s: float | None) -> bool:
        """Wait until an item is there (True) or ``wait_s`` seconds pass (False)."""
        if self._items:
            return True
        # asyncio.timeout, not wait_for: in 3.11 wait_for wraps the wait in a new task, and a
        # pipeline waits here once per line it is fed.
        try:
            async with asyncio.timeout(wait_s):
                await self._not_empty.wait()
        except TimeoutError:
            return bool(self._items)
        return True
