"""Fault drills on a private Mosquitto (the shared one stays up):

* the broker stopped for 30 s while a machine streams, then restarted;
* the gateway (a subprocess) killed with SIGKILL while its broker is down, then restarted.

A subscriber with a persistent session checks that every message arrives, exactly once after
de-duplication on (session, seq) (the duplicate count is reported and bounded by the in-flight
window), in seq order within each session, and that every value the adapter sent made it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.config import GatewayConfig, GatewaySettings, resolve
from protocol import all_filter, decode_telemetry
from tests.gateway.helpers import DATA, Received, ShdrServer, Subscriber
from tests.servers import PrivateBroker

pytestmark = [pytest.mark.services, pytest.mark.slow]

RATE_HZ = 50


@pytest.fixture(scope="module")
def broker() -> Iterator[PrivateBroker]:
    with PrivateBroker() as b:
        yield b


class Streamer:
    """Sends ``|ts|Xact|n`` lines at RATE_HZ with rising source timestamps and n = 0, 1, 2..."""

    def __init__(self, adapter: ShdrServer) -> None:
        self.adapter = adapter
        self.n = 0
        self.t0 = datetime.now(UTC)
        self.sent: list[int] = []

    async def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ts = (self.t0 + timedelta(milliseconds=20 * self.n)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            if self.adapter.writers:
                await self.adapter.send(f"{ts}|Xact|{self.n}")
                self.sent.append(self.n)
            self.n += 1
            await asyncio.sleep(1 / RATE_HZ)


def _analyse(
    msgs: list[Received],
) -> tuple[dict[str, list[int]], dict[tuple[str, int], bool], list[float], int]:
    """Per session: seqs in arrival order (first copies); historical flag per message; the
    position_x values of unique messages; the number of duplicate deliveries."""
    order: dict[str, list[int]] = {}
    seen: dict[tuple[str, int], bool] = {}
    values: list[float] = []
    dups = 0
    for m in msgs:
        if not m.topic.endswith("/telemetry"):
            continue
        t = decode_telemetry(m.payload)
        key = (t.session, t.seq)
        if key in seen:
            dups += 1
            continue
        seen[key] = t.historical
        order.setdefault(t.session, []).append(t.seq)
        values.extend(float(s.values["position_x"]) for s in t.samples if "position_x" in s.values)
    return order, seen, values, dups


def _values_by_session(msgs: list[Received]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    seen: set[tuple[str, int]] = set()
    for m in msgs:
        if m.topic.endswith("/telemetry"):
            t = decode_telemetry(m.payload)
            if (t.session, t.seq) not in seen:
                seen.add((t.session, t.seq))
                out.setdefault(t.session, []).extend(
                    float(s.values["position_x"]) for s in t.samples if "position_x" in s.values
                )
    return out


def _check_sessions(order: dict[str, list[int]]) -> None:
    for session, seqs in order.items():
        assert seqs == sorted(seqs), f"session {session}: out of order"
        assert seqs == list(range(len(seqs))), f"session {session}: gap or late start"


def _config(adapter_port: int, broker: PrivateBroker, site: str, buffer: Path) -> GatewayConfig:
    (user, pw) = broker.ensure_machines([(site, "m1")])[(site, "m1")]
    return GatewayConfig.model_validate(
        {
            "mqtt": {
                "url": f"mqtt://{broker.host}:{broker.port}",
                "reconnect_min_s": 0.2,
                "reconnect_max_s": 1.0,
                "connect_timeout_s": 3,
            },
            "buffer": {"path": str(buffer)},
            "pipeline": {"batch_interval_s": 0.1},
            "source": [
                {
                    "address": f"127.0.0.1:{adapter_port}",
                    "devices": str(DATA / "Devices.xml"),
                    "site": site,
                    "machine": "m1",
                    "username": user,
                    "password": pw,
                }
            ],
        }
    )


def _subscriber(broker: PrivateBroker, site: str) -> Subscriber:
    user, pw = broker.service_credentials
    return Subscriber(broker.host, broker.port, user, pw, all_filter(site), client_id=f"sub-{site}")


def _stream_through(
    sub: Subscriber, scenario: Callable[[], Coroutine[Any, Any, Streamer]]
) -> tuple[Streamer, dict[str, list[int]], dict[tuple[str, int], bool], list[float], int]:
    """Run ``scenario``, wait until ``sub`` holds a message for every line streamed, stop it:
    the stream and ``_analyse`` of what arrived, its sessions already checked."""
    try:
        stream = asyncio.run(scenario())
        sub.wait_for(lambda m: len(_analyse(m)[2]) >= len(stream.sent), 15)
    finally:
        sub.stop()
    order, seen, values, dups = _analyse(sub.snapshot())
    _check_sessions(order)
    return stream, order, seen, values, dups


async def _drain_and_stop(gw: Gateway, task: asyncio.Task[None]) -> None:
    """Wait until the disk buffer is empty (all replayed to the broker), then stop the gateway."""
    deadline = time.monotonic() + 20
    while len(gw.store) and time.monotonic() < deadline:  # noqa: ASYNC110 (polling a count)
        await asyncio.sleep(0.1)
    assert len(gw.store) == 0, "backlog drained"
    gw.stop()
    await asyncio.wait_for(task, 10)


def test_broker_down_30_s(broker: PrivateBroker, tmp_path: Path) -> None:
    site = "outage"
    sub = _subscriber(broker, site).start()

    async def scenario() -> Streamer:
        async with ShdrServer() as adapter:
            config = _config(adapter.port, broker, site, tmp_path / "buffer.sqlite")
            settings = GatewaySettings()
            gw = Gateway(config, resolve(config, settings), settings)
            task = asyncio.create_task(gw.run())
            await adapter.wait_connected()
            stream = Streamer(adapter)
            await stream.run_for(3)
            await asyncio.to_thread(broker.stop)
            await stream.run_for(30)
            assert len(gw.store) > 0, "the outage backlog is on disk"
            await asyncio.to_thread(broker.start)
            await stream.run_for(3)
            await _drain_and_stop(gw, task)
            return stream

    stream, order, seen, values, dups = _stream_through(sub, scenario)
    assert len(order) >= 2, "the reconnect births a new session"
    assert sorted(values) == [float(n) for n in stream.sent], "every value exactly once"
    assert any(seen.values()), "the outage backlog was replayed as historical"
    print(
        f"\nbroker outage 30 s: {len(stream.sent)} lines, {len(seen)} messages in "
        f"{len(order)} sessions, {sum(seen.values())} historical, {dups} duplicate deliveries"
    )
    assert dups <= 100


def test_broker_down_when_the_gateway_starts(broker: PrivateBroker, tmp_path: Path) -> None:
    """Batches stored before the first connection are numbered in the session that connection
    then announces: the numbering must go on, not restart at 0 (two messages with one key: the
    ingest ledger takes the second for a copy, or keeps both as a duplicate key)."""
    site = "coldstart"
    sub = _subscriber(broker, site).start()

    async def scenario() -> Streamer:
        async with ShdrServer() as adapter:
            config = _config(adapter.port, broker, site, tmp_path / "buffer.sqlite")
            settings = GatewaySettings()
            await asyncio.to_thread(broker.stop)
            gw = Gateway(config, resolve(config, settings), settings)
            task = asyncio.create_task(gw.run())
            await adapter.wait_connected()
            stream = Streamer(adapter)
            await stream.run_for(2)
            assert len(gw.store) > 0, "batches wait on disk for the first connection"
            await asyncio.to_thread(broker.start)
            await stream.run_for(3)
            await _drain_and_stop(gw, task)
            return stream

    stream, _order, _seen, values, _dups = _stream_through(sub, scenario)
    assert sorted(values) == [float(n) for n in stream.sent], "every value exactly once"


def test_gateway_sigkill_and_restart(broker: PrivateBroker, tmp_path: Path) -> None:
    site = "sigkill"
    sub = _subscriber(broker, site).start()
    buffer = tmp_path / "buffer.sqlite"

    async def start_gateway(config_path: Path) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "--config",
            str(config_path),
            "--log-level",
            "WARNING",
            env={**os.environ, "ARBOR_MQTT_URL": ""},
        )

    async def scenario() -> tuple[Streamer, set[tuple[str, int]]]:
        async with ShdrServer() as adapter:
            config = _config(adapter.port, broker, site, buffer)
            config_path = tmp_path / "gateway.toml"
            config_path.write_text(_toml(config))
            proc = await start_gateway(config_path)
            await adapter.wait_connected(20)
            stream = Streamer(adapter)
            await stream.run_for(2)
            await asyncio.to_thread(broker.stop)
            await stream.run_for(2)
            await asyncio.sleep(0.3)  # let the last batch reach the disk
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            with sqlite3.connect(buffer) as db:
                backlog = {(s, q) for s, q in db.execute("SELECT session, seq FROM outbox")}
            assert backlog, "messages were waiting on disk when the gateway died"
            await adapter.drop_clients()
            await asyncio.to_thread(broker.start)
            proc = await start_gateway(config_path)
            await adapter.wait_connected(20)
            await stream.run_for(2)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with sqlite3.connect(buffer) as db:
                    if db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0:
                        break
                await asyncio.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 15)
            return stream, backlog

    try:
        stream, backlog = asyncio.run(scenario())
        sub.wait_for(lambda m: backlog <= set(_analyse(m)[1]), 15)
    finally:
        sub.stop()
    order, seen, values, dups = _analyse(sub.snapshot())
    _check_sessions(order)
    assert backlog <= set(seen), "every message on disk at the kill arrived after the restart"
    assert all(seen[k] for k in backlog), "the replayed backlog is marked historical"
    assert len(values) == len(set(values)), "no value twice"
    by_session = _values_by_session(sub.snapshot())
    before_kill = sorted(v for s in sorted(by_session)[:-1] for v in by_session[s])
    assert before_kill == [float(n) for n in range(len(before_kill))], "none lost before the kill"
    print(
        f"\nSIGKILL: {len(stream.sent)} lines sent, {len(seen)} messages in {len(order)} sessions, "
        f"{len(backlog)} replayed from disk after the kill, {dups} duplicate deliveries"
    )


def _toml(config: GatewayConfig) -> str:
    m = config.mqtt
    s = config.source[0]
    return f"""
name = "kill-test"
[mqtt]
url = "{m.url}"
reconnect_min_s = 0.2
reconnect_max_s = 1.0
connect_timeout_s = 3
[buffer]
path = "{config.buffer.path}"
[pipeline]
batch_interval_s = 0.1
[[source]]
type = "shdr"
address = "{s.address}"
devices = "{s.devices}"
site = "{s.site}"
machine = "{s.machine}"
username = "{s.username}"
password = "{s.password}"
"""
