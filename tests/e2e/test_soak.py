"""Soak (issue 10): a factory streams for minutes through the gateway, Mosquitto and two ingest
workers; memory and publish-to-commit latency are recorded at fixed intervals and must not grow,
and at the end the database must still match the simulators' ground truth exactly.

Reduced by default (100 machines for 90 s, a reading every 15 s, inside ``make test``);
``ARBOR_DRILLS_FULL=1`` (``make drills``) runs 1,000 machines (900 native i5 + 100 SHDR behind
the gateway) for 10 minutes with a reading every minute. The readings go to the drills' results
file, and from there into docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from arbor import stack
from tests.e2e.drills.harness import (
    FULL,
    Factory,
    Servers,
    record_result,
    running,
    verify,
    wait_for,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

MACHINES, DURATION, EVERY = (1000, 600.0, 60.0) if FULL else (100, 90.0, 15.0)
I5 = MACHINES * 9 // 10
SHDR = MACHINES - I5
RATE_HZ = 1.0
#: Readings before this many simulated seconds are warm-up (imports, first sessions, caches).
WARMUP = 2 * EVERY
#: Memory may not grow by more than this between the first reading after warm-up and the last:
#: a leak of one object per message would be far above it at these rates. The full soak's 40 MB
#: let a leak of ~45 bytes per message through (+33 MB per ingest worker in 10 minutes; leak-free
#: runs +0.5-1 MB, +15 MB when ingest held a backlog under other jobs' load).
RSS_GROWTH_MB = 20.0 if FULL else 25.0


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    with Servers() as s:
        yield s


def _rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _scrape(port: int) -> dict[str, Any]:
    """Latency histogram buckets (cumulative counts by upper bound) and counters of one worker."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, Any] = {"buckets": {}, "messages": 0.0, "lag": 0.0}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "arbor_ingest_latency_seconds_bucket":
                le = float(s.labels["le"])
                out["buckets"][le] = out["buckets"].get(le, 0.0) + s.value
            elif s.name == "arbor_ingest_messages_total":
                out["messages"] += s.value
            elif s.name == "arbor_ingest_lag_seconds":
                out["lag"] = max(out["lag"], s.value)
    return out


def _quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The upper bound of the histogram bucket holding quantile ``q`` of the window's commits."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    for b, c in zip(bounds, counts, strict=True):
        if c >= q * total:
            return b
    return bounds[-1]


def _merge(scrapes: list[dict[str, Any]]) -> dict[str, Any]:
    buckets: dict[float, float] = {}
    for s in scrapes:
        for le, v in s["buckets"].items():
            buckets[le] = buckets.get(le, 0.0) + v
    return {
        "buckets": buckets,
        "messages": sum(s["messages"] for s in scrapes),
        "lag": max(s["lag"] for s in scrapes),
    }


