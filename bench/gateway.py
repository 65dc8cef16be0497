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
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

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


def bench_parse(lines: list[str]) -> float:
    parser = ShdrParser(load_devices(DEVICES))
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


def kill_window(
    url: str, machines: int, run_s: float, tmp: Path, queue_size: int | None = None
) -> dict[str, float]:
    """SIGKILL ``python -m gateway`` under load and measure, per machine, how much of what the
    adapter had already served was neither acknowledged by the broker nor on the disk buffer.

    The SHDR simulator (``--machines`` devices on one multi-device adapter, 10 Hz, simulated
    time = wall time) feeds the gateway; a subscriber records the newest sample timestamp the
    broker delivered per machine; after the kill the newest sample left on disk is read from the
    SQLite buffer. Window = the adapter's clock at the kill - the newer of the two (what the kill
    took with it); the adapter's clock is wall time minus the smallest delivery lag seen (so the
    window is underestimated by that lag, a few ms to tens of ms).
    """
    import json
    import signal
    import sqlite3
    import subprocess
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from protocol import decode_telemetry, parse_topic
    from protocol.endpoint import parse_mqtt_url

    ep = parse_mqtt_url(url)
    site = f"gk{os.getpid()}"
    port = _free_port()
    devices, buffer = tmp / "Devices.xml", tmp / "kill.sqlite"
    toml = tmp / "shdr.toml"
    kinds = "".join(
        f'[[machines]]\nkind = "{k}"\ncount = {machines // 3 + (i < machines % 3)}\n'
        f'prefix = "k{k[0]}"\n'
        for i, k in enumerate(("mill", "five_axis", "lathe"))
    )
    toml.write_text(
        f'site = "{site}"\n[calendar]\nworkdays = ["mon","tue","wed","thu","fri","sat","sun"]\n'
        'shifts = [{name = "a", start = "00:00", end = "12:00"}, {name = "b", start = "12:00", '
        'end = "00:00"}]\nbreaks = []\n' + kinds
    )
    start = datetime.now(UTC) + timedelta(seconds=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBOR_")}
    sim = subprocess.Popen(
        [sys.executable, "-m", "simulators", "--transport", "shdr", "--factory", str(toml),
         "--rate", "10", "--duration", str(run_s + 30), "--speedup", "1", "--start",
         start.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", "--shdr-port", str(port),
         "--devices-xml", str(devices)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    newest: dict[str, float] = {}
    lag = [float("inf")]  # min (arrival - newest sample ts): the adapter clock's offset
    lock = threading.Lock()

    def on_message(client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
        t = parse_topic(msg.topic)
        top = max(s.ts.timestamp() for s in decode_telemetry(msg.payload).samples)
        with lock:
            newest[t.machine or ""] = max(newest.get(t.machine or "", 0.0), top)
            lag[0] = min(lag[0], time.time() - top)

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.username_pw_set(ep.username, ep.password)
    sub.on_message = on_message
    sub.connect(ep.host, ep.port)
    sub.subscribe(f"arbor/v1/{site}/+/telemetry", qos=1)
    sub.loop_start()
    gw = None
    try:
        while not devices.exists():
            time.sleep(0.1)
        root = __import__("xml.etree.ElementTree").etree.ElementTree.parse(devices).getroot()
        names = [d.get("name") for d in root.iter() if d.tag.endswith("}Device")]
        cfg = [f'name = "gk"\n[mqtt]\nurl = "{url}"\n[buffer]\npath = "{buffer}"\n']
        if queue_size:
            cfg.append(f"[pipeline]\nqueue_size = {queue_size}\n")
        cfg += [
            f'[[source]]\naddress = "127.0.0.1:{port}"\ndevices = "{devices}"\n'
            f'device = "{n}"\nsite = "{site}"\nmachine = "{n}"\n'
            for n in names
        ]
        (tmp / "gw.toml").write_text("".join(cfg))
        gw = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--config", str(tmp / "gw.toml")], cwd=ROOT,
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while len(newest) < len(names) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(run_s)
        t_kill = time.time()
        gw.send_signal(signal.SIGKILL)
        gw.wait(30)
        time.sleep(2)  # the broker's last deliveries
        on_disk: dict[str, float] = {}
        with sqlite3.connect(buffer) as db:
            for machine, topic, payload in db.execute("SELECT machine, topic, payload FROM outbox"):
                if topic.endswith("/telemetry"):
                    top = max(s.ts.timestamp() for s in decode_telemetry(payload).samples)
                    m = machine.split("/")[-1]
                    on_disk[m] = max(on_disk.get(m, 0.0), top)
        with lock:
            served = t_kill - lag[0]  # the adapter's clock at the kill
            windows = {
                n: round(served - max(newest.get(n, 0.0), on_disk.get(n, 0.0)), 3) for n in names
            }
        print(json.dumps({"load": os.getloadavg(), "clock_offset_s": round(lag[0], 3),
                          "windows_s": windows}))  # fmt: skip
        return windows
    finally:
        if gw is not None and gw.poll() is None:
            gw.kill()
            gw.wait(10)
        sim.terminate()
        sim.wait(30)
        sub.disconnect()
        sub.loop_stop()


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
    ap.add_argument("--kill-after", type=float, default=15.0)
    ap.add_argument("--queue-size", type=int, help="gateway [pipeline] queue_size (default)")
    args = ap.parse_args()
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
