"""Test helpers for ingest: a small paho publisher, worker processes, and polling the database."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from protocol import Controller, Event, Sample, Status, Telemetry, ValueEvent, encode

ROOT = Path(__file__).resolve().parents[2]


class Publisher:
    """A QoS 1 MQTT 5 publisher that waits until the broker has every message."""

    def __init__(self, host: str, port: int, username: str, password: str) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"tpub-{secrets.token_hex(4)}",
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(1000)
        self.client.connect(host, port)
        self.client.loop_start()
        self._pending: list[mqtt.MQTTMessageInfo] = []

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, qos: int = 1) -> None:
        self._pending.append(self.client.publish(topic, payload, qos=qos, retain=retain))

    def flush(self, timeout: float = 60) -> list[int]:
        """Wait for every publish; returns the reason codes of the acks (0 = accepted)."""
        deadline = time.monotonic() + timeout
        codes = []
        for info in self._pending:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            codes.append(info.rc)
        self._pending.clear()
        return codes

    def close(self) -> None:
        self.flush()
        self.client.disconnect()
        self.client.loop_stop()


def telemetry(
    session: str, seq: int, n: int = 5, t0: datetime | None = None, **extra: Any
) -> bytes:
    t0 = t0 or datetime.now(UTC)
    samples = [
        Sample(
            ts=t0 + timedelta(milliseconds=100 * i),
            values={"spindle_speed": 1000.0 + i, "spindle_load": 20.5, **extra},
        )
        for i in range(n)
    ]
    return encode(Telemetry(session=session, seq=seq, samples=samples))


def event(session: str, seq: int, signal: str, value: Any) -> bytes:
    ev = ValueEvent(ts=datetime.now(UTC), signal=signal, value=value)
    return encode(Event(session=session, seq=seq, events=[ev]))


def status(session: str, online: bool) -> bytes:
    return encode(
        Status(
            online=online,
            ts=datetime.now(UTC),
            session=session,
            controller=Controller(vendor="i5", model="M8", kind="vertical_mc"),
        )
    )


def worker_env(
    database_url: str, mqtt_url: str, site: str, group: str, **more: str
) -> dict[str, str]:
    env = os.environ.copy()
    env.update(
        ARBOR_DATABASE_URL=database_url,
        ARBOR_MQTT_URL=mqtt_url,
        ARBOR_INGEST_SHARE_GROUP=group,
        ARBOR_INGEST_TOPIC_FILTER=f"arbor/v1/{site}/#",
        ARBOR_INGEST_STATUS_FILTER=f"arbor/v1/{site}/+/status",
        ARBOR_INGEST_SPARKPLUG_FILTER=f"spBv1.0/{site}/#",
        ARBOR_INGEST_CLIENT_ID_PREFIX=f"t-{group}",
        ARBOR_INGEST_METRICS_PORT="0",
        ARBOR_INGEST_SESSION_EXPIRY_S="600",
        ARBOR_INGEST_JOBS_INTERVAL_S="1",
        ARBOR_INGEST_GAP_SETTLE_S="0",
    )
    env.update(more)
    return env


def start_worker(env: dict[str, str], index: int = 0) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ingest",
            "--no-migrate",
            "--worker-index",
            str(index),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=ROOT,
    )


@contextmanager
def workers(env: dict[str, str], n: int = 1) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [start_worker(env, i) for i in range(n)]
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def free_port_pair() -> int:
    """A port p such that p and p + 1 are both free (worker i serves its metrics on p + i)."""
    import socket

    from tests.servers import free_port

    while True:
        port = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port


def scalar(url: str, query: str, *params: Any) -> Any:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(query.encode(), params).fetchone()  # type: ignore[call-overload]
    return None if row is None else row[0]


def rows(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(query.encode(), params).fetchall()  # type: ignore[call-overload]


def _machine_filter(site: str | None, machine: str | None) -> tuple[str, str]:
    if site is not None and machine is None:
        return "m.site", site
    if machine is not None and site is None:
        return "m.machine", machine
    raise ValueError("count by site or by machine, not both")


def _count(url: str, query: str, site: str | None, machine: str | None) -> int:
    column, value = _machine_filter(site, machine)
    return int(scalar(url, query.format(column=column), value))


def stored_messages(url: str, *, site: str | None = None, machine: str | None = None) -> int:
    """Data messages in the ledger (births and deaths have negative seqs) of a site or machine."""
    return _count(
        url,
        "SELECT count(*) FROM message_ledger l JOIN machine m ON m.id = l.machine_id "
        "WHERE {column} = %s AND l.seq >= 0",
        site,
        machine,
    )


def stored_samples(url: str, *, site: str | None = None, machine: str | None = None) -> int:
    """Rows in `sample` of a site or machine."""
    return _count(
        url,
        "SELECT count(*) FROM sample s JOIN machine m ON m.id = s.machine_id WHERE {column} = %s",
        site,
        machine,
    )


def wait_until(check: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except psycopg.OperationalError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def metric(port: int, name: str, **labels: str) -> float:
    """One sample of a worker's /metrics (0 if absent)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    total = 0.0
    for line in text.splitlines():
        if line.startswith(want + " ") or (not labels and line.startswith(name + "{")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_ready(port: int, timeout: float = 90) -> None:
    """Wait until the worker's subscriptions stand (its readiness gauge), or it has already seen a
    message (the retained probe status published under the test's site before it started).
    Generous: a worker's start-up takes many seconds on a loaded 2-core machine."""

    def seen() -> bool:
        try:
            return (
                metric(port, "arbor_ingest_subscribed") >= 1
                or metric(port, "arbor_ingest_messages_total") >= 1
            )
        except OSError:
            return False

    wait_until(seen, timeout, f"worker on metrics port {port} to subscribe")
