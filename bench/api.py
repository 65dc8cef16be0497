"""API latency at factory scale: N machines and D days of data, 20 concurrent clients.

Run: ``.venv/bin/python bench/api.py [--machines 1000] [--days 30] [--minute-days 7]
[--clients 20] [--requests 400] [--keep]`` with the local stack up (``arbor up``).

Data is generated straight into a throw-away database on the stack's server, with the real
schema (every migration applied), by server-side ``INSERT ... SELECT generate_series`` (no rows
cross the wire), in minutes:

* machines in 4 sites, powered on Mon-Fri 05:45-22:15 UTC (status online/offline, a birth
  snapshot of execution, mode and program), cycling all day: ACTIVE for 80 % of a cycle of
  5-12 minutes (per machine), PROGRAM_COMPLETED for the rest, a part_count increment per cycle;
  a coolant WARNING (15 min) and a spindle FAULT (6 min, execution STOPPED) per machine and
  workday; every tenth machine has its last FAULT still open.
* telemetry (spindle_load, feedrate, spindle_speed) as ingest would have rolled it up: hourly
  buckets for every powered hour of the D days, minute buckets for the last ``--minute-days``
  and 5-minute buckets summed from them (the 7-day window reads those), all with their watermark
  at the start of the current hour, and raw 1 Hz samples after it (what ingest's rollup job has
  not reached yet). A kept database generated before sample_5m gets its 5-minute buckets from
  its minute buckets when benched again.

Then ``arbor api`` (uvicorn, the shipped defaults: pool of 10 connections) serves it and 20
asyncio clients ask, one kind of request at a time, for:

  list      GET /machines                                  goal p95 <  50 ms
  util30d   GET /machines/{random}/utilisation, 30 days    goal p95 < 100 ms
  fleet1d   GET /utilisation, the last 24 h, every machine goal p95 < 500 ms
  telem7d   GET /machines/{random}/telemetry, 7 days, 500 points, 2 signals
                                                           goal p95 < 100 ms

Each client is one HTTP/1.1 keep-alive connection that writes the GET and reads the answer's
Content-Length bytes (``_Connection``), and a latency is from the request written to the answer's
last byte read. The clients share the API's two cores, so their own cost is part of what is
measured: httpx spent ~4.5 ms of CPU taking in each 292 KB machine list, which capped 20 clients
at ~220 lists/s whatever the server did (list p95 792 ms with httpx, 121 ms with this client,
back to back on the same server); this client spends ~1 ms. Same requests, same number of
clients.

Prints the generation time and table sizes, then p50 / p95 / max and p95 / goal per kind.
Measures, asserts nothing. The database is dropped afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import asyncpg
import httpx
import psycopg
from psycopg import sql

from api.keys import generate_key
from arbor.paths import load_env_file
from ingest.jobs import refresh_state_hours
from ingest.migrate import apply_migrations

ROOT = Path(__file__).resolve().parent.parent
GOALS_MS = {"list": 50.0, "util30d": 100.0, "fleet1d": 500.0, "telem7d": 100.0}
SITES = 4  # the machine step writes sites b0..b3

# Per machine: `c` = cycle seconds (300..719), workdays (Mon-Fri) in [start, end), powered
# 05:45-22:15 UTC, cycles from 06:00 to 22:00. :start, :end, :machines are bound parameters.
_WORKDAYS = """
WITH d AS (
  SELECT day FROM generate_series(date_trunc('day', %(start)s::timestamptz),
                                  %(end)s::timestamptz, INTERVAL '1 day') AS day
   WHERE extract(isodow FROM day) < 6
), m AS (
  SELECT id, 300 + (id * 37) %% 420 AS c FROM machine
)
"""


def _days(statement: str) -> str:
    """`statement` after the workday and machine CTEs (`d`, `m`)."""
    return _WORKDAYS + statement


#: Rollup columns the bench fills (ingest's rollups have one triple per catalogue signal).
_SIGNALS = ("spindle_load", "feedrate", "spindle_speed")


def _five_minute_sql(lo: str, hi: str) -> str:
    """sample_5m from sample_1m's rows in [lo, hi) (psycopg parameters), as ingest's job
    (ingest/jobs.py, migration 0008) would write it: sample-count weighted averages, laid out
    as the job lays them out (an hour at a time, ordered by machine: ROLLUP_BATCH)."""
    columns = ", ".join(f"{s}_avg, {s}_min, {s}_max" for s in _SIGNALS)
    aggregates = ", ".join(
        f"sum({s}_avg * n) / nullif(sum(n) FILTER (WHERE {s}_avg IS NOT NULL), 0), "
        f"min({s}_min), max({s}_max)"
        for s in _SIGNALS
    )
    return f"""INSERT INTO sample_5m (bucket, machine_id, n, {columns})
           SELECT time_bucket(INTERVAL '5 minutes', bucket), machine_id, sum(n), {aggregates}
             FROM sample_1m WHERE bucket >= {lo} AND bucket < {hi}
            GROUP BY 1, 2
            ORDER BY time_bucket(INTERVAL '1 hour', time_bucket(INTERVAL '5 minutes', bucket)),
                     2, 1"""  # noqa: S608


_STEPS = [
    (
        "machines",
        """INSERT INTO machine (site, machine, controller, first_seen, source)
           SELECT 'b' || ((i - 1) %% 4), format('m%%s', lpad(i::text, 4, '0')),
                  '{"vendor": "i5", "model": "M8", "kind": "vertical_mc"}',
                  %(start)s, 'v1'
             FROM generate_series(1, %(machines)s) AS i""",
    ),
    (
        "status events",
        _days(
            """INSERT INTO event (machine_id, ts, signal, value, received_at)
           SELECT m.id, t, 'status', v, t FROM m, d,
                  LATERAL (VALUES (d.day + INTERVAL '5 hours 45 minutes', 'online'),
                                  (d.day + INTERVAL '22 hours 15 minutes', 'offline')) s(t, v)
            WHERE t >= %(start)s AND t < %(end)s"""
        ),
    ),
    (
        "sessions",
        _days(
            """INSERT INTO machine_session (machine_id, session, born_at, ended_at)
           SELECT m.id, format('bench-%%s-%%s', m.id, to_char(d.day, 'YYYYMMDD')),
                  d.day + INTERVAL '5 hours 45 minutes', d.day + INTERVAL '22 hours 15 minutes'
             FROM m, d
            WHERE d.day + INTERVAL '5 hours 45 minutes' >= %(start)s
              AND d.day + INTERVAL '5 hours 45 minutes' < %(end)s"""
        ),
    ),
    (
        "birth snapshots",
        _days(
            """INSERT INTO event (machine_id, ts, signal, value, received_at)
           SELECT m.id, d.day + INTERVAL '5 hours 45 minutes', s.signal, s.value,
                  d.day + INTERVAL '5 hours 45 minutes'
             FROM m, d,
                  LATERAL (VALUES ('execution', 'READY'), ('controller_mode', 'AUTOMATIC'),
                                  ('program', 'o' || (3101 + m.id %% 6)::text)) s(signal, value)
            WHERE d.day + INTERVAL '5 hours 45 minutes' >= %(start)s
              AND d.day + INTERVAL '5 hours 45 minutes' < %(end)s"""
        ),
    ),
    (
        "cycles",
        # k-th cycle: ACTIVE at 06:00 + k c, PROGRAM_COMPLETED at + 0.8 c, part_count + 1 then.
        _days(
            """, k AS (
             SELECT m.id, d.day + INTERVAL '6 hours' + make_interval(secs => k * m.c) AS t0,
                    m.c, k,
                    (extract(epoch FROM d.day - %(start)s::timestamptz) / 86400)::int AS dn
               FROM m, d, generate_series(0, (16 * 3600 / m.c) - 1) AS k)
           INSERT INTO event (machine_id, ts, signal, value, value_num, received_at)
           SELECT id, t, signal, value, num, t FROM k,
                  LATERAL (VALUES
                    (t0, 'execution', 'ACTIVE', NULL::double precision),
                    (t0 + make_interval(secs => 0.8 * c), 'execution', 'PROGRAM_COMPLETED', NULL),
                    (t0 + make_interval(secs => 0.8 * c) + INTERVAL '2 seconds', 'part_count',
                     (1000 + dn * 200 + k + 1)::text, (1000 + dn * 200 + k + 1)::double precision)
                  ) e(t, signal, value, num)
            WHERE t >= %(start)s AND t < %(end)s"""
        ),
    ),
    (
        "alarms",
        # A coolant warning at 08:xx (15 min) and a spindle fault at 13:xx (6 min, STOPPED, then
        # READY); every tenth machine's fault of the last day stays open.
        _days(
            """, a AS (
             SELECT m.id, d.day + INTERVAL '8 hours' + make_interval(mins => m.id %% 50) AS w,
                    d.day + INTERVAL '13 hours' + make_interval(mins => m.id %% 50) AS f,
                    m.id %% 10 = 0 AND d.day = (SELECT max(day) FROM d) AS stays
               FROM m, d)
           INSERT INTO event (machine_id, ts, signal, value, component, level, code, message,
                              received_at)
           SELECT id, t, signal, value, component, level, code, message, t FROM a,
                  LATERAL (VALUES
                    (w, 'condition', NULL, 'coolant', 'WARNING', 'C-12', 'coolant low', true),
                    (w + INTERVAL '15 minutes', 'condition', NULL, 'coolant', 'NORMAL', 'C-12',
                     NULL, true),
                    (f, 'condition', NULL, 'spindle', 'FAULT', 'S-3', 'spindle overload', true),
                    (f, 'execution', 'STOPPED', NULL, NULL, NULL, NULL, true),
                    (f + INTERVAL '6 minutes', 'condition', NULL, 'spindle', 'NORMAL', 'S-3',
                     NULL, NOT stays),
                    (f + INTERVAL '6 minutes', 'execution', 'READY', NULL, NULL, NULL, NULL,
                     NOT stays)
                  ) e(t, signal, value, component, level, code, message, keep)
            WHERE keep AND t >= %(start)s AND t < %(end)s"""
        ),
    ),
    (
        "hourly rollup",
        _days(
            """INSERT INTO sample_1h (bucket, machine_id, n, spindle_load_avg, spindle_load_min,
                                  spindle_load_max, feedrate_avg, feedrate_min, feedrate_max,
                                  spindle_speed_avg, spindle_speed_min, spindle_speed_max)
           SELECT b, m.id, 36000, 30 + m.id %% 20, 2, 80, 1500, 0, 4000, 6000, 0, 12000
             FROM m, d, generate_series(d.day + INTERVAL '6 hours',
                                        d.day + INTERVAL '21 hours', INTERVAL '1 hour') AS b
            WHERE b >= %(start)s AND b < %(mark)s"""
        ),
    ),
    (
        "minute rollup",
        _days(
            """INSERT INTO sample_1m (bucket, machine_id, n, spindle_load_avg, spindle_load_min,
                                  spindle_load_max, feedrate_avg, feedrate_min, feedrate_max,
                                  spindle_speed_avg, spindle_speed_min, spindle_speed_max)
           SELECT b, m.id, 600, 30 + (extract(minute FROM b)::int + m.id) %% 20, 2, 80,
                  1500, 0, 4000, 6000, 0, 12000
             FROM m, d, generate_series(d.day + INTERVAL '6 hours',
                                        d.day + INTERVAL '21 hours 59 minutes',
                                        INTERVAL '1 minute') AS b
            WHERE b >= %(minute_start)s AND b < %(mark)s"""
        ),
    ),
    (
        # as ingest's job would write it (ingest/jobs.py, migration 0008): each 5 minutes of
        # the minute rows above, sample-count weighted
        "5-minute rollup",
        _five_minute_sql("%(minute_start)s", "%(mark)s"),
    ),
    (
        "raw samples after the watermark",
        """INSERT INTO sample (machine_id, ts, spindle_load, feedrate, spindle_speed)
           SELECT m.id, t, 30 + random() * 20, 1500 + random() * 100, 6000
             FROM machine m, generate_series(%(mark)s::timestamptz,
                                              least(%(end)s::timestamptz, now()),
                                              INTERVAL '1 second') AS t""",
    ),
    (
        "watermarks and machine status",
        """INSERT INTO rollup_watermark (rollup, done_until)
           VALUES ('sample_1m', %(mark)s), ('sample_5m', %(mark)s), ('sample_1h', %(mark)s)
           ON CONFLICT (rollup) DO UPDATE SET done_until = EXCLUDED.done_until;
           UPDATE machine m SET status = s.value, online = s.value = 'online',
                  status_since = s.ts, last_seen = greatest(s.ts, %(end)s - INTERVAL '5 seconds')
             FROM (SELECT DISTINCT ON (machine_id) machine_id, value, ts FROM event
                    WHERE signal = 'status' ORDER BY machine_id, ts DESC) s
            WHERE s.machine_id = m.id""",
    ),
    (
        # The rows above bypass ingest's writer, which keeps event_latest (migration 0004).
        "latest values (event_latest)",
        "SELECT event_latest_refresh(NULL::integer[])",
    ),
    (
        # Every event above is older than its hour: migration 0005's trigger marked them all;
        # the hours are stored next (`_state_hours`), as ingest's job would.
        "state_hour_dirty marks",
        "DELETE FROM state_hour_dirty",
    ),
]


def _backfill_five_minutes(url: str) -> None:
    """A database generated before sample_5m (migration 0008): its 5-minute rollup from the
    minute rows, watermark as the minute rollup's, as ingest's job would have written it."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM sample_5m LIMIT 1) x), "
            "(SELECT done_until FROM rollup_watermark WHERE rollup = 'sample_1m')"
        ).fetchone()
        if row is None or row[0] or row[1] is None:
            return
        t = time.perf_counter()
        conn.execute(_five_minute_sql("'-infinity'", "%s").encode(), [row[1]])
        conn.execute(
            "INSERT INTO rollup_watermark (rollup, done_until) VALUES ('sample_5m', %s) "
            "ON CONFLICT (rollup) DO UPDATE SET done_until = EXCLUDED.done_until",
            [row[1]],
        )
        conn.execute("VACUUM ANALYZE sample_5m")
        print(f"  {'5-minute rollup (from 1m)':<34} {time.perf_counter() - t:7.1f} s", flush=True)


