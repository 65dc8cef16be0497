"""Commit a decoded batch to TimescaleDB in one transaction, exactly once per message.

The transaction: (1) insert the batch's ledger keys with ``ON CONFLICT DO NOTHING RETURNING``,
which yields the messages never stored before (a concurrent worker inserting the same key blocks
on it until that worker commits or aborts, so two workers can never both store a message);
(2) binary COPY the rows of exactly those messages straight into the hypertables, and move the
latest value per machine and event signal (`event_latest`, migration 0004) to the newest event;
(3) status changes, dead letters and Sparkplug gaps. Only after COMMIT returns does the worker ack
the messages, so a crash at any point means a redelivery, and a redelivery means a ledger
conflict.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from ingest.copybinary import sample_copy
from ingest.jobs import LATE_AFTER
from ingest.records import WIDE_SIGNALS, Accepted, DecodedBatch, EventRow, WideRow

__all__ = [
    "EVENT_COLUMNS",
    "SAMPLE_COLUMNS",
    "BatchWriter",
    "LatestKey",
    "WriteStats",
    "latest_updates",
]

log = logging.getLogger(__name__)

SAMPLE_COLUMNS: tuple[str, ...] = ("machine_id", "ts", *WIDE_SIGNALS)
EXTRA_COLUMNS = ("machine_id", "ts", "signal", "value", "value_text")
EVENT_COLUMNS = (
    "machine_id", "ts", "signal", "value", "value_num", "component", "level", "code",
    "native_severity", "qualifier", "message", "historical", "received_at",
)  # fmt: skip
DEAD_COLUMNS = ("received_at", "topic", "reason", "payload", "site", "machine", "kind")

# Samples older than LATE_AFTER when written: their rollup buckets may be final already, so the
# job redoes them (ingest/jobs.py). Noted in the samples' own transaction: never one without
# the other.
_LATE_SQL = """
INSERT INTO rollup_dirty (machine_id, lo, hi)
SELECT * FROM unnest($1::integer[], $2::timestamptz[], $3::timestamptz[])
"""
_LEDGER_SQL = """
INSERT INTO message_ledger (machine_id, session, seq, ts, received_at, channel, n_values)
SELECT * FROM unnest($1::integer[], $2::text[], $3::bigint[], $4::timestamptz[],
                     $5::timestamptz[], $6::text[], $7::integer[])
ON CONFLICT DO NOTHING
RETURNING machine_id, session, seq, ts
"""
_MACHINES_SQL = """
INSERT INTO machine (site, machine, source)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
ON CONFLICT (site, machine) DO UPDATE SET site = EXCLUDED.site
RETURNING id, site, machine
"""
_STATUS_SQL = """
UPDATE machine SET online = $2, status = CASE WHEN $2 THEN 'online' ELSE 'offline' END,
       status_since = $3, session = CASE WHEN $2 THEN $4 ELSE session END,
       controller = coalesce($5::jsonb, controller), source = $6,
       last_seen = greatest(last_seen, $7)
WHERE id = $1 AND CASE
    -- A birth carries the machine's clock: it wins unless its session has already ended or a
    -- session born later exists (both compared on that same clock).
    WHEN $2 THEN NOT EXISTS (
        SELECT 1 FROM machine_session ms
        WHERE ms.machine_id = $1
          AND ((ms.session = $4 AND ms.ended_at IS NOT NULL)
               OR (ms.session <> $4 AND ms.born_at > $3)))
    -- A death (a Last Will is stamped on arrival, by our clock) ends only the current session:
    -- comparing it with a birth time would mix two clocks.
    ELSE session IS NULL OR session = $4
END
"""
_SESSION_BORN_SQL = """
INSERT INTO machine_session (machine_id, session, born_at) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING
"""
_SESSION_ENDED_SQL = """
UPDATE machine_session SET ended_at = $3 WHERE machine_id = $1 AND session = $2
  AND ended_at IS NULL
