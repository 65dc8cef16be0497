"""The simulated i5 answers ``cmd/program`` and ``cmd/rebirth`` on ``reply/*`` (docs/protocol.md),
against the real broker of `arbor up` with per-machine credentials: a commander on the service
account pushes a program in chunks and asks for a rebirth, the machine replies."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from protocol import (
    ProgramCommand,
    RebirthCommand,
    Reply,
    Status,
    cmd_topic,
    decode,
    decode_reply,
    encode,
    parse_topic,
)
from protocol.program import split_program
from simulators.controllers import I5Controllers
from simulators.downlink import I5Downlink
from simulators.factory import default_factory
from simulators.model import Fleet
from simulators.mqtt_publisher import MqttTransport

pytestmark = pytest.mark.services

Provision = Callable[[list[tuple[str, str]]], dict[tuple[str, str], tuple[str, str]]]


class Commander:
    """The API's side: publishes commands, collects replies and statuses of a site."""

    def __init__(self, settings: Any, site: str) -> None:
        self.replies: list[tuple[str, Reply]] = []
        self.statuses: list[Status] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.username_pw_set(settings.username, settings.password)
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self.ready.set()
        c.connect(settings.host, settings.port)
        c.subscribe([(f"arbor/v1/{site}/+/reply/+", 1), (f"arbor/v1/{site}/+/status", 1)])
        c.loop_start()
        assert self.ready.wait(20)
        self.client = c

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        topic = parse_topic(msg.topic)
        with self.lock:
            if topic.channel.value == "reply":
                self.replies.append((topic.command or "", decode_reply(msg.payload)))
            elif msg.payload:
                status = decode(topic, msg.payload)
                assert isinstance(status, Status)
                self.statuses.append(status)

    def send(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_program_download_and_rebirth_are_answered(
    mqtt_settings: Any, provision_machines: Provision, unique_site: str
) -> None:
    site = unique_site + "d"
    start = datetime(2025, 3, 3, 6, 0, tzinfo=UTC).timestamp()
    fleet = Fleet(default_factory(2, site=site), rate_hz=10, start=start, seed=2)
    ids = [m.machine_id for m in fleet.factory.machines]
    creds = provision_machines([(site, mid) for mid in ids])
    cmd = Commander(mqtt_settings, site)
    tp = MqttTransport(
        mqtt_settings.host, mqtt_settings.port, site=site, machine_ids=ids, username=None,
        password=None, credentials={i: creds[(site, mid)] for i, mid in enumerate(ids)},
    )  # fmt: skip
    ctl = I5Controllers(fleet, tp, run_id="dl")
    downlink = I5Downlink(ctl, tp)
    tp.on_command = downlink.handle

    def run_until(pred: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with cmd.lock:
                if pred():
                    return
            assert time.monotonic() < deadline, "timed out waiting for replies"
            ctl.on_step(fleet.step())
            tp.service(0.02)

    program = b"%\nO5101\n" + b"G01 X10 Y10 F800\n" * 12000 + b"M30\n%\n"  # ~200 kB, 3 chunks
    chunks = split_program("O5101", "7", program)
    assert len(chunks) >= 3
    try:
        run_until(lambda: len(cmd.statuses) >= 2)  # both machines born (and subscribed)
        tp.wait_connected(30)
        assert tp.drain(30)
        for i, args in enumerate(chunks):
            msg = ProgramCommand(id=f"p-{i}", ts=datetime.now(UTC), args=args)
            cmd.send(cmd_topic(site, ids[0], "program"), encode(msg))
        bad = chunks[0].model_copy(update={"sha256": "0" * 64, "chunk_count": 1, "size": 5,
                                            "data": "aGVsbG8="})  # fmt: skip
        cmd.send(cmd_topic(site, ids[1], "program"),
                 encode(ProgramCommand(id="bad", ts=datetime.now(UTC), args=bad)))  # fmt: skip
        cmd.send(cmd_topic(site, ids[1], "rebirth"),
                 encode(RebirthCommand(id="rb", ts=datetime.now(UTC), args={})))  # fmt: skip
        cmd.send(
            cmd_topic(site, ids[1], "reboot"),
            b'{"v":1,"id":"x1","ts":"2025-01-01T00:00:00Z","args":{}}',
        )
        run_until(lambda: len(cmd.replies) >= len(chunks) + 3)
    finally:
        tp.stop()
        cmd.stop()
    by_id = {r.id: (name, r) for name, r in cmd.replies}
    for i in range(len(chunks) - 1):
        assert by_id[f"p-{i}"][1].ok and by_id[f"p-{i}"][1].result == {"received": i}
    last = by_id[f"p-{len(chunks) - 1}"][1]
    assert last.ok and last.result is not None
    assert last.result["complete"] is True
    assert last.result["sha256"] == hashlib.sha256(program).hexdigest()
    assert last.result["size"] == len(program)
    assert downlink.programs[(ids[0], "O5101")] == program
    name, bad_reply = by_id["bad"]
    assert name == "program" and not bad_reply.ok
    assert bad_reply.error is not None and bad_reply.error.code == "checksum_mismatch"
    name, rb = by_id["rb"]
    assert name == "rebirth" and rb.ok and rb.result == {"session": ctl.session[1]}
    assert by_id["x1"][1].error is not None and by_id["x1"][1].error.code == "unknown_command"
    # The rebirth republished the retained birth status of the same session.
    births = [s for s in cmd.statuses if s.online and s.session == ctl.session[1]]
    assert len(births) >= 2
