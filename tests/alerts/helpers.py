"""Alerts test helpers: a webhook receiver, an SMTP receiver, workers in threads, a publisher."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from alerts.config import AlertsSettings
from alerts.worker import Worker
from protocol import (
    Condition,
    ConditionEvent,
    Event,
    Sample,
    Telemetry,
    encode,
    event_topic,
    telemetry_topic,
)


@dataclass
class Received:
    at: float  # time.time() on arrival
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return dict(orjson.loads(self.body))


@dataclass
class WebhookReceiver:
    """`http.server` on a free loopback port, in a thread; records every POST."""

    status: int = 200
    received: list[Received] = field(default_factory=list)
    url: str = ""

    def matching(self, pred: Callable[[dict[str, Any]], bool]) -> list[Received]:
        return [r for r in list(self.received) if pred(r.json)]

    def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0, n: int = 1
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.matching(pred)
            if len(got) >= n:
                return got
            time.sleep(0.02)
        raise AssertionError(f"no webhook matched within {timeout} s; got {len(self.received)}")


@contextlib.contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    rec = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            rec.received.append(Received(time.time(), dict(self.headers.items()), body))
            self.send_response(rec.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    data: bytes


@contextlib.contextmanager
def smtp_receiver() -> Iterator[tuple[int, list[Mail]]]:
    """A minimal SMTP server (EHLO/HELO, MAIL, RCPT, DATA, QUIT) on a free loopback port."""
    mails: list[Mail] = []

    class Handler(socketserver.StreamRequestHandler):
        def reply(self, line: str) -> None:
            self.wfile.write(line.encode() + b"\r\n")

        def handle(self) -> None:
            self.reply("220 localhost test SMTP")
            sender, rcpts = "", []
            while line := self.rfile.readline():
                cmd = line.decode(errors="replace").strip()
                verb = cmd[:4].upper()
                if verb in ("EHLO", "HELO"):
                    self.reply("250 localhost")
                elif verb == "MAIL":
                    sender, rcpts = cmd.split(":", 1)[1].strip(" <>"), []
                    self.reply("250 OK")
                elif verb == "RCPT":
                    rcpts.append(cmd.split(":", 1)[1].strip(" <>"))
                    self.reply("250 OK")
                elif verb == "DATA":
                    self.reply("354 end with .")
                    data = b""
                    while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                        data += chunk
                    mails.append(Mail(sender, rcpts, data))
                    self.reply("250 OK queued")
                elif verb == "QUIT":
                    self.reply("221 bye")
                    return
                else:
                    self.reply("250 OK")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield server.server_address[1], mails
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class WorkerThread:
    """An alerts `Worker` on its own event loop in a thread; `stop()` ends it."""

    def __init__(self, settings: AlertsSettings) -> None:
        self.worker = Worker(settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"alerts-{settings.worker_id}")
        self._thread.start()
        if not self._started.wait(20):
            raise RuntimeError("alerts worker did not start")

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            task = asyncio.create_task(self.worker.run(self._stop))
            ready = asyncio.create_task(self.worker.ready.wait())
            await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
            self._started.set()
            await task

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported to the test through `error`
            self.error = exc
            self._started.set()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)
        assert not self._thread.is_alive()


class Machine:
    """Publishes one machine's telemetry and events (QoS 1) with a fresh session."""

    def __init__(self, client: mqtt.Client, site: str, machine: str) -> None:
        self.client = client
        self.site, self.machine = site, machine
        self.session = secrets.token_hex(6)
        self.seq = 0

    def _publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)

    def samples(self, values: list[dict[str, Any]], t0: datetime | None = None) -> datetime:
        """One telemetry message, samples 100 ms apart from `t0`; returns `t0`.

        By default the last sample is at the current time, as a controller sending a batch.
        """
        t0 = t0 or datetime.now(UTC) - timedelta(milliseconds=100 * (len(values) - 1))
        samples = [
            Sample(ts=t0 + timedelta(milliseconds=100 * i), values=v) for i, v in enumerate(values)
        ]
        self.seq += 1
        msg = Telemetry(session=self.session, seq=self.seq, samples=samples)
        self._publish(telemetry_topic(self.site, self.machine), encode(msg))
        return t0

    def condition(self, level: str, code: str, component: str = "spindle") -> datetime:
        ts = datetime.now(UTC)
        cond = Condition(component=component, level=level, code=code, text=f"alarm {code}")
        self.seq += 1
        msg = Event(
            session=self.session,
            seq=self.seq,
            events=[ConditionEvent(ts=ts, signal="condition", condition=cond)],
        )
        self._publish(event_topic(self.site, self.machine), encode(msg))
        return ts


@contextlib.contextmanager
def publisher(host: str, port: int, username: str, password: str) -> Iterator[mqtt.Client]:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"talerts-{secrets.token_hex(4)}",
        protocol=mqtt.MQTTv5,
    )  # fmt: skip
    client.username_pw_set(username, password)
    client.connect(host, port)
    client.loop_start()
    try:
        yield client
    finally:
        client.disconnect()
        client.loop_stop()
