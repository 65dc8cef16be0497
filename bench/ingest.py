"""Ingest throughput: the raw COPY limit against end-to-end MQTT -> workers -> committed rows.

Run: ``.venv/bin/python bench/ingest.py [--duration 60] [--workers 2] [--machines 100]
[--samples 10] [--signals 12] [--rate 0]`` with the local stack up (``arbor up``).

(a) raw: binary COPY (asyncpg ``copy_records_to_table``) of the same wide rows straight into the
    same `sample` hypertable, batch for batch as the workers write them;
(b) end-to-end: a separate publisher process sends telemetry (QoS 1) through Mosquitto to
    ``arbor ingest --workers N``; values/s counted from committed ledger rows during the window.
Prints values/s of both, the ratio b/a, the drain time after publishing stops, and p50/p99
publish-to-commit latency (from the workers' /metrics histograms: sample timestamp = publish time).
Works in a throw-away database on the stack's server and a unique site; both are removed after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path

if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import asyncpg
import orjson
import psycopg

from arbor.paths import load_env_file
from ingest.migrate import apply_migrations
from ingest.records import WIDE_SIGNALS
from ingest.writer import SAMPLE_COLUMNS

ROOT = Path(__file__).resolve().parent.parent


def _signals(n: int) -> list[str]:
    return list(WIDE_SIGNALS[:n])


# --- publisher (runs as its own process) ---------------------------------------------------------


def publish(args: argparse.Namespace) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from ingest.config import MqttEndpoint

    ep = MqttEndpoint(os.environ["ARBOR_MQTT_URL"])
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-pub-{secrets.token_hex(3)}",
        protocol=mqtt.MQTTv5,
    )
    client.username_pw_set(ep.username, ep.password)
    client.max_inflight_messages_set(2000)
    client.max_queued_messages_set(0)
    client.connect(ep.host, ep.port)
    client.loop_start()
    names = _signals(args.signals)
    topics = [f"arbor/v1/{args.site}/m{i:04d}/telemetry" for i in range(args.machines)]
    per_message = args.samples * args.signals
    interval = per_message / args.rate if args.rate > 0 else 0.0
    end = time.monotonic() + args.duration
    sent = 0
    seq = 0
    next_at = time.monotonic()
    infos: deque[mqtt.MQTTMessageInfo] = deque()
    while time.monotonic() < end:
        # One round: every machine sends one message whose newest sample is "now" (the
        # latency reference); the samples are shared by the round, only the topic differs.
        now = datetime.now(UTC)
        base = now - timedelta(milliseconds=100 * (args.samples - 1))
        samples = orjson.dumps(
            [
                {
                    "ts": (base + timedelta(milliseconds=100 * k))
                    .isoformat()
                    .replace("+00:00", "Z"),
                    "values": {n: 100.0 + k + j for j, n in enumerate(names)},
                }
                for k in range(args.samples)
            ]
        )
        payload = b'{"v":1,"session":"bench","seq":%d,"samples":%b}' % (seq, samples)
        for topic in topics:
            infos.append(client.publish(topic, payload, qos=1))
            sent += 1
            if interval:
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            # Keep no backlog of our own beyond the broker's in-flight window, so a message's
            # timestamp is when it really left (the latency is publish-to-commit, not queueing
            # inside this process).
            while len(infos) > 1000:
                infos.popleft().wait_for_publish(60)
            if time.monotonic() >= end:
                break
        seq += 1
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"messages": sent, "values": sent * per_message}), flush=True)


# --- (a) raw COPY --------------------------------------------------------------------------------


async def raw_copy(url: str, args: argparse.Namespace, seconds: float) -> float:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT 1")
        names = _signals(args.signals)
        idx = [WIDE_SIGNALS.index(n) for n in names]
        t0 = datetime.now(UTC)
        rows_per_batch = args.batch * args.samples
        records = []
        for r in range(rows_per_batch):
            row: list[object] = [None] * len(WIDE_SIGNALS)
            for j, i in enumerate(idx):
                row[i] = 100.0 + r % 10 + j
            records.append((r % args.machines + 1, t0 + timedelta(milliseconds=r), *row))
        values = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            async with conn.transaction():
                await conn.copy_records_to_table("sample", records=records, columns=SAMPLE_COLUMNS)
            values += rows_per_batch * args.signals
        elapsed = time.perf_counter() - start
        await conn.execute("TRUNCATE sample")
        return values / elapsed
    finally:
        await conn.close()


async def narrow_copy(url: str, args: argparse.Namespace, seconds: float) -> float:
    """The same values as one narrow row each (machine, ts, signal, value) into sample_extra:
    the layout the wide table was chosen against (docs/storage.md)."""
    conn = await asyncpg.connect(url)
    try:
        names = _signals(args.signals)
        t0 = datetime.now(UTC)
        records = [
            (r % args.machines + 1, t0 + timedelta(milliseconds=r), n, 100.0 + j, None)
            for r in range(args.batch * args.samples)
            for j, n in enumerate(names)
        ]
        values = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "sample_extra",
                    records=records,
                    columns=("machine_id", "ts", "signal", "value", "value_text"),
                )
            values += len(records)
        elapsed = time.perf_counter() - start
        await conn.execute("TRUNCATE sample_extra")
        return values / elapsed
    finally:
        await conn.close()


# --- (b) end to end ------------------------------------------------------------------------------


def _committed(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(sum(n_values), 0) FROM message_ledger").fetchone()
    return int(row[0]) if row else 0


def _histogram(ports: list[int], name: str) -> list[tuple[float, float]]:
    buckets: dict[float, float] = {}
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(f"{name}_bucket"):
                    le = line.split('le="', 1)[1].split('"', 1)[0]
                    bound = float("inf") if le == "+Inf" else float(le)
                    buckets[bound] = buckets.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return sorted(buckets.items())


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    total = buckets[-1][1] if buckets else 0.0
    if total == 0:
        return float("nan")
    target = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= target:
            if bound == float("inf"):
                return prev_bound
            frac = (target - prev_count) / max(count - prev_count, 1e-9)
            return prev_bound + frac * (bound - prev_bound)
        prev_bound, prev_count = bound, count
    return prev_bound


def _drop(base_url: str, name: str) -> None:
    # TimescaleDB's background workers may hold the database for a moment after the workers go.
    for _ in range(20):
        try:
            with psycopg.connect(base_url, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())
            return
        except psycopg.errors.InsufficientPrivilege:
            time.sleep(1)
    print(f"could not drop the bench database {name}; drop it by hand", file=sys.stderr)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60.0, help="seconds of publishing (b)")
    p.add_argument("--raw-seconds", type=float, default=10.0, help="seconds of raw COPY (a)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--machines", type=int, default=100)
    p.add_argument("--samples", type=int, default=10, help="samples per message")
    p.add_argument("--signals", type=int, default=12, help="values per sample")
    p.add_argument("--batch", type=int, default=2000, help="messages per batch")
    p.add_argument("--rate", type=float, default=0.0, help="publish values/s (0 = flat out)")
    p.add_argument("--keep", action="store_true", help="keep the bench database")
    p.add_argument("--narrow", action="store_true", help="also time the narrow layout")
    p.add_argument("--publish", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--site", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    load_env_file()
    if args.publish:
        publish(args)
        return 0

    base_url = os.environ["ARBOR_DATABASE_URL"]
    name = f"bench_ingest_{secrets.token_hex(4)}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    url = base_url.rsplit("/", 1)[0] + "/" + name
    site = f"bench{secrets.token_hex(4)}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        apply_migrations(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO machine (site, machine) SELECT %s, 'm' || lpad(i::text, 4, '0') "
                "FROM generate_series(0, %s) i",
                [site, args.machines - 1],
            )
        load = os.getloadavg()
        print(
            f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
            f"on {os.cpu_count()} CPUs"
        )
        print(
            f"shape: {args.machines} machines, {args.samples} samples x {args.signals} values "
            f"per message, batches of {args.batch} messages, {args.workers} workers"
        )
        a = asyncio.run(raw_copy(url, args, args.raw_seconds))
        print(f"(a) raw binary COPY into sample:  {a:14,.0f} values/s (wide rows)")
        if args.narrow:
            narrow = asyncio.run(narrow_copy(url, args, args.raw_seconds))
            print(
                f"    same values as narrow rows:   {narrow:14,.0f} values/s "
                f"(wide/narrow = {a / narrow:.1f})"
            )

        metrics_port = 19100 + secrets.randbelow(500)
        env = os.environ.copy()
        env.update(
            ARBOR_DATABASE_URL=url,
            ARBOR_INGEST_SHARE_GROUP=f"bench{secrets.token_hex(3)}",
            ARBOR_INGEST_TOPIC_FILTER=f"arbor/v1/{site}/#",
            ARBOR_INGEST_STATUS_FILTER=f"arbor/v1/{site}/+/status",
            ARBOR_INGEST_SPARKPLUG_FILTER="",
            ARBOR_INGEST_CLIENT_ID_PREFIX=f"bench-{site}",
            ARBOR_INGEST_METRICS_PORT=str(metrics_port),
            ARBOR_INGEST_BATCH_MAX_MESSAGES=str(args.batch),
            ARBOR_INGEST_SESSION_EXPIRY_S="120",
            ARBOR_INGEST_JOBS_INTERVAL_S="3600",
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ingest",
                    "--workers",
                    str(args.workers),
                    "--no-migrate",
                    "--log-level",
                    "warning",
                ],
                env=env,
                cwd=ROOT,
            )
        )
        ports = [metrics_port + i for i in range(args.workers)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait for every worker's /metrics (it is subscribed)
            try:
                _histogram(ports, "arbor_ingest_latency_seconds")
                break
            except OSError:
                time.sleep(0.3)
        time.sleep(1.0)
        pub = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--publish",
                "--site",
                site,
                "--duration",
                str(args.duration),
                "--machines",
                str(args.machines),
                "--samples",
                str(args.samples),
                "--signals",
                str(args.signals),
                "--rate",
                str(args.rate),
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        start = time.monotonic()
        c0 = _committed(url)
        time.sleep(args.duration)
        c1 = _committed(url)
        window = time.monotonic() - start
        out, _ = pub.communicate(timeout=120)
        published = json.loads(out.decode().strip().splitlines()[-1])
        t_drain = time.monotonic()
        while _committed(url) < published["values"] and time.monotonic() - t_drain < 120:
            time.sleep(0.5)
        drained = time.monotonic() - t_drain
        total = _committed(url)
        b = (c1 - c0) / window
        hist = _histogram(ports, "arbor_ingest_latency_seconds")
        load = os.getloadavg()
        print(f"(b) end to end, QoS 1, committed: {b:14,.0f} values/s over {window:.0f} s")
        print(
            f"    published {published['values']:,} values ({published['values'] / window:,.0f}"
            f" values/s), committed {total:,} "
            f"({'all' if total == published['values'] else 'MISSING'}), "
            f"drained {drained:.1f} s after publishing stopped"
        )
        print(
            f"    publish-to-commit latency p50 {_quantile(hist, 0.5) * 1000:.0f} ms, "
            f"p99 {_quantile(hist, 0.99) * 1000:.0f} ms"
        )
        print(f"ratio b/a: {b / a:.2f}  (goal >= 0.5)")
        print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if not args.keep:
            _drop(base_url, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
