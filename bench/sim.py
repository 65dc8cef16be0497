"""Simulator throughput: machine-steps per second and the share of one core that 1,000 machines at
10 Hz take, model only, with message building, and publishing to the real broker (when it is up).

    .venv/bin/python bench/sim.py [--machines 1000] [--rate 10] [--seconds 20] [--realtime 10]

The figure is CPU seconds of this process per simulated second at the given rate: below 1.0 means
one core keeps up in real time. The broker runs are accelerated (speedup 0) so that they measure
CPU, then one real-time run shows the simulator holding the pace on the wall clock.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulators.controllers import I5Controllers, NullSink
from simulators.factory import default_factory
from simulators.model import Fleet
from simulators.mqtt_publisher import MqttTransport
from simulators.runner import run_loop
from simulators.truth import Truth

START = datetime(2025, 3, 3, 7, 0, tzinfo=UTC).timestamp()  # mid-shift: every machine is on
WARMUP_S = 2.0  # births (connects, snapshots) are not steady state


def _broker() -> tuple[str, int, str | None, str | None] | None:
    url = os.environ.get("ARBOR_MQTT_URL")
    env = Path(__file__).resolve().parents[1] / ".arbor" / "arbor.env"
    if not url and env.exists():
        for line in env.read_text().splitlines():
            if line.startswith("ARBOR_MQTT_URL="):
                url = line.split("=", 1)[1].strip()
    if not url:
        return None
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 1883
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return None
    return host, port, unquote(u.username or "") or None, unquote(u.password or "") or None


def _report(label: str, n: int, rate: float, sim_s: float, cpu_s: float, wall_s: float) -> None:
    steps = n * sim_s * rate
    core = cpu_s / sim_s
    print(f"{label:<44} {steps / cpu_s:>12,.0f} machine-steps/s   "
          f"{core:6.3f} core for {n} machines at {rate:g} Hz   (wall {wall_s:5.1f} s "
          f"for {sim_s:g} sim s)")  # fmt: skip


def bench(n: int, rate: float, seconds: float, realtime: float) -> None:
    factory = default_factory(n, site="bench")
    ids = [m.machine_id for m in factory.machines]

    fleet = Fleet(factory, rate_hz=rate, start=START, seed=1)
    run_loop(fleet, None, None, duration_s=WARMUP_S, speedup=0)
    r = run_loop(fleet, None, None, duration_s=seconds, speedup=0)
    _report("model only", n, rate, r.sim_s, r.cpu_s, r.wall_s)

    fleet = Fleet(factory, rate_hz=rate, start=START, seed=1)
    truth = Truth(fleet)
    sink = NullSink()
    ctl = I5Controllers(fleet, sink, truth=truth, batch_s=1.0)
    ctl.shutdown = lambda t: None  # type: ignore[method-assign]  # keep machines online
    run_loop(fleet, ctl, truth, duration_s=WARMUP_S, speedup=0)
    sink.count = sink.bytes = 0
    r = run_loop(fleet, ctl, truth, duration_s=seconds, speedup=0)
    _report("model + truth + v1 messages (no transport)", n, rate, r.sim_s, r.cpu_s, r.wall_s)
    print(f"{'':<44} {sink.count / r.sim_s:>12,.0f} messages per simulated s, "
          f"{sink.bytes / sink.count:,.0f} bytes each")  # fmt: skip

    broker = _broker()
    if broker is None:
        print("broker not reachable (run `arbor up`): publishing runs skipped")
        return
    host, port, user, pw = broker
    for shared in (True, False):
        for paced in (False, True) if not shared else (False,):
            dur = realtime if paced else seconds
            if dur <= 0:
                continue
            fleet = Fleet(factory, rate_hz=rate, start=START, seed=1)
            truth = Truth(fleet)
            tp = MqttTransport(host, port, site=f"bench{os.getpid()}", machine_ids=ids,
                               username=user, password=pw, shared=shared)  # fmt: skip
            ctl = I5Controllers(fleet, tp, truth=truth, batch_s=1.0)
            shutdown = ctl.shutdown
            ctl.shutdown = lambda t: None  # type: ignore[method-assign]
            run_loop(fleet, ctl, truth, duration_s=WARMUP_S, speedup=0, transport=tp)
            tp.drain(60)
            acked0 = tp.stats.acked
            r = run_loop(fleet, ctl, truth, duration_s=dur, speedup=1.0 if paced else 0,
                         transport=tp)  # fmt: skip
            c0 = time.process_time()
            ok = tp.drain(60)
            drain_cpu = time.process_time() - c0
            label = ("MQTT, one shared connection" if shared else
                     f"MQTT, {n} connections (one per machine)") + (
                     ", real time" if paced else "")  # fmt: skip
            _report(label, n, rate, r.sim_s, r.cpu_s + drain_cpu, r.wall_s)
            print(f"{'':<44} {(tp.stats.acked - acked0) / r.sim_s:>12,.0f} messages acked "
                  f"per simulated s, all acked: {ok}")  # fmt: skip
            shutdown(fleet.time)
            tp.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--machines", type=int, default=1000)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=20.0, help="simulated s per accelerated run")
    p.add_argument("--realtime", type=float, default=10.0, help="wall s of the real-time run")
    a = p.parse_args()
    print(f"simulator bench: {a.machines} machines at {a.rate:g} Hz, 1 s telemetry batches, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    bench(a.machines, a.rate, a.seconds, a.realtime)


if __name__ == "__main__":
    main()
