"""What ingest's rollup job costs the database for a factory (Apache edition, ingest/jobs.py).

Run: ``.venv/bin/python bench/rollups.py [--machines 1000] [--hours 2] [--keep]`` with the local
stack up (``arbor up``).

Fills a throw-away database (every migration applied) with ``--machines`` x ``--hours`` of 1 Hz
samples of 12 signals, generated server-side, then times what the job does in steady state:
writing one final minute of `sample_1m` (every run), five minutes of `sample_5m` (every fifth
minute) and one hour of `sample_1h` (every hour), each as the job does it (delete the buckets,
insert them from `sample`, one transaction). It prints the seconds per bucket, the database time
per hour of factory this adds up to, and, as the physical limit, how fast the same server reads
the same rows with nothing to compute (``count(*)`` over the hour): the rollup's rate as a
fraction of that. For comparison it also times what the job did before d179e12 on every run
(every 30 s): re-read the last 3 hours (or ``--hours``) of every machine.

Measures, asserts nothing. The database is dropped afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import asyncpg
import psycopg

from arbor.paths import load_env_file
from ingest.jobs import ROLLUPS, rollup_sql
from ingest.migrate import apply_migrations

SIGNALS = (
    "spindle_speed, spindle_load, feedrate, position_x, position_y, position_z, position_a, "
    "position_c, load_x, load_y, load_z, power"
)


async def _timed(conn: asyncpg.Connection, name: str, lo: datetime, hi: datetime) -> float:
    t = time.perf_counter()
    async with conn.transaction():
        await conn.execute(f"DELETE FROM {name} WHERE bucket >= $1 AND bucket < $2", lo, hi)  # noqa: S608
        await conn.execute(rollup_sql(name), lo, hi)
    return time.perf_counter() - t


async def run(url: str, machines: int, hours: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        t = time.perf_counter()
        await conn.execute(
            f"""INSERT INTO sample (ts, machine_id, {SIGNALS})
            SELECT t, m, 8000 + m, 30 + random() * 10, 1200, random(), random(), random(),
                   random(), random(), random(), random(), random(), 5
            FROM generate_series(date_trunc('hour', now()) - $1::interval,
                                 date_trunc('hour', now()) - interval '1 second',
                                 interval '1 second') t,
                 generate_series(1, $2::integer) m""",  # noqa: S608
            timedelta(hours=hours), machines,
        )  # fmt: skip
        rows = await conn.fetchval("SELECT count(*) FROM sample")
        print(f"filled {rows:,} samples ({machines} machines x {hours} h x 1 Hz, 12 signals) "
              f"in {time.perf_counter() - t:.0f} s")  # fmt: skip
        await conn.execute("VACUUM ANALYZE sample")
        start: datetime = await conn.fetchval(
            "SELECT date_trunc('hour', now()) - $1::interval", timedelta(hours=hours)
        )
        last_hour = start + timedelta(hours=hours - 1)

        t = time.perf_counter()
        scanned = await conn.fetchval(
            "SELECT count(*) FROM sample WHERE ts >= $1 AND ts < $2",
            last_hour, last_hour + timedelta(hours=1),
        )  # fmt: skip
        scan_s = time.perf_counter() - t
        scan_rate = scanned / scan_s
        print(f"limit: reading one hour ({scanned:,} rows) with nothing to compute: "
              f"{scan_s:.2f} s, {scan_rate / 1e6:.2f} M rows/s")  # fmt: skip

        per_hour = 0.0
        print("steady state (what the job writes as buckets become final):")
        for name, width in ROLLUPS.items():
            n = max(1, int(min(timedelta(minutes=15), timedelta(hours=1)) / width))
            seconds = []
            for i in range(n if width < timedelta(hours=1) else 1):
                lo = last_hour + i * width
                seconds.append(await _timed(conn, name, lo, lo + width))
            mean = sum(seconds) / len(seconds)
            runs = timedelta(hours=1) / width
            per_hour += mean * runs
            rate = scanned / runs / mean
            print(f"  {name}: {len(seconds)} buckets, {min(seconds):.2f}-{max(seconds):.2f} s "
                  f"each (mean {mean:.2f}), x {runs:.0f} per hour = {mean * runs:.0f} s; "
                  f"{rate / 1e6:.2f} M rows/s = {rate / scan_rate:.2f} of the limit")  # fmt: skip
        print(f"  total: {per_hour:.0f} s of database time per hour of factory "
              f"({per_hour / 36:.1f} % of one core)")  # fmt: skip

        lookback = timedelta(hours=min(3, hours))
        old = 0.0
        for name, width in ROLLUPS.items():
            if name == "sample_5m":
                continue  # the old job had no five-minute rollup
            end = start + timedelta(hours=hours)
            old += await _timed(conn, name, end - lookback, end + width)
        print(f"before d179e12, every run (every 30 s): re-read {lookback} of every machine "
              f"for sample_1m and sample_1h: {old:.0f} s")  # fmt: skip
    finally:
        await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--machines", type=int, default=1000)
    ap.add_argument("--hours", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = ap.parse_args()
    load_env_file()
    base = os.environ["ARBOR_DATABASE_URL"]
    name = f"bench_rollups_{secrets.token_hex(4)}"
    server = base.rsplit("/", 1)[0]
    with psycopg.connect(server + "/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        apply_migrations(f"{server}/{name}")
        asyncio.run(run(f"{server}/{name}", args.machines, args.hours))
    finally:
        if args.keep:
            print(f"kept database {name}")
        else:
            with psycopg.connect(server + "/postgres", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
