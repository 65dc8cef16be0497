"""The gateway in-process against the shared broker and a hand-written SHDR adapter: telemetry,
events, birth, program download (chunked, checksummed) and rebirth over cmd/reply."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.config import GatewayConfig, GatewaySettings, resolve
from protocol import (
    ProgramCommand,
    RebirthCommand,
    all_filter,
    cmd_topic,
    decode_event,
    decode_reply,
    decode_status,
    decode_telemetry,
    encode,
)
from protocol.program import split_program
from tests.gateway.helpers import DATA, Received, ShdrServer, Subscriber

pytestmark = pytest.mark.services


def _config(port: int, site: str, machine: str, tmp: Path, user: str, pw: str) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "name": "test",
            "mqtt": {"reconnect_min_s": 0.1, "reconnect_max_s": 1.0},
            "buffer": {"path": str(tmp / "buffer.sqlite")},
            "pipeline": {"batch_interval_s": 0.1},
            "source": [
                {
                    "address": f"127.0.0.1:{port}",
                    "devices": str(DATA / "Devices.xml"),
                    "site": site,
                    "machine": machine,
                    "username": user,
                    "password": pw,
                    "program_dir": str(tmp / "programs"),
                    "controller": {"vendor": "arbor", "model": "VMC-500", "kind": "vertical_mc"},
                }
            ],
        }
    )


def _replies(msgs: list[Received], request: str) -> list[object]:
    out = []
    for m in msgs:
        if "/reply/" in m.topic:
            r = decode_reply(m.payload)
            if r.id == request:
                out.append(r)
    return out


async def _scenario(
    sub: Subscriber,
    settings: GatewaySettings,
    site: str,
    machine: str,
    tmp_path: Path,
    user: str,
    pw: str,
) -> None:
    async with ShdrServer(heartbeat_ms=500) as adapter:
        config = _config(adapter.port, site, machine, tmp_path, user, pw)
        gw = Gateway(config, resolve(config, settings), settings)
        task = asyncio.create_task(gw.run())
        await adapter.wait_connected()
        lines = (DATA / "capture.shdr").read_text().splitlines()
        await adapter.send(*lines)

        def has_all(msgs: list[Received]) -> bool:
            telemetry = [m for m in msgs if m.topic.endswith("/telemetry")]
            xs = [
                s.values.get("position_x")
                for m in telemetry
                for s in decode_telemetry(m.payload).samples
            ]
            return 0.5 in xs

        assert await asyncio.to_thread(sub.wait_for, has_all, 15)
        # Program download: three chunks, then a corrupt transfer.
        program = program_bytes()
        chunks = split_program("O1234", "3", program, chunk_size=400)
        topic = cmd_topic(site, machine, "program")
        for i, args in enumerate(chunks):
            cmd = ProgramCommand(id=f"p-{i}", ts=datetime.now(UTC), args=args)
            await asyncio.to_thread(sub.publish, topic, encode(cmd))
        last = f"p-{len(chunks) - 1}"
        assert await asyncio.to_thread(sub.wait_for, _has_reply(last), 10)
        bad = split_program("O9", "1", b"G0 X1\n")[0].model_copy(
            update={"sha256": hashlib.sha256(b"other").hexdigest()}
        )
        await asyncio.to_thread(
            sub.publish,
            topic,
            encode(ProgramCommand(id="bad-1", ts=datetime.now(UTC), args=bad)),
        )
        await asyncio.to_thread(sub.publish, topic, b'{"v":1,"id":"junk-1","ts":"nope","args":{}}')
        rebirth = RebirthCommand(id="rb-1", ts=datetime.now(UTC))
        await asyncio.to_thread(sub.publish, cmd_topic(site, machine, "rebirth"), encode(rebirth))
        await asyncio.to_thread(
            sub.publish,
            cmd_topic(site, machine, "dance"),
            b'{"v":1,"id":"d-1","ts":"2024-05-01T00:00:00Z"}',
        )
        for rid in ("bad-1", "junk-1", "rb-1", "d-1"):
            assert await asyncio.to_thread(sub.wait_for, lambda m, r=rid: _replies(m, r), 10), rid
        gw.stop()
        await asyncio.wait_for(task, 10)


def _has_reply(request: str) -> Callable[[list[Received]], bool]:
    return lambda msgs: bool(_replies(msgs, request))


def test_gateway_end_to_end(
    mqtt_settings: Any,
    provision_machines: Callable[[list[tuple[str, str]]], dict[tuple[str, str], tuple[str, str]]],
    unique_site: str,
    tmp_path: Path,
) -> None:
    site, machine = unique_site, "vmc1"
    (user, pw) = provision_machines([(site, machine)])[(site, machine)]
    (tmp_path / "programs").mkdir()
    ms = mqtt_settings
    sub = Subscriber(
        ms.host,
        ms.port,
        ms.username,
        ms.password,
        all_filter(site),
        client_id=f"sub-{site}",
    ).start()
    settings = GatewaySettings(mqtt_url=f"mqtt://{ms.host}:{ms.port}")

    try:
        asyncio.run(_scenario(sub, settings, site, machine, tmp_path, user, pw))
    finally:
        sub.stop()
    msgs = sub.snapshot()
    assert (tmp_path / "programs" / "O1234").read_bytes() == program_bytes()
    done = _replies(
        msgs, f"p-{len(split_program('O1234', '3', program_bytes(), chunk_size=400)) - 1}"
    )
    assert done[0].ok and done[0].result["complete"] is True
    assert _replies(msgs, "p-0")[0].result == {"received": 0}
    assert _replies(msgs, "bad-1")[0].error.code == "checksum_mismatch"
    assert _replies(msgs, "junk-1")[0].error.code == "bad_request"
    assert _replies(msgs, "rb-1")[0].ok
    assert _replies(msgs, "d-1")[0].error.code == "unknown_command"
    statuses = [decode_status(m.payload) for m in msgs if m.topic.endswith("/status")]
    assert statuses[0].online and statuses[0].controller.model == "VMC-500"
    assert not statuses[-1].online and statuses[-1].reason == "shutdown"
    assert len({s.session for s in statuses}) >= 2, "the time jump in the capture births a session"
    events = [decode_event(m.payload) for m in msgs if m.topic.endswith("/event")]
    signals = {e.signal for ev in events for e in ev.events}
    assert {"execution", "program", "part_count", "condition", "x_mtc_cutting_tool"} <= signals
    per_session: dict[str, list[int]] = {}
    for m in msgs:
        if m.topic.endswith(("/telemetry", "/event")):
            msg = (
                decode_telemetry(m.payload)
                if m.topic.endswith("telemetry")
                else decode_event(m.payload)
            )
            per_session.setdefault(msg.session, []).append(msg.seq)
    for seqs in per_session.values():
        assert sorted(seqs) == list(range(len(seqs)))


def program_bytes() -> bytes:
    return b"%\nO1234\nG0 X0 Y0\nM30\n%\n" * 50
