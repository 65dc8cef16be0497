"""Verified API keys remembered in the process for a few seconds.

Every request authenticates, and reading `api_key` was one database round trip of each (under 20
concurrent clients, one more query queued behind the pool for every answer). A key found valid
and not revoked is trusted for `ttl_s` (ARBOR_API_AUTH_CACHE_S, 5 s by default): a revocation,
a role or a site change takes effect within that time, in every API process. Unknown, malformed
and revoked keys are never remembered, so they are always checked against the database.

Entries are found by the SHA-256 of the whole presented key, the same digest `api_key.key_hash`
stores: a hit is a key whose digest matched the stored one less than `ttl_s` ago.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from api.keys import hash_key

__all__ = ["KeyCache", "VerifiedKey"]


@dataclass(frozen=True)
class VerifiedKey:
    """What `api_key` said about a valid, unrevoked key."""

    key_id: str
    name: str
    role: str
    sites: frozenset[str] | None


class KeyCache:
    """Verified keys by digest, each for `ttl_s` after it was read (0: nothing is kept)."""

    def __init__(
        self,
        ttl_s: float,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._clock = clock
        self._keys: dict[str, tuple[float, VerifiedKey]] = {}

    def get(self, key: str) -> VerifiedKey | None:
        if self.ttl_s <= 0:
            return None
        digest = hash_key(key)
        hit = self._keys.get(digest)
        if hit is None:
            return None
        expires, verified = hit
        if self._clock() >= expires:
            del self._keys[digest]
            return None
        return verified

    def put(self, key: str, verified: VerifiedKey, read_at: float) -> None:
        """Remember `verified` until `read_at` (the clock before the database read) + ttl."""
        if self.ttl_s <= 0:
            return
        if len(self._keys) >= self.max_keys:
            # Many distinct keys at once (not the normal case): start over rather than let the
            # dictionary grow without bound; the next request of each key reads it again.
            self._keys.clear()
        self._keys[hash_key(key)] = (read_at + self.ttl_s, verified)

    def now(self) -> float:
        return self._clock()