"""
_GAP_SQL = """
INSERT INTO sequence_gap (machine_id, session, first_missing, last_missing, source)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING
"""
_BACK_ONLINE_SQL = """
WITH v AS (SELECT * FROM unnest($1::integer[], $2::timestamptz[]) AS v(id, seen)),
back AS (
    UPDATE machine m SET status = 'online', status_since = v.seen FROM v
    WHERE m.id = v.id AND m.status = 'unknown'
    RETURNING m.id, v.seen
)
INSERT INTO event (machine_id, ts, signal, value, received_at)
SELECT id, seen, 'status', 'online', seen FROM back
"""
# event_latest (migration 0004): the batch's keys get a row (a placeholder with ts NULL when new)
# and are locked in key order, so two workers writing events of one machine serialise on it.
_LATEST_LOCK_SQL = """
INSERT INTO event_latest (machine_id, signal, component, code)
SELECT * FROM unnest($1::integer[], $2::text[], $3::text[], $4::text[]) ORDER BY 1, 2, 3, 4
ON CONFLICT DO NOTHING
"""
_LATEST_READ_SQL = """
SELECT l.machine_id, l.signal, l.component, l.code, l.ts, l.value, l.level, l.since
  FROM event_latest l
  JOIN unnest($1::integer[], $2::text[], $3::text[], $4::text[]) AS k(machine_id, signal, component,
                                                                     code)
 USING (machine_id, signal, component, code)
 ORDER BY 1, 2, 3, 4
   FOR UPDATE OF l