def _state_hours(url: str) -> None:
    """Ingest's state_hour job (migration 0005) up to date: every hour of history at once."""

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                await refresh_state_hours(conn, step=timedelta(days=3650))
            # as autovacuum does after the job's inserts: the utilisation reads are index-only
            await conn.execute("VACUUM ANALYZE state_hour")
            await conn.execute("VACUUM ANALYZE state_edge")
        finally:
            await conn.close()

    t = time.perf_counter()
    asyncio.run(run())
    print(f"  {'state hours (ingest job)':<34} {time.perf_counter() - t:7.1f} s", flush=True)


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def generate(url: str, machines: int, days: int, minute_days: int) -> tuple[datetime, float]:
    """Fill the (migrated) database; returns the data's end (now) and the seconds it took."""
    end = datetime.now(UTC).replace(microsecond=0)
    mark = end.replace(minute=0, second=0)
    params = {
        "machines": machines,
        "start": end - timedelta(days=days),
        "end": end,
        "mark": mark,
        "minute_start": end - timedelta(days=minute_days),
    }
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        for name, statement in _STEPS:
            t = time.perf_counter()
            for part in statement.split(";\n"):
                conn.execute(part.encode(), params)
            print(f"  {name:<34} {time.perf_counter() - t:7.1f} s", flush=True)
        _state_hours(url)
        t = time.perf_counter()
        conn.execute("ANALYZE")
        print(f"  {'ANALYZE':<34} {time.perf_counter() - t:7.1f} s", flush=True)
        for table in ("event", "sample", "sample_1m", "sample_5m", "sample_1h"):
            rows, size = conn.execute(
                sql.SQL(
                    "SELECT (SELECT count(*) FROM {}), "
                    "pg_size_pretty(hypertable_size({}::regclass))"
                ).format(sql.Identifier(table), sql.Literal(table))
            ).fetchone() or (0, "?")
            print(f"  {table:<12} {rows:>12,} rows {size:>10}")
    return end, time.perf_counter() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class _Connection:
    """One HTTP/1.1 keep-alive connection that sends GETs and reads each answer's
    Content-Length bytes (or its chunks), nothing more.

    httpx's own parsing cost the bench about 4.5 ms of CPU per 292 KB machine list, on the same
    two cores as the API and PostgreSQL: 20 httpx clients capped the list at ~220 requests/s
    whatever the server did, so the figures measured the client. This reads the same bytes with
    a few buffer operations per answer; the requests, headers and concurrency are unchanged.
    """

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port = host, port
        self.headers = (
            f"Host: {host}:{port}\r\nAuthorization: Bearer {key}\r\nAccept: */*\r\n\r\n"
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.reader, self.writer
        writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self.headers)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        fields = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        if b"content-length" in fields:
            body = await reader.readexactly(int(fields[b"content-length"]))
        elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            await reader.readuntil(b"\r\n")
            body = b"".join(parts)
        else:
            body = await reader.read()  # until the server closes
            fields[b"connection"] = b"close"
        if fields.get(b"connection", b"").lower() == b"close":
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def _run_kind(
    base: str, key: str, make: object, clients: int, requests: int
) -> tuple[list[float], int]:
    """`requests` requests from `clients` concurrent clients (one keep-alive connection each);
    latencies in ms (request sent to the last byte of the answer read) and errors."""
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[str] = asyncio.Queue()
    for _ in range(requests):
        queue.put_nowait(make())  # type: ignore[operator]
    address = urlsplit(base)
    assert address.hostname is not None and address.port is not None

    async def client() -> None:
        nonlocal errors
        http = _Connection(address.hostname or "", address.port or 80, key)
        try:
            while True:
                try:
                    path = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t = time.perf_counter()
                status, body = await asyncio.wait_for(http.get(path), 120)
                latencies.append((time.perf_counter() - t) * 1000)
                if status != 200:
                    errors += 1
                    if errors <= 3:
                        print(f"    {status} {path}: {body[:200]!r}")
        finally:
            await http.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, errors