class _BrokerSys:
    """Mosquitto's own figures from ``$SYS`` (published every 10 s): ``heap/current``, the bytes
    it has allocated now, and ``store/messages/count``, the messages it holds (queued for slow
    subscribers, in flight, retained). RSS alone cannot tell a leak from a backlog: a backlog
    raises the messages held and RSS together, and glibc keeps the freed pages, so RSS stays up
    after the backlog is gone. Read the heap next to RSS, not alone: in the full soak of
    2026-11-21 06:14 it rose linearly 10.8 -> 66.5 MB (~110 bytes per message) while RSS stayed
    at 13.4 MB and the messages held at ~1,050; Mosquitto 2.0.11's counter exceeds its RSS on the
    shared broker too (74 vs 67 MiB), so it is not resident memory. Not asserted on."""

    def __init__(self, servers: Servers) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.values: dict[str, float] = {}
        user, password = servers.broker.service_credentials
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(user, password)
        self.client.on_message = self._message
        self.client.connect(servers.broker.host, servers.broker.port)
        self.client.subscribe([("$SYS/broker/heap/current", 0),
                               ("$SYS/broker/store/messages/count", 0)])  # fmt: skip
        self.client.loop_start()

    def _message(self, client: object, userdata: object, msg: Any) -> None:
        with contextlib.suppress(ValueError):
            self.values[msg.topic.rsplit("/", 2)[-2]] = float(msg.payload)

    def reading(self) -> dict[str, float | None]:
        heap = self.values.get("heap")
        return {
            "heap_mb": None if heap is None else round(heap / 2**20, 1),
            "stored_messages": self.values.get("messages"),
        }

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.timeout(DURATION + 900)
def test_soak_memory_and_latency_do_not_grow(servers: Servers, tmp_path: Path) -> None:
    servers.ensure_up()
    f = Factory(servers, tmp_path, i5=I5, shdr=SHDR, duration_s=DURATION, rate_hz=RATE_HZ)
    readings: list[dict[str, Any]] = []
    broker_sys = _BrokerSys(servers)
    with running(f):
        prev = _merge([_scrape(p) for p in f.metrics_ports])
        prev_t = time.monotonic()
        k = 1
        while k * EVERY <= DURATION:
            f.sleep_until(k * EVERY)
            now = _merge([_scrape(p) for p in f.metrics_ports])
            dt = time.monotonic() - prev_t
            rss = {name: _rss_mb(p.pid) for name, p in f.procs.items() if p.poll() is None}
            rss["mosquitto"] = _rss_mb(stack._mqtt_running(servers.broker.settings))
            readings.append(
                {
                    "t_s": round(k * EVERY),
                    "rss_mb": {n: round(v, 1) for n, v in rss.items() if v is not None},
                    "messages_per_s": round((now["messages"] - prev["messages"]) / dt, 1),
                    "latency_p50_s": _quantile(prev["buckets"], now["buckets"], 0.50),
                    "latency_p99_s": _quantile(prev["buckets"], now["buckets"], 0.99),
                    "lag_s": round(now["lag"], 2),
                    "load": round(os.getloadavg()[0], 2),
                    "mosquitto": broker_sys.reading(),
                }
            )
            prev, prev_t = now, time.monotonic()
            k += 1
        f.wait_sims(DURATION + 300)
        box: dict[str, Any] = {}

        def converged() -> bool:
            box["v"] = verify(f)
            return not box["v"].problems

        try:
            drain_s: float | None = wait_for(converged, 180 if FULL else 60, "convergence", 2)
        except AssertionError:
            drain_s = None
        verdict = box["v"]
        dead = dict(verdict.dead_letters)
    broker_sys.close()
    steady = [r for r in readings if r["t_s"] >= WARMUP] or readings[-1:]
    growth = {
        name: round(steady[-1]["rss_mb"].get(name, 0.0) - steady[0]["rss_mb"].get(name, 0.0), 1)
        for name in steady[0]["rss_mb"]
        if not name.startswith("sim-")  # the simulators keep their ground truth as they go
    }
    p99s = [r["latency_p99_s"] for r in steady if r["latency_p99_s"] is not None]
    record_result(
        {
            "drill": "soak",
            "injected": f"{MACHINES} machines for {DURATION:g} s, no fault",
            "expect": "memory and latency flat after warm-up; database equals ground truth",
            "machines": {"i5": I5, "shdr": SHDR},
            "duration_s": DURATION,
            "readings": readings,
            "rss_growth_mb": growth,
            "drain_s": None if drain_s is None else round(drain_s, 2),
            "i5": verdict.totals("i5"),
            "shdr": verdict.totals("shdr"),
            "ledger_duplicates": verdict.ledger_duplicates,
            "dead_letters": dead,
            "problems": verdict.problems[:10],
            "n_problems": len(verdict.problems),
            "load": os.getloadavg(),
        }
    )
    assert not verdict.problems, "\n".join(verdict.problems[:20])
    assert verdict.ledger_duplicates == 0
    assert not dead, dead
    assert len(readings) >= 3, readings
    grown = {n: g for n, g in growth.items() if g > RSS_GROWTH_MB}
    assert not grown, f"memory grew by more than {RSS_GROWTH_MB} MB: {grown}; {readings}"
    # Latency must not climb: a backlog that grows each interval shows up as a p99 that rises
    # without end. Compared third against third, with room for a shared machine's noise.
    if len(p99s) >= 3:
        third = max(1, len(p99s) // 3)
        first, last = p99s[:third], p99s[-third:]
        assert sum(last) / len(last) <= 3 * sum(first) / len(first) + 5.0, (
            f"p99 latency rose: {p99s}"
        )