"""
_LATEST_UPDATE_SQL = """
UPDATE event_latest l SET ts = v.ts, value = v.value, value_num = v.value_num, level = v.level,
       native_severity = v.native_severity, qualifier = v.qualifier, message = v.message,
       since = v.since, received_at = v.received_at
  FROM unnest($1::integer[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
              $7::float8[], $8::text[], $9::text[], $10::text[], $11::text[],
              $12::timestamptz[], $13::timestamptz[])
       AS v(machine_id, signal, component, code, ts, value, value_num, level, native_severity,
            qualifier, message, since, received_at)
 WHERE l.machine_id = v.machine_id AND l.signal = v.signal AND l.component = v.component
   AND l.code = v.code
"""
_LATEST_REFRESH_SQL = (
    "SELECT event_latest_refresh($1::integer[], $2::text[], $3::text[], $4::text[])"
)
_LAST_SEEN_SQL = """
UPDATE machine m SET last_seen = greatest(m.last_seen, v.seen)
FROM unnest($1::integer[], $2::timestamptz[]) AS v(id, seen) WHERE m.id = v.id
"""


@dataclass
class WriteStats:
    """What one committed batch stored."""

    messages: int = 0  # accepted messages newly stored
    duplicates: int = 0  # accepted messages the ledger already had
    values: int = 0
    rows: dict[str, int] | None = None
    dead: int = 0
    gaps: int = 0


class BatchWriter:
    """Writes batches over one asyncpg connection (the worker reconnects it on failure)."""

    def __init__(self, conn: asyncpg.Connection, *, note_late: bool = True) -> None:
        """`note_late`: record late samples for ingest's own rollup job (Apache edition; the
        community edition's continuous aggregates track them themselves)."""
        self._note_late = note_late
        self._conn = conn
        self._ids: dict[tuple[str, str], int] = {}

    async def machine_ids(self, pairs: Iterable[tuple[str, str, str]]) -> None:
        """Make sure every (site, machine, source) has a registry row and a cached id."""
        missing = sorted({p for p in pairs if (p[0], p[1]) not in self._ids})
        if not missing:
            return
        rows = await self._conn.fetch(
            _MACHINES_SQL, [p[0] for p in missing], [p[1] for p in missing],
            [p[2] for p in missing],
        )  # fmt: skip
        for r in rows:
            self._ids[(r["site"], r["machine"])] = r["id"]

    def id_of(self, site: str, machine: str) -> int:
        return self._ids[(site, machine)]

    async def write(self, batch: DecodedBatch) -> WriteStats:
        """Commit the batch (one transaction); raises asyncpg / OSError errors to the caller."""
        stats = WriteStats(rows={})
        pairs: list[tuple[str, str, str]] = []
        for a in batch.accepted:
            source = "sparkplug" if a.channel not in ("telemetry", "event", "status") else "v1"
            pairs.append((a.site, a.machine, source))
            pairs.append((a.key_site, a.key_machine, source))
            pairs.extend((s.site, s.machine, s.source) for s in a.status)
        pairs.extend((g.site, g.machine, "sparkplug") for g in batch.gaps)
        await self.machine_ids(pairs)

        # One entry per ledger key (a broker may deliver the same message twice in one batch).
        unique: dict[tuple[int, str, int, datetime], Accepted] = {}
        for a in batch.accepted:
            unique.setdefault((self.id_of(a.key_site, a.key_machine), a.session, a.seq, a.ts), a)
        conn = self._conn
        async with conn.transaction():
            fresh: list[Accepted] = []
            if unique:
                keys = list(unique)
                values = list(unique.values())
                inserted = await conn.fetch(
                    _LEDGER_SQL,
                    [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
                    [k[3] for k in keys], [a.received for a in values],
                    [a.channel for a in values], [a.n_values for a in values],
                )  # fmt: skip
                new_keys = {(r[0], r[1], r[2], r[3]) for r in inserted}
                fresh = [a for k, a in unique.items() if k in new_keys]
            stats.messages = len(fresh)
            stats.duplicates = len(batch.accepted) - len(fresh)
            await self._copy_rows(fresh, stats)
            await self._latest(fresh)
            await self._status(fresh)
            if batch.dead:
                await conn.copy_records_to_table(
                    "dead_letter",
                    records=[
                        (d.received, d.topic, d.reason, d.payload, d.site, d.machine, d.kind)
                        for d in batch.dead
                    ],
                    columns=DEAD_COLUMNS,
                )
                stats.dead = len(batch.dead)
            if batch.gaps:
                await conn.executemany(
                    _GAP_SQL,
                    [
                        (self.id_of(g.site, g.machine), g.session, g.first_missing,
                         g.last_missing, g.source)
                        for g in batch.gaps
                    ],
                )  # fmt: skip
                stats.gaps = len(batch.gaps)
        await self._seen(fresh)
        return stats

    async def _copy_rows(self, fresh: list[Accepted], stats: WriteStats) -> None:
        wide: list[WideRow] = []
        wide_ids: list[int] = []
        extra: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        for a in fresh:
            mid = self.id_of(a.site, a.machine)
            stats.values += a.n_values
            wide.extend(a.wide)
            wide_ids.extend([mid] * len(a.wide))
            prefix = (mid,).__add__  # C-level tuple concatenation: no Python frame per row
            extra.extend(map(prefix, a.extra))
            events.extend(_event_record(mid, e, a.received) for e in a.events)
        assert stats.rows is not None
        conn = self._conn
        if wide:
            copy = sample_copy(wide_ids, wide)
            await conn.copy_to_table(
                "sample", source=copy.source(), columns=copy.columns, format="binary"
            )
            stats.rows["sample"] = len(wide)
            if self._note_late:
                late = copy.spans_before(datetime.now(UTC) - LATE_AFTER)
                if late:
                    await conn.execute(_LATE_SQL, *map(list, zip(*late, strict=True)))
        if extra:
            await conn.copy_records_to_table("sample_extra", records=extra, columns=EXTRA_COLUMNS)
            stats.rows["sample_extra"] = len(extra)
        if events:
            await conn.copy_records_to_table("event", records=events, columns=EVENT_COLUMNS)
            stats.rows["event"] = len(events)

    async def _latest(self, fresh: list[Accepted]) -> None:
        """Move `event_latest` to the batch's newest events (inside the batch's transaction)."""
        by_key: dict[LatestKey, list[tuple[Any, ...]]] = {}
        for a in fresh:
            if not a.events:
                continue
            mid = self.id_of(a.site, a.machine)
            for e in a.events:
                if e[1] == "status":  # machine.status is its latest value
                    continue
                key: LatestKey = (
                    (mid, e[1], e[4] or "", e[6] or "")
                    if e[1] == "condition"
                    else (mid, e[1], "", "")
                )
                by_key.setdefault(key, []).append((*e, a.received))
        if not by_key:
            return
        keys = sorted(by_key)
        columns = [list(c) for c in zip(*keys, strict=True)]
        conn = self._conn
        await conn.execute(_LATEST_LOCK_SQL, *columns)
        stored = {
            (r[0], r[1], r[2], r[3]): (r[4], r[5], r[6], r[7])
            for r in await conn.fetch(_LATEST_READ_SQL, *columns)
        }
        updates, late = latest_updates(by_key, stored)
        if updates:
            await conn.execute(_LATEST_UPDATE_SQL, *(list(c) for c in zip(*updates, strict=True)))
        if late:
            await conn.execute(_LATEST_REFRESH_SQL, *(list(c) for c in zip(*late, strict=True)))

    async def _status(self, fresh: list[Accepted]) -> None:
        for a in fresh:
            for s in a.status:
                mid = self.id_of(s.site, s.machine)
                controller = orjson.dumps(s.controller).decode() if s.controller else None
                # last_seen is when we heard the machine (our clock): a birth stamped minutes
                # ago by the machine's clock must not make it look silent on arrival.
                await self._conn.execute(
                    _STATUS_SQL, mid, s.online, s.ts, s.session, controller, s.source, a.received
                )
                if s.online:
                    await self._conn.execute(_SESSION_BORN_SQL, mid, s.session, s.ts)
                else:
                    await self._conn.execute(_SESSION_ENDED_SQL, mid, s.session, s.ts)
                await self._conn.copy_records_to_table(
                    "event",
                    records=[
                        (mid, s.ts, "status", "online" if s.online else "offline", None, None,
                         None, None, None, None, s.reason, False, a.received)
                    ],
                    columns=EVENT_COLUMNS,
                )  # fmt: skip

    async def _seen(self, fresh: list[Accepted]) -> None:
        """last_seen per machine, and back to 'online' from 'unknown' (outside the transaction:
        it is idempotent and losing it in a crash is harmless)."""
        seen: dict[int, datetime] = {}
        for a in fresh:
            if a.channel == "status":
                continue
            mid = self.id_of(a.site, a.machine)
            if mid not in seen or seen[mid] < a.received:
                seen[mid] = a.received
        if not seen:
            return
        ids = sorted(seen)
        times = [seen[i] for i in ids]
        await self._conn.execute(_BACK_ONLINE_SQL, ids, times)
        await self._conn.execute(_LAST_SEEN_SQL, ids, times)


#: (machine_id, signal, component, code): one `event_latest` row.
LatestKey = tuple[int, str, str, str]


def latest_updates(
    events: Mapping[LatestKey, list[tuple[Any, ...]]],
    stored: Mapping[LatestKey, tuple[datetime | None, str | None, str | None, datetime | None]],
) -> tuple[list[tuple[Any, ...]], list[LatestKey]]:
    """The `event_latest` rows to write for a batch's events, and the keys to recompute.

    `events`: per key, the batch's events (EventRow + receive time) in arrival order; `stored`:
    per key, the row's (ts, value, level, since) (ts None: no event yet). When every batch event
    of a key is newer than the stored one, the newest (the later arrival among equal times) is
    the row, and `since` the first of the batch's trailing events with its value (level, for
    conditions), or the stored `since` if they all carry the stored value. Otherwise (an event
    at or before the stored one: late, or replayed history) the key is recomputed from `event`,
    which already holds the batch's rows.
    """
    updates: list[tuple[Any, ...]] = []
    late: list[LatestKey] = []
    for key, rows in events.items():
        ts, value, level, since = stored.get(key, (None, None, None, None))
        ordered = sorted(rows, key=lambda r: r[0])  # stable: equal times keep arrival order
        if ts is not None and ordered[0][0] <= ts:
            late.append(key)
            continue
        last = ordered[-1]
        ident = (last[2], last[5])  # (value, level)
        first = len(ordered) - 1
        while first > 0 and (ordered[first - 1][2], ordered[first - 1][5]) == ident:
            first -= 1
        run_since = ordered[first][0]
        if first == 0 and ts is not None and (value, level) == ident and since is not None:
            run_since = since
        # EventRow: ts, signal, value, value_num, component, level, code, native_severity,
        # qualifier, message, historical; then the receive time.
        updates.append(
            (*key, last[0], last[2], last[3], last[5], last[7], last[8], last[9], run_since,
             last[11])
        )  # fmt: skip
    return updates, late


def _event_record(mid: int, e: EventRow, received: datetime) -> tuple[Any, ...]:
    return (mid, *e, received)