def _queries(end: datetime, machines: int) -> dict[str, object]:
    ids = [f"b{(i - 1) % SITES}:m{i:04d}" for i in range(1, machines + 1)]
    rng = random.Random(7)

    def q(**params: object) -> str:
        return str(httpx.URL("", params={k: str(v) for k, v in params.items()}))

    def at(days: float) -> str:
        return (end - timedelta(days=days)).isoformat()

    return {
        "list": lambda: "/api/v1/machines",
        "util30d": lambda: (
            f"/api/v1/machines/{rng.choice(ids)}/utilisation"
            + q(**{"from": at(30), "to": end.isoformat()})
        ),
        "fleet1d": lambda: "/api/v1/utilisation" + q(**{"from": at(1), "to": end.isoformat()}),
        "telem7d": lambda: (
            f"/api/v1/machines/{rng.choice(ids)}/telemetry"
            + q(
                **{
                    "from": at(7),
                    "to": end.isoformat(),
                    "points": 500,
                    "signals": "spindle_load,feedrate",
                }
            )
        ),
    }


def bench(url: str, end: datetime, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    new = generate_key()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO api_key (id, name, role, sites, key_hash) VALUES (%s, %s, %s, %s, %s)",
            [new.key_id, "bench", "viewer", None, new.key_hash],
        )
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBOR_")}
    env.update(
        ARBOR_DATABASE_URL=url,
        ARBOR_MQTT_URL="",
        ARBOR_API_RATE_PER_S="1000000",
        ARBOR_API_RATE_BURST="1000000",
        ARBOR_API_POOL_MAX=str(args.pool_max),
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "api",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--workers",
            str(args.workers),
        ],
        env=env,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    results: dict[str, dict[str, float]] = {}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code in (200, 503):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the API did not start")
            time.sleep(0.2)
        queries = _queries(end, args.machines)
        kinds = args.only or list(GOALS_MS)
        print(
            f"\n{args.clients} concurrent clients, {args.requests} requests per kind "
            f"(after {args.warmup} warm-up requests), pool of {args.pool_max}, "
            f"{args.workers} API worker(s)"
        )
        print(f"{'kind':<8} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9} {'goal':>7} {'p95/goal':>9}")
        for kind in kinds:
            asyncio.run(_run_kind(base, new.key, queries[kind], args.clients, args.warmup))
            lat, errors = asyncio.run(
                _run_kind(base, new.key, queries[kind], args.clients, args.requests)
            )
            p50, p95 = statistics.median(lat), _percentile(lat, 0.95)
            goal = GOALS_MS[kind]
            results[kind] = {"p50_ms": p50, "p95_ms": p95, "max_ms": max(lat), "errors": errors}
            print(
                f"{kind:<8} {p50:9.1f} {p95:9.1f} {max(lat):9.1f} {goal:7.0f} {p95 / goal:9.2f}"
                + (f"  ({errors} errors)" if errors else ""),
                flush=True,
            )
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--machines", type=int, default=1000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--minute-days", type=int, default=7, help="days of 1-minute rollups")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--requests", type=int, default=400, help="per kind")
    p.add_argument("--warmup", type=int, default=40, help="per kind, not measured")
    p.add_argument("--pool-max", type=int, default=10, help="the API's pool (shipped default 10)")
    p.add_argument("--workers", type=int, default=1, help="API processes (arbor api --workers)")
    p.add_argument("--only", nargs="*", choices=list(GOALS_MS), help="kinds to run")
    p.add_argument("--database", help="bench an existing database (kept) instead of a new one")
    p.add_argument("--keep", action="store_true", help="keep the generated database")
    args = p.parse_args()
    load_env_file()
    server_url = os.environ["ARBOR_DATABASE_URL"]
    if args.database:
        url = _with_database(server_url, args.database)
        applied, _ = apply_migrations(url)  # a database kept by an older version: backfills
        for m in applied:
            print(f"  applied migration {m.version:04d}_{m.name}")
        _backfill_five_minutes(url)  # a kept database generated before migration 0008
        _state_hours(url)  # a kept database: the hours since it was last benched
        with psycopg.connect(url) as conn:
            (end,) = conn.execute("SELECT max(ts) FROM event").fetchone() or (None,)
        bench(url, end.replace(microsecond=0), args)
        return
    name = f"bench_api_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_database(server_url, name)
    try:
        apply_migrations(url)
        print(f"database {name}: {args.machines} machines, {args.days} days")
        end, took = generate(url, args.machines, args.days, args.minute_days)
        print(f"  generated in {took:.0f} s")
        bench(url, end, args)
    finally:
        if args.keep:
            print(f"kept database {name} (bench again with --database {name})")
        else:
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


if __name__ == "__main__":
    main()
