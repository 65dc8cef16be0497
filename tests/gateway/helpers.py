"""Test helpers: a tiny SHDR adapter (asyncio TCP) and an MQTT subscriber that records messages."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

DATA = Path(__file__).parent / "data"


class ShdrServer:
    """An SHDR adapter on a free loopback port: answers ``* PING`` with ``* PONG <ms>`` and
    writes whatever lines the test queues with :meth:`send` to every connected reader."""

    def __init__(self, heartbeat_ms: int = 1000, greeting: list[str] | None = None) -> None:
        self.heartbeat_ms = heartbeat_ms
        self.greeting = greeting or []
        self.writers: list[asyncio.StreamWriter] = []
        self.pings = 0
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> ShdrServer:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self.writers):
            w.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(w.wait_closed(), 1)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        for line in self.greeting:
            writer.write(line.encode() + b"\n")
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                if line.strip().upper() == b"* PING":
                    self.pings += 1
                    writer.write(f"* PONG {self.heartbeat_ms}\n".encode())
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if writer in self.writers:
                self.writers.remove(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    async def send(self, *lines: str) -> None:
        for w in list(self.writers):
            for line in lines:
                w.write(line.encode() + b"\n")
            with contextlib.suppress(ConnectionError):
                await w.drain()

    async def wait_connected(self, wait_s: float = 10.0) -> None:
        deadline = time.monotonic() + wait_s
        while not self.writers:
            if time.monotonic() > deadline:
                raise TimeoutError("the gateway did not connect to the SHDR server")
            await asyncio.sleep(0.02)

    async def drop_clients(self) -> None:
        for w in list(self.writers):
            w.close()
        self.writers.clear()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool


@dataclass
class Subscriber:
    """A paho client (own thread) that records every message of ``topic_filter``.

    A persistent session (clean_start False, long expiry) so a broker restart loses nothing
    queued for it; it reconnects by itself.
    """

    host: str
    port: int
    username: str
    password: str
    topic_filter: str
    client_id: str = "test-sub"
    messages: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
        )
        c.username_pw_set(self.username, self.password)
        c.reconnect_delay_set(0.1, 1)
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *a: self._subscribed.set()
        c.on_message = self._on_message
        self.client = c

    def _on_connect(self, c: mqtt.Client, u: object, f: object, rc: object, p: object) -> None:
        c.subscribe(self.topic_filter, qos=1)

    def _on_message(self, c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def start(self) -> Subscriber:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(self.host, self.port, 30, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("subscriber did not subscribe")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.snapshot()):
                return True
            time.sleep(0.05)
        return predicate(self.snapshot())

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)
