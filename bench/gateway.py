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


async def bench_end_to_end(lines: list[str], tmp: Path, url: str) -> tuple[float, int]:
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=20_000)
    args = ap.parse_args()
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
            rate, acked = asyncio.run(bench_end_to_end(lines, Path(d), url))
            print(f"end to end, broker-acknowledged: {rate:>10,.0f} lines/s ({acked} messages)")
        else:
            print("end to end: skipped (no ARBOR_MQTT_URL; run `arbor up`)")


if __name__ == "__main__":
    main()
