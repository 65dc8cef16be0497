"""Gateway throughput: SHDR lines parsed, and parsed + published (acknowledged by the broker).

    .venv/bin/python bench/gateway.py [--lines 20000]

Three figures on the same generated stream (multi-pair lines, five keys each, like a real
adapter's 10 ms sampling of axes, spindle and path):

1. parse only (``ShdrParser.feed``);
2. parse -> normalise -> report by exception -> batch -> disk queue (no network);
3. end to end: a TCP adapter -> the gateway in-process -> Mosquitto (ARBOR_MQTT_URL), counted
   when every message has been acknowledged by the broker (PUBACK) and deleted from disk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.app import Gateway  # noqa: E402
from gateway.buffer import DiskQueue  # noqa: E402
from gateway.config import GatewayConfig, GatewaySettings, PipelineConfig, resolve  # noqa: E402
from gateway.pipeline import MachinePipeline, MachineState  # noqa: E402
from gateway.sources.devices import load_devices  # noqa: E402
from gateway.sources.shdr import ShdrParser  # noqa: E402

DEVICES = ROOT / "tests" / "gateway" / "data" / "Devices.xml"


def make_lines(n: int) -> list[str]:
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        ts = (t0 + timedelta(milliseconds=10 * i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        out.append(
            f"{ts}|Xact|{i * 0.01:.3f}|Yact|{(i % 500) * 0.02:.3f}|Srpm|{8000 + i % 7}"
            f"|Sload|{30 + (i % 13) * 0.5}|Fact|{1500 + i % 3}"
        )
        if i % 100 == 0:
            out.append(f"{ts}|partcount|{i // 100}|execution|ACTIVE")
    return out


def bench_parse(lines: list[str], devices: Path = DEVICES) -> float:
    parser = ShdrParser(load_devices(devices))
    now = datetime.now(UTC)
    start = time.perf_counter()
    for line in lines:
        parser.feed(line, now)
    return len(lines) / (time.perf_counter() - start)


def bench_pipeline(lines: list[str], tmp: Path) -> tuple[float, int]:
    parser = ShdrParser(load_devices(DEVICES))
    store = DiskQueue(tmp / "pipe.sqlite")
    pipeline = MachinePipeline(MachineState("bench", "m1"), store, PipelineConfig())
    now = datetime.now(UTC)
    start = time.perf_counter()
    for line in lines:
        pipeline.process(parser.feed(line, now))
    pipeline.flush()
    rate = len(lines) / (time.perf_counter() - start)
    messages = len(store)
    store.close()
    return rate, messages


async def bench_end_to_end(
    lines: list[str], tmp: Path, url: str, queue_size: int | None = None
) -> tuple[float, int]:
    from arbor.broker import ensure_machines  # provisioning is the stack's business

    (user, password) = ensure_machines([("bench", "gw1")])[("bench", "gw1")]
    payload = ("\n".join(lines) + "\n").encode()
    done = asyncio.Event()

    async def adapter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()  # "* PING"
        writer.write(b"* PONG 60000\n")
        writer.write(payload)
        await writer.drain()
        await done.wait()
        writer.close()

    server = await asyncio.start_server(adapter, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = GatewayConfig.model_validate(
        {
            "mqtt": {"url": url},
            "buffer": {"path": str(tmp / "e2e.sqlite")},
            "pipeline": {} if queue_size is None else {"queue_size": queue_size},
            "source": [
                {
                    "address": f"127.0.0.1:{port}",
                    "devices": str(DEVICES),
                    "site": "bench",
                    "machine": "gw1",
                    "username": user,
                    "password": password,
                }
            ],
        }
    )
    settings = GatewaySettings()
    gw = Gateway(config, resolve(config, settings), settings)
    machine = gw.machines[0]
    start = time.perf_counter()
    task = asyncio.create_task(gw.run())
    parser = gw.connections[0].parser
    while parser.stats.lines < len(lines) + 1 or len(gw.store) or machine.pipeline.queue:
        await asyncio.sleep(0.05)
        if machine.pipeline._batch:  # let the last batch go out
            machine.pipeline.flush()
    elapsed = time.perf_counter() - start
    done.set()
    gw.stop()
    await asyncio.wait_for(task, 10)
    server.close()
    return len(lines) / elapsed, machine.publisher.stats.acked


class _Fleet:
    """``machines`` SHDR machines at 10 Hz on one multi-device adapter (the simulator, simulated
    time = wall time, every served line recorded), read by ``python -m gateway`` in its own
    process, and a subscriber on the broker recording, per telemetry message, when it arrived
    and its newest sample's timestamp (= when the adapter served that line)."""

    def __init__(
        self, url: str, machines: int, run_s: float, tmp: Path, queue_size: int | None = None
    ) -> None:
        self.url, self.machines, self.run_s, self.tmp = url, machines, run_s, tmp
        self.queue_size = queue_size
        self.site = f"gk{os.getpid()}"
        self.devices, self.buffer = tmp / "Devices.xml", tmp / "kill.sqlite"
        self.record = tmp / "served.shdr"
        self.newest: dict[str, float] = {}
        self.arrivals: list[tuple[float, float, int]] = []  # (arrived, newest ts, samples)
        self.min_lag = float("inf")  # the adapter clock's offset (a few ms)
        self.names: list[str] = []
        self.lock = threading.Lock()
        self.sim: subprocess.Popen[bytes] | None = None
        self.gw: subprocess.Popen[bytes] | None = None
        self.sub: Any = None

    def __enter__(self) -> _Fleet:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from protocol import decode_telemetry, parse_topic
        from protocol.endpoint import parse_mqtt_url

        ep = parse_mqtt_url(self.url)
        port = _free_port()
        toml = self.tmp / "shdr.toml"
        machines = self.machines
        kinds = "".join(
            f'[[machines]]\nkind = "{k}"\ncount = {machines // 3 + (i < machines % 3)}\n'
            f'prefix = "k{k[0]}"\n'
            for i, k in enumerate(("mill", "five_axis", "lathe"))
        )
        toml.write_text(
            f'site = "{self.site}"\n[calendar]\nworkdays = ["mon","tue","wed","thu","fri","sat",'
            '"sun"]\nshifts = [{name = "a", start = "00:00", end = "12:00"}, {name = "b", '
            'start = "12:00", end = "00:00"}]\nbreaks = []\n' + kinds
        )
        start = datetime.now(UTC) + timedelta(seconds=2)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARBOR_")}
        self.sim = subprocess.Popen(
            [sys.executable, "-m", "simulators", "--transport", "shdr", "--factory", str(toml),
             "--rate", "10", "--duration", str(self.run_s + 150), "--speedup", "1", "--start",
             start.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", "--shdr-port", str(port),
             "--devices-xml", str(self.devices), "--record", str(self.record)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

        def on_message(client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
            now = time.time()
            t = parse_topic(msg.topic)
            samples = decode_telemetry(msg.payload).samples
            top = max(s.ts.timestamp() for s in samples)
            with self.lock:
                m = t.machine or ""
                self.newest[m] = max(self.newest.get(m, 0.0), top)
                self.min_lag = min(self.min_lag, now - top)
                self.arrivals.append((now, top, len(samples)))

        self.sub = sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        sub.username_pw_set(ep.username, ep.password)
        sub.on_message = on_message
        sub.connect(ep.host, ep.port)
        sub.subscribe(f"arbor/v1/{self.site}/+/telemetry", qos=1)
        sub.loop_start()
        while not self.devices.exists():
            time.sleep(0.1)
        root = __import__("xml.etree.ElementTree").etree.ElementTree.parse(self.devices).getroot()
        self.names = [d.get("name") for d in root.iter() if d.tag.endswith("}Device")]
        cfg = [f'name = "gk"\n[mqtt]\nurl = "{self.url}"\n[buffer]\npath = "{self.buffer}"\n']
        if self.queue_size:
            cfg.append(f"[pipeline]\nqueue_size = {self.queue_size}\n")
        cfg += [
            f'[[source]]\naddress = "127.0.0.1:{port}"\ndevices = "{self.devices}"\n'
            f'device = "{n}"\nsite = "{self.site}"\nmachine = "{n}"\n'
            for n in self.names
        ]
        (self.tmp / "gw.toml").write_text("".join(cfg))
        self.gw = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--config", str(self.tmp / "gw.toml")], cwd=ROOT,
            env=env, stdout=subprocess.DEVNULL, stderr=open(self.tmp / "gw.log", "wb"),
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while len(self.newest) < len(self.names) and time.monotonic() < deadline:
            time.sleep(0.2)
        return self

    def gateway_cpu_s(self) -> float:
        """CPU seconds (user + system) the gateway process has used so far."""
        assert self.gw is not None
        fields = Path(f"/proc/{self.gw.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __exit__(self, *exc: object) -> None:
        if self.gw is not None and self.gw.poll() is None:
            self.gw.kill()
            self.gw.wait(10)
        if self.sim is not None:
            self.sim.terminate()
            self.sim.wait(30)
        if self.sub is not None:
            self.sub.disconnect()
            self.sub.loop_stop()


def fleet_lag(
    url: str, machines: int, run_s: float, tmp: Path, queue_size: int | None = None
) -> dict[str, float]:
    """Run ``machines`` SHDR machines x 10 Hz over one adapter connection through ``python -m
    gateway`` for ``run_s`` seconds after every machine's first sample, and measure:

    * lag = broker delivery time - the newest sample's timestamp (the time the adapter served
      the line, less the simulator clock's constant offset), per telemetry message: p50 / p99 /
      max, and the lag at the end (the batch interval is not in it: the newest sample of a
      batch is the one just read when the batch is written);
    * lines/s the adapter served in the window (the gateway reads as fast as it is served if it
      keeps up: the adapter waits for a slow reader, so a gateway that lags also slows the
      adapter and the lag shows in the timestamps);
    * the gateway's CPU per line: lines per gateway CPU-second (its capacity on one core),
      next to the parse-only rate of the same recorded lines (the ceiling: the ratio is how
      much of the parser's speed survives the rest of the gateway).
    """
    with _Fleet(url, machines, run_s, tmp, queue_size) as fleet:
        time.sleep(3)  # the birth snapshots and the first batches
        with fleet.lock:
            fleet.arrivals.clear()
        served0 = _count_lines(fleet.record)
        cpu0, t0 = fleet.gateway_cpu_s(), time.time()
        time.sleep(run_s)
        cpu1, t1 = fleet.gateway_cpu_s(), time.time()
        served1 = _count_lines(fleet.record)
        with fleet.lock:
            arrivals = list(fleet.arrivals)
            offset = fleet.min_lag
    lines = (served1 - served0) / (t1 - t0)
    cpu = (cpu1 - cpu0) / (t1 - t0)
    # The simulator's clock (simulated time from --start) is offset from the wall clock by its
    # start-up time, constant over a run: the smallest delivery lag seen estimates it.
    lags = sorted(a - ts - offset for a, ts, _ in arrivals)
    end_lags = [a - ts - offset for a, ts, _ in arrivals if a > t1 - 2]
    parse = bench_parse(fleet.record.read_text().splitlines(), fleet.devices)
    out = {
        "machines": machines,
        "window_s": round(t1 - t0, 1),
        "lines_per_s": round(lines, 1),
        "samples_per_s": round(sum(n for *_, n in arrivals) / (t1 - t0), 1),
        "lag_p50_s": round(lags[len(lags) // 2], 3) if lags else float("nan"),
        "lag_p99_s": round(lags[int(len(lags) * 0.99)], 3) if lags else float("nan"),
        "lag_max_s": round(lags[-1], 3) if lags else float("nan"),
        "lag_end_s": round(max(end_lags), 3) if end_lags else float("nan"),
        "clock_offset_s": round(offset, 3),
        "gateway_cpu": round(cpu, 3),
        "lines_per_cpu_s": round(lines / cpu, 0) if cpu else float("nan"),
        "parse_only_lines_per_s": round(parse, 0),
    }
    out["ratio_to_parse_only"] = round(out["lines_per_cpu_s"] / parse, 3)
    return out


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def kill_window(
    url: str, machines: int, run_s: float, tmp: Path, queue_size: int | None = None
) -> dict[str, float]:
    """SIGKILL ``python -m gateway`` under load and measure, per machine, how much of what the
    adapter had already served was neither acknowledged by the broker nor on the disk buffer.

    Window = the adapter's clock at the kill - the newer of the two (what the kill took with
    it); the adapter's clock is wall time minus the smallest delivery lag seen (so the window is
    underestimated by that lag, a few ms to tens of ms).
    """
    from protocol import decode_telemetry

    with _Fleet(url, machines, run_s, tmp, queue_size) as fleet:
        assert fleet.gw is not None
        time.sleep(run_s)
        t_kill = time.time()
        fleet.gw.send_signal(signal.SIGKILL)
        fleet.gw.wait(30)
        time.sleep(2)  # the broker's last deliveries
        on_disk: dict[str, float] = {}
        with sqlite3.connect(fleet.buffer) as db:
            for machine, topic, payload in db.execute("SELECT machine, topic, payload FROM outbox"):
                if topic.endswith("/telemetry"):
                    top = max(s.ts.timestamp() for s in decode_telemetry(payload).samples)
                    m = machine.split("/")[-1]
                    on_disk[m] = max(on_disk.get(m, 0.0), top)
        with fleet.lock:
            served = t_kill - fleet.min_lag  # the adapter's clock at the kill
            windows = {
                n: round(served - max(fleet.newest.get(n, 0.0), on_disk.get(n, 0.0)), 3)
                for n in fleet.names
            }
        print(json.dumps({"load": os.getloadavg(), "clock_offset_s": round(fleet.min_lag, 3),
                          "windows_s": windows}))  # fmt: skip
        return windows


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=20_000)
    ap.add_argument("--kill-window", type=int, metavar="MACHINES", default=0,
                    help="instead: SIGKILL a gateway serving MACHINES SHDR machines under load "
                    "and print the per-machine loss window")  # fmt: skip
    ap.add_argument("--fleet", type=int, metavar="MACHINES", default=0,
                    help="instead: MACHINES SHDR machines x 10 Hz on one adapter connection "
                    "through python -m gateway; print lag and lines/s")  # fmt: skip
    ap.add_argument("--seconds", type=float, default=60.0, help="--fleet: measured window")
    ap.add_argument("--kill-after", type=float, default=15.0)
    ap.add_argument("--queue-size", type=int, help="gateway [pipeline] queue_size (default)")
    args = ap.parse_args()
    if args.fleet:
        from arbor.paths import load_env_file

        load_env_file()
        print(f"uptime before: {_uptime()}")
        with tempfile.TemporaryDirectory() as d:
            r = fleet_lag(os.environ["ARBOR_MQTT_URL"], args.fleet, args.seconds, Path(d),
                          args.queue_size)  # fmt: skip
        print(json.dumps(r))
        print(f"{r['machines']} SHDR machines x 10 Hz, one adapter connection, {r['window_s']} s: "
              f"{r['lines_per_s']:.0f} lines/s served ({r['samples_per_s']:.0f} samples/s "
              f"published); lag p50 {r['lag_p50_s']:.2f} s, p99 {r['lag_p99_s']:.2f} s, max "
              f"{r['lag_max_s']:.2f} s, at the end {r['lag_end_s']:.2f} s; gateway CPU "
              f"{r['gateway_cpu'] * 100:.0f}% of a core = {r['lines_per_cpu_s']:.0f} lines per "
              f"CPU-s, {r['ratio_to_parse_only']:.2f} x parse-only "
              f"({r['parse_only_lines_per_s']:.0f} lines/s)")  # fmt: skip
        print(f"uptime after: {_uptime()}")
        return
    if args.kill_window:
        from arbor.paths import load_env_file

        load_env_file()
        with tempfile.TemporaryDirectory() as d:
            w = kill_window(os.environ["ARBOR_MQTT_URL"], args.kill_window, args.kill_after,
                            Path(d), args.queue_size)  # fmt: skip
        print(f"SIGKILL loss window over {len(w)} machines: max {max(w.values()):.2f} s, "
              f"median {sorted(w.values())[len(w) // 2]:.2f} s")  # fmt: skip
        return
    lines = make_lines(args.lines)
    print(f"{len(lines)} SHDR lines, about 5 keys each")
    print(f"parse only:                      {bench_parse(lines):>10,.0f} lines/s")
    with tempfile.TemporaryDirectory() as d:
        rate, messages = bench_pipeline(lines, Path(d))
        print(f"parse+pipeline+disk queue:       {rate:>10,.0f} lines/s ({messages} messages)")
        url = os.environ.get("ARBOR_MQTT_URL", "")
        if not url:
            from arbor.paths import load_env_file

            load_env_file()
            url = os.environ.get("ARBOR_MQTT_URL", "")
        if url:
            rate, acked = asyncio.run(bench_end_to_end(lines, Path(d), url, args.queue_size))
            print(f"end to end, broker-acknowledged: {rate:>10,.0f} lines/s ({acked} messages)")
        else:
            print("end to end: skipped (no ARBOR_MQTT_URL; run `arbor up`)")


if __name__ == "__main__":
    main()
