"""GET /machines as JSON bytes built straight from the database rows, shared for a moment.

The list is the fleet's most polled answer (every board, every few seconds) and the same for
every key but for the sites it may see. Its query (a few `event_latest` probes per machine, tens
of ms for 1,000 machines) and a pydantic model per row cost far more than answering, so one
snapshot of the whole fleet is read at a time, each row serialised once with orjson, and every
request within `ttl_s` of that read (ARBOR_API_LIST_CACHE_S, 1 s by default; 0 reads on every
request) is answered from it, filtered by site. The next read starts in the background once the
snapshot is half that old, so requests wait only when a read takes longer than half the TTL (or
nobody asked for a while); those wait for the read in flight rather than starting their own:
the database sees at most one list query at a time, whatever the number of clients.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field

import asyncpg
import orjson

from api.machines import STATUS_SQL

__all__ = ["FleetList", "Snapshot", "encode_rows"]

_SQL = STATUS_SQL + " ORDER BY m.site, m.machine"

#: orjson writes UTC as `Z` and microseconds only when non-zero, as pydantic does.
_OPTIONS = orjson.OPT_UTC_Z


def encode_rows(rows: list[asyncpg.Record]) -> list[tuple[str, bytes]]:
    """(site, the row's JSON object) per row, in the query's order."""
    return [(r["site"], orjson.dumps(dict(r), option=_OPTIONS)) for r in rows]


@dataclass
class Snapshot:
    """The fleet's rows as read at `read_at` (monotonic), and the bodies already joined."""

    rows: list[tuple[str, bytes]]
    read_at: float
    bodies: dict[tuple[str | None, tuple[str, ...] | None], tuple[bytes, str]] = field(
        default_factory=dict
    )

    def body(self, site: str | None, sites: tuple[str, ...] | None) -> tuple[bytes, str]:
        """The JSON array of the rows of `site` (None: all) among `sites` (None: all), and its
        ETag (a hash of the bytes, so an unchanged fleet keeps its tag across reads)."""
        key = (site, sites)
        hit = self.bodies.get(key)
        if hit is None:
            allowed = None if sites is None else frozenset(sites)
            body = (
                b"["
                + b",".join(
                    row
                    for s, row in self.rows
                    if (site is None or s == site) and (allowed is None or s in allowed)
                )
                + b"]"
            )
            tag = hashlib.blake2b(body, digest_size=16).hexdigest()
            hit = self.bodies[key] = (body, f'"{tag}"')
        return hit


class FleetList:
    """The latest snapshot, re-read when older than `ttl_s`, one read at a time."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._snapshot: Snapshot | None = None
        self._reading: asyncio.Future[Snapshot] | None = None

    async def _read(self, pool: asyncpg.Pool, timeout_s: float) -> Snapshot:
        read_at = time.monotonic()  # staleness counts from before the query
        async with pool.acquire(timeout=timeout_s) as conn:
            rows = await conn.fetch(_SQL)
        return Snapshot(rows=encode_rows(rows), read_at=read_at)

    async def snapshot(self, pool: asyncpg.Pool, timeout_s: float) -> Snapshot:
        if self.ttl_s <= 0:
            return await self._read(pool, timeout_s)
        current = self._snapshot
        age = None if current is None else time.monotonic() - current.read_at
        if self._reading is None and (age is None or age >= self.ttl_s / 2):
            # Read ahead from half the TTL on: under load the read takes a while, and requests
            # would otherwise all wait for it once the snapshot has expired.
            self._reading = asyncio.ensure_future(self._read(pool, timeout_s))
            self._reading.add_done_callback(self._done)
        if current is not None and age is not None and age < self.ttl_s:
            return current
        assert self._reading is not None
        # shield: one waiter cancelled (its client went away) must not cancel the others' read.
        return await asyncio.shield(self._reading)

    def _done(self, reading: asyncio.Future[Snapshot]) -> None:
        self._reading = None
        if not reading.cancelled() and reading.exception() is None:
            self._snapshot = reading.result()
