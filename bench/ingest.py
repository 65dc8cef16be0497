"""Ingest throughput: the raw COPY limit against end-to-end MQTT -> workers -> committed rows.

Run: ``.venv/bin/python bench/ingest.py [--duration 60] [--workers 2] [--machines 100]
[--samples 10] [--signals 12] [--rate 0] [--backlog 4000] [--events 0]`` with the local stack up
(``arbor up``).

(a) raw: binary COPY of the same wide rows straight into the same `sample` hypertable, batch
    for batch as the workers write them, encoded once by the workers' own encoder
    (``ingest.copybinary.sample_copy``) and sent again and again with asyncpg's
    ``copy_to_table``: the database's limit through one connection, no client work included;
(b) end-to-end: a separate publisher process sends telemetry (QoS 1) through Mosquitto to
    ``arbor ingest --workers N``; values/s counted from committed ledger rows during the window.
    The publisher keeps at most ``--backlog`` messages published but not yet committed (it reads
    the workers' counters), so (b) is the rate the whole chain sustains, not a backlog growing
    in the broker.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import asyncpg
import orjson
import psycopg

from arbor.paths import load_env_file
from ingest.copybinary import sample_copy
from ingest.migrate import apply_migrations
from ingest.records import WIDE_SIGNALS

ROOT = Path(__file__).resolve().parent.parent


def _signals(n: int) -> list[str]:
    return list(WIDE_SIGNALS[:n])


# --- publisher (runs as its own process) ---------------------------------------------------------


def _mqtt_str(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return len(data).to_bytes(2, "big") + data


def _mqtt_packet(first: int, body: bytes) -> bytes:
    """An MQTT control packet: fixed header byte, variable-length remaining length, body."""
    n = len(body)
    length = bytearray()
    while True:
        n, digit = divmod(n, 128)
        length.append(digit | (0x80 if n else 0))
        if not n:
            return bytes([first]) + bytes(length) + body


class _QoS1Publisher:
    """A minimal MQTT 3.1.1 QoS 1 publisher on a plain socket: PUBLISH packets are built from
    pre-encoded payloads and pipelined, PUBACKs are read in bulk, at most ``window`` messages are
    unacknowledged. It exists so the benchmark measures ingest rather than paho's per-message
    Python cost in the publisher (~250 µs a message): the broker sees ordinary QoS 1 traffic
    and acknowledges every message after taking responsibility for it."""

    def __init__(self, host: str, port: int, user: str | None, password: str | None) -> None:
        import socket

        self._sock = socket.create_connection((host, port), timeout=60)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        flags = 0x02 | (0x80 if user else 0) | (0x40 if password else 0)
        body = _mqtt_str("MQTT") + bytes([4, flags]) + (0).to_bytes(2, "big")
        body += _mqtt_str(f"bench-pub-{secrets.token_hex(4)}")
        if user:
            body += _mqtt_str(user)
        if password:
            body += _mqtt_str(password)
        self._sock.sendall(_mqtt_packet(0x10, body))
        connack = self._recv_exact(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise RuntimeError(f"MQTT connect refused: {connack!r}")
        self._pid = 0
        self.unacked = 0
        self._buf = b""

    def _recv_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self._sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            data += chunk
        return data

    def publish_many(self, packets: list[tuple[bytes, bytes]]) -> None:
        """Send (topic field, payload) pairs as QoS 1 PUBLISH packets in one write."""
        out = []
        for topic_field, payload in packets:
            self._pid = self._pid % 65535 + 1
            out.append(_mqtt_packet(0x32, topic_field + self._pid.to_bytes(2, "big") + payload))
        self._sock.sendall(b"".join(out))
        self.unacked += len(packets)

    def wait_acks(self, at_most: int) -> None:
        """Read PUBACKs until no more than ``at_most`` messages are unacknowledged."""
        while self.unacked > at_most:
            self._buf += self._sock.recv(65536)
            n = len(self._buf) // 4
            for i in range(n):  # every packet we can get here is a 4-byte PUBACK
                if self._buf[4 * i] != 0x40:
                    raise RuntimeError(f"unexpected MQTT packet {self._buf[4 * i : 4 * i + 4]!r}")
            self._buf = self._buf[4 * n :]
            self.unacked -= n

    def close(self) -> None:
        self._sock.sendall(bytes([0xE0, 0]))
        self._sock.close()


def _stored_messages(ports: list[int]) -> float:
    """Messages the workers have committed so far (their ``arbor_ingest_messages_total``)."""
    total = 0.0
    for port in ports:
        # name[] restricts the exposition to the one counter (the whole page costs the worker
        # milliseconds of CPU, and this is read many times a second).
        url = f"http://127.0.0.1:{port}/metrics?name[]=arbor_ingest_messages_total"
        with urllib.request.urlopen(url, timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("arbor_ingest_messages_total{"):
                    total += float(line.rsplit(" ", 1)[1])
    return total


class _Credit:
    """Closed-loop flow control: at most ``backlog`` messages published but not yet committed.

    Without it a flat-out publisher outruns ingest and the difference piles up in Mosquitto
    (gigabytes within a minute, re-saved whole by every persistence autosave): the run then
    measures a broker drowning in its queue, and the latency grows without bound, which is
    not a sustained rate. With it the publisher sends as fast as the whole chain commits, and
    publish-to-commit latency stays about ``backlog`` / throughput."""

    def __init__(self, ports: list[int], backlog: int, share: int) -> None:
        self._ports = ports
        self._backlog = backlog
        self._share = share  # publishers sharing the workers: each gets 1/share of the backlog
        self._base = _stored_messages(ports) if backlog else 0.0
        self._committed = 0.0  # this publisher's share of the commits, as last read

    def wait(self, sent: int) -> None:
        # The workers' counters are read only when the last reading says the backlog is full:
        # reading them costs milliseconds (two HTTP requests), a round of publishing much less.
        limit = self._backlog / self._share
        while self._backlog and sent - self._committed > limit:
            self._committed = (_stored_messages(self._ports) - self._base) / self._share
            if sent - self._committed > limit:
                time.sleep(0.1)  # each reading costs the workers CPU (an HTTP request each)


def publish(args: argparse.Namespace) -> None:
    """Publish telemetry for ``--duration`` seconds, QoS 1: as fast as ingest commits (at most
    ``--backlog`` messages uncommitted), at ``--rate``, or flat out (``--backlog 0``)."""
    import random

    from protocol.endpoint import parse_mqtt_url

    ep = parse_mqtt_url(os.environ["ARBOR_MQTT_URL"])
    client = _QoS1Publisher(ep.host, ep.port, ep.username, ep.password)
    names = _signals(args.signals)
    # Publisher k of n sends for machines k, k + n, k + 2n, ... (each machine from one process).
    mine = [i for i in range(args.machines) if i % args.publishers == args.publisher_index]
    topics = [_mqtt_str(f"arbor/v1/{args.site}/m{i:04d}/telemetry") for i in mine]
    event_topics = [_mqtt_str(f"arbor/v1/{args.site}/m{i:04d}/event") for i in mine]
    # Values like the simulator's: magnitudes of real signals, rounded to 3 decimals; a pool of
    # pre-encoded value objects so encoding does not cost the publisher per message.
    rng = random.Random(args.publisher_index)
    pool = [
        orjson.dumps({n: round(rng.uniform(0, 10 ** rng.randint(1, 4)), 3) for n in names})
        for _ in range(64)
    ]
    per_message = args.samples * args.signals
    interval = per_message * args.publishers / args.rate if args.rate > 0 else 0.0
    credit = _Credit(
        [int(x) for x in args.credit_ports.split(",") if x], args.backlog, args.publishers
    )
    end = time.monotonic() + args.duration
    sent = 0
    sent_events = 0
    seq = 0
    next_at = time.monotonic()
    while time.monotonic() < end:
        # One round: every machine sends one message whose newest sample is "now" (the
        # latency reference); the samples are shared by the round, only the topic differs.
        now = datetime.now(UTC)
        base = now - timedelta(milliseconds=100 * (args.samples - 1))
        samples = b",".join(
            b'{"ts":"%s","values":%s}'
            % (
                (base + timedelta(milliseconds=100 * k))
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z")
                .encode(),
                pool[(seq + k) % len(pool)],
            )
            for k in range(args.samples)
        )
        # With --events K, seqs alternate: telemetry 2r, then an event message 2r + 1 with K
        # value events (execution ACTIVE / READY in turn, part_count), stamped with the round.
        tseq = 2 * seq if args.events else seq
        payload = b'{"v":1,"session":"bench","seq":%d,"samples":[%b]}' % (tseq, samples)
        if args.events:
            stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()
            items = [
                b'{"ts":"%s","signal":"execution","value":"%s"}'
                % (stamp, b"ACTIVE" if seq % 2 else b"READY")
                if k % 2 == 0
                else b'{"ts":"%s","signal":"part_count","value":%d}' % (stamp, seq * 100 + k)
                for k in range(args.events)
            ]
            events = b'{"v":1,"session":"bench","seq":%d,"events":[%b]}' % (
                tseq + 1,
                b",".join(items),
            )
            client.publish_many([(topic, events) for topic in event_topics])
            sent_events += len(event_topics)
        if interval:
            for topic in topics:
                client.publish_many([(topic, payload)])
                sent += 1
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                client.wait_acks(args.window)
        else:
            client.publish_many([(topic, payload) for topic in topics])
            sent += len(topics)
            # Keep no backlog of our own beyond the window, so a message's timestamp is about
            # when it left (the latency is publish-to-commit, not queueing inside this process).
            client.wait_acks(args.window)
        credit.wait(sent + sent_events)
        seq += 1
    client.wait_acks(0)
    client.close()
    print(
        json.dumps(
            {
                "messages": sent + sent_events,
                "values": sent * per_message + sent_events * args.events,
            }
        ),
        flush=True,
    )


# --- CPU accounting (robust to other load on a shared box) ----------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _children(ppid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    if int(f.read().rsplit(b")", 1)[1].split()[1]) == ppid:
                        out.append(int(entry))
            except OSError:
                continue
    return out


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _processes(url: str, ingest_pid: int, publishers: list[int]) -> dict[str, list[int]]:
    """The processes whose CPU the run costs: publishers, Mosquitto, workers, and PostgreSQL
    (the bench database's backends plus the server's WAL writer, checkpointer and background
    writer, which are shared with other users of the stack)."""
    groups: dict[str, list[int]] = {"publisher": publishers}
    pid_file = ROOT / ".arbor" / "mosquitto" / "mosquitto.pid"
    if pid_file.exists():
        groups["mosquitto"] = [int(pid_file.read_text().split()[0])]
    workers = _children(ingest_pid) or [ingest_pid]
    for i, pid in enumerate(sorted(workers)):
        groups[f"worker {i}"] = [pid]
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchall()
        postmaster = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    groups["postgres backends"] = [int(r[0]) for r in rows]
    pg_pid_file = ROOT / ".arbor" / "pg" / "data" / "postmaster.pid"
    if postmaster and pg_pid_file.exists():
        master = int(pg_pid_file.read_text().split()[0])
        groups["postgres wal/ckpt/bgw"] = [
            p
            for p in _children(master)
            if any(k in _comm(p) for k in ("walwriter", "checkpointer", "background writer"))
        ]
    return groups


def _cpu(groups: dict[str, list[int]]) -> dict[str, float]:
    return {name: sum(_cpu_seconds(p) for p in pids) for name, pids in groups.items()}


# --- (a) raw COPY --------------------------------------------------------------------------------


async def raw_copy(url: str, args: argparse.Namespace, seconds: float) -> float:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT 1")
        names = _signals(args.signals)
        idx = [WIDE_SIGNALS.index(n) for n in names]
        t0 = datetime.now(UTC)
        rows_per_batch = args.batch * args.samples
        rows = []
        machine_ids = []
        for r in range(rows_per_batch):
            row: list[object] = [None] * len(WIDE_SIGNALS)
            for j, i in enumerate(idx):
                row[i] = 100.0 + r % 10 + j
            rows.append((t0 + timedelta(milliseconds=r), *row))
            machine_ids.append(r % args.machines + 1)
        values = 0
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        # Encoded once, by the workers' encoder, outside the timed loop: (a) is what the database
        # takes through one connection, with no client work to wait for between batches (encoding
        # in the loop made it serial, encode then COPY: 1.25 M values/s instead of ~2.5 M).
        copy = sample_copy(machine_ids, rows)
        cpu0 = time.process_time(), _cpu_seconds(backend)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            async with conn.transaction():
                await conn.copy_to_table(
                    "sample", source=copy.source(), columns=copy.columns, format="binary"
                )
            values += rows_per_batch * args.signals
        elapsed = time.perf_counter() - start
        client = time.process_time() - cpu0[0]
        server = _cpu_seconds(backend) - cpu0[1]
        print(
            f"    raw COPY CPU s per million values: client {client * 1e6 / values:.2f}, "
            f"postgres backend {server * 1e6 / values:.2f}"
        )
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
        url = f"http://127.0.0.1:{port}/metrics?name[]={name}_bucket"
        with urllib.request.urlopen(url, timeout=5) as r:
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
    p.add_argument(
        "--rate", type=float, default=0.0, help="publish values/s at most (0 = no limit)"
    )
    p.add_argument("--keep", action="store_true", help="keep the bench database")
    p.add_argument("--narrow", action="store_true", help="also time the narrow layout")
    p.add_argument("--publishers", type=int, default=1, help="publisher processes")
    p.add_argument("--window", type=int, default=1000, help="unacked messages per publisher")
    p.add_argument(
        "--backlog",
        type=int,
        default=4000,
        help="published but uncommitted messages at most (0 = flat out, limited by PUBACKs)",
    )
    p.add_argument(
        "--events", type=int, default=0, help="also an event message of N value events per round"
    )
    p.add_argument("--publish", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--publisher-index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--site", default="", help=argparse.SUPPRESS)
    p.add_argument("--credit-ports", default="", help=argparse.SUPPRESS)
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
        pubs = [
            subprocess.Popen(
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
                    "--publishers",
                    str(args.publishers),
                    "--publisher-index",
                    str(k),
                    "--window",
                    str(args.window),
                    "--events",
                    str(args.events),
                    "--backlog",
                    str(args.backlog),
                    "--credit-ports",
                    ",".join(map(str, ports)),
                ],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
            )
            for k in range(args.publishers)
        ]
        start = time.monotonic()
        c0 = _committed(url)
        groups = _processes(url, procs[0].pid, [p.pid for p in pubs])
        cpu0 = _cpu(groups)
        time.sleep(args.duration)
        c1 = _committed(url)
        cpu1 = _cpu(groups)
        window = time.monotonic() - start
        published = {"messages": 0, "values": 0}
        for pub in pubs:
            out, _ = pub.communicate(timeout=120)
            for key, n in json.loads(out.decode().strip().splitlines()[-1]).items():
                published[key] += n
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
            f" values/s, {published['messages'] / window:,.0f} messages/s from "
            f"{args.publishers} publisher processes), committed {total:,} "
            f"({'all' if total == published['values'] else 'MISSING'}), "
            f"drained {drained:.1f} s after publishing stopped"
        )
        print(
            f"    publish-to-commit latency p50 {_quantile(hist, 0.5) * 1000:.0f} ms, "
            f"p99 {_quantile(hist, 0.99) * 1000:.0f} ms"
        )
        mvalues = max(c1 - c0, 1) / 1e6
        used = {k: cpu1[k] - cpu0[k] for k in cpu0}
        print(
            f"    CPU s per million committed values (window; {sum(used.values()):.1f} CPU s "
            f"in {window:.0f} s): "
            + ", ".join(f"{k} {v / mvalues:.2f}" for k, v in used.items())
            + f"; total {sum(used.values()) / mvalues:.2f}"
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
