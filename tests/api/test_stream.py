"""The live stream (`/api/v1/stream`, WebSocket) on a real uvicorn, fed by the real broker.

A `websockets` client subscribes while the test publishes status, events and telemetry on
Mosquitto with the service account, as a machine would.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from api.config import ApiSettings
from api.keys import Role
from api.stream import Outbox
from protocol import event_topic, status_topic, telemetry_topic
from tests.api.conftest import add_machines, make_key, serve

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def stream_url(api_settings: ApiSettings, keys: dict[Role, str]) -> Iterator[str]:
    settings = api_settings.model_copy(
        update={
            "api_stream_rate_hz": 20.0,
            "api_stream_queue_samples": 2000,
            "api_stream_send_timeout_s": 1.0,
            "api_stream_silence_timeout_s": 2.0,
            "api_stream_auth_timeout_s": 1.0,
        }
    )
    with serve(settings) as url:
        # On a loaded machine the stream's broker link may still be connecting: wait for it,
        # so the tests never publish before the hub has subscribed.
        deadline = time.monotonic() + 30
        while True:
            with _ws(url, keys[Role.ADMIN]) as ws:
                if _recv(ws)["broker_connected"]:
                    break
            assert time.monotonic() < deadline, "the stream never connected to the broker"
            time.sleep(0.2)
        time.sleep(0.5)  # the subscription's SUBACK follows the connection
        yield url


@pytest.fixture(scope="module")
def publisher(mqtt_settings: Any) -> Iterator[mqtt.Client]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(mqtt_settings.username, mqtt_settings.password)
    client.connect(mqtt_settings.host, mqtt_settings.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


def _ts(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, UTC).isoformat()


class Machine:
    """Publishes as one machine: birth, events, telemetry, Will; one seq across channels."""

    def __init__(self, client: mqtt.Client, site: str, machine: str, session: str) -> None:
        self.client, self.site, self.machine, self.session, self.seq = (
            client,
            site,
            machine,
            session,
            0,
        )

    def _publish(self, topic: str, body: dict[str, Any], *, retain: bool = False) -> None:
        self.client.publish(topic, orjson.dumps(body), qos=1, retain=retain).wait_for_publish(5)

    def status(self, online: bool, session: str | None = None) -> None:
        body = {
            "v": 1,
            "online": online,
            "ts": _ts(),
            "session": session or self.session,
            "controller": {"vendor": "i5", "model": "M8", "kind": "vertical_mc"},
        }
        self._publish(status_topic(self.site, self.machine), body)

    def events(self, *items: dict[str, Any]) -> None:
        body = {"v": 1, "session": self.session, "seq": self.seq, "events": list(items)}
        self.seq += 1
        self._publish(event_topic(self.site, self.machine), body)

    def telemetry(self, samples: list[dict[str, Any]]) -> None:
        body = {"v": 1, "session": self.session, "seq": self.seq, "samples": samples}
        self.seq += 1
        self._publish(telemetry_topic(self.site, self.machine), body)


def _ws(base: str, key: str | None = None, **kwargs: Any) -> ClientConnection:
    url = base.replace("http://", "ws://") + "/api/v1/stream" + (f"?key={key}" if key else "")
    return connect(url, open_timeout=10, **kwargs)


def _recv(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    return dict(orjson.loads(ws.recv(timeout=timeout)))


def _until(
    ws: ClientConnection, pred: Callable[[dict[str, Any]], bool], timeout: float = 10
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        message = _recv(ws, max(0.01, deadline - time.monotonic()))
        if pred(message):
            return message


def _closed_with(ws: ClientConnection, timeout: float = 10) -> int | None:
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionClosed) as caught:  # noqa: PT012 (drain until the close)
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
    rcvd = caught.value.rcvd
    return None if rcvd is None else rcvd.code


def test_authentication_and_roles(
    stream_url: str, keys: dict[Role, str], api_database: str
) -> None:
    # Every role may open the stream; the key may come as ?key=, a header or a first message.
    for role in Role:
        with _ws(stream_url, keys[role]) as ws:
            ready = _recv(ws)
            assert ready["type"] == "ready" and ready["key"]["role"] == role
            assert ready["limits"]["rate_hz"] == 20.0
    with _ws(stream_url, additional_headers={"Authorization": f"Bearer {keys[Role.VIEWER]}"}) as ws:
        assert _recv(ws)["type"] == "ready"
    with _ws(stream_url) as ws:
        ws.send(orjson.dumps({"type": "auth", "key": keys[Role.OPERATOR]}).decode())
        assert _recv(ws)["key"]["role"] == "operator"
    # Refusals close with 4401 and say why.
    with _ws(stream_url, "arbor_nosuchkey0000_" + "x" * 43) as ws:
        assert _closed_with(ws) == 4401
    with _ws(stream_url, "not-a-key") as ws:
        assert _closed_with(ws) == 4401
    with _ws(stream_url) as ws:
        ws.send('{"type": "subscribe", "machines": ["*"]}')
        assert _closed_with(ws) == 4401
    with _ws(stream_url) as ws:  # nothing sent: closed after the auth timeout (1 s here)
        assert _closed_with(ws) == 4401
    revoked = make_key(api_database, Role.ADMIN, "revoked")
    import psycopg

    with psycopg.connect(api_database, autocommit=True) as conn:
        conn.execute("UPDATE api_key SET revoked_at = now() WHERE name = 'revoked'")
    with _ws(stream_url, revoked) as ws:
        assert _closed_with(ws) == 4401


def test_subscription_errors_and_site_scope(
    stream_url: str, api_database: str, unique_site: str
) -> None:
    other = unique_site + "x"
    add_machines(api_database, [(unique_site, "s1"), (other, "s2")])
    scoped = make_key(api_database, Role.VIEWER, "scoped", sites=[unique_site])
    with _ws(stream_url, scoped) as ws:
        assert _recv(ws)["type"] == "ready"
        ws.send(orjson.dumps({"type": "subscribe", "machines": [f"{other}:s2"]}).decode())
        error = _recv(ws)
        assert error == {
            "type": "error",
            "code": "site_forbidden",
            "message": error["message"],
            "field": "machines[0]",
        }
        ws.send('{"type": "subscribe", "machines": ["nosuch:m9"]}')
        assert _recv(ws)["code"] == "machine_not_found"
        ws.send('{"type": "subscribe", "machines": ["*"], "signals": ["execution"]}')
        assert _recv(ws)["field"] == "signals[0]"  # an event signal is not telemetry
        ws.send("not json")
        assert _recv(ws)["code"] == "invalid_input"
        ws.send('{"type": "ping", "id": 7}')
        assert _recv(ws) == {"type": "pong", "id": 7}
        # The wildcard covers only the key's sites.
        ws.send('{"type": "subscribe", "machines": ["*"]}')
        subscribed = _recv(ws)
        assert subscribed["type"] == "subscribed"
        assert subscribed["machines"] == [f"{unique_site}:s1"]
        snapshot = _recv(ws)
        assert snapshot["type"] == "status" and snapshot["snapshot"] is True
        assert (snapshot["site"], snapshot["machine"], snapshot["status"]) == (
            unique_site,
            "s1",
            "unknown",
        )


def test_status_changes_and_telemetry(
    stream_url: str,
    api_database: str,
    unique_site: str,
    keys: dict[Role, str],
    publisher: mqtt.Client,
) -> None:
    add_machines(api_database, [(unique_site, "m1"), (unique_site, "m2")])
    m1 = Machine(publisher, unique_site, "m1", "sess-a")
    with _ws(stream_url, keys[Role.VIEWER]) as ws:
        _recv(ws)
        ws.send(
            orjson.dumps(
                {
                    "type": "subscribe",
                    "machines": [f"{unique_site}:m1"],
                    "signals": ["spindle_load", "feedrate"],
                }
            ).decode()
        )
        assert _recv(ws)["machines"] == [f"{unique_site}:m1"]
        assert _recv(ws)["snapshot"] is True

        m1.status(True)
        birth = _until(ws, lambda m: m["type"] == "status")
        assert (birth["status"], birth["online"], birth["snapshot"]) == ("online", True, False)
        assert {"status", "online", "status_since"} <= set(birth["changed"])

        now = time.time()
        m1.events(
            {"ts": _ts(now), "signal": "execution", "value": "ACTIVE"},
            {"ts": _ts(now), "signal": "controller_mode", "value": "AUTOMATIC"},
            {"ts": _ts(now), "signal": "program", "value": "O1234"},
            {"ts": _ts(now), "signal": "part_count", "value": 41},
            {
                "ts": _ts(now),
                "signal": "condition",
                "condition": {
                    "component": "spindle",
                    "level": "FAULT",
                    "code": "SP-1",
                    "text": "hot",
                },
            },
        )
        change = _until(ws, lambda m: m["type"] == "status")
        assert change["changed"] == [
            "alarms", "execution", "execution_since", "mode", "part_count", "program"
        ]  # fmt: skip
        since = datetime.fromisoformat(change["execution_since"])
        assert since == datetime.fromtimestamp(now, UTC)  # the machine's time of the change
        assert (change["execution"], change["mode"], change["program"]) == (
            "ACTIVE",
            "AUTOMATIC",
            "O1234",
        )
        assert change["part_count"] == 41 and change["active_alarms"] == 1
        assert change["alarms"][0]["code"] == "SP-1" and change["alarms"][0]["level"] == "FAULT"

        # Another machine's messages never reach this client; telemetry carries only the chosen
        # signals, every sample of them in order.
        Machine(publisher, unique_site, "m2", "sess-b").status(True)
        m1.telemetry(
            [
                {"ts": _ts(now + k * 0.1), "values": {"spindle_load": 30.0 + k, "position_x": 1.0}}
                for k in range(5)
            ]
        )
        frame = _until(ws, lambda m: m["type"] == "telemetry")
        assert (frame["site"], frame["machine"], frame["dropped"]) == (unique_site, "m1", 0)
        assert list(frame["signals"]) == ["spindle_load"]
        assert [v for _, v in frame["signals"]["spindle_load"]] == [30.0, 31.0, 32.0, 33.0, 34.0]

        # Clearing the alarm, a Will of an older session (ignored), then the current one.
        m1.events(
            {
                "ts": _ts(),
                "signal": "condition",
                "condition": {"component": "spindle", "level": "NORMAL", "code": ""},
            }
        )
        cleared = _until(ws, lambda m: m["type"] == "status")
        assert cleared["changed"] == ["alarms"] and cleared["alarms"] == []
        m1.status(False, session="sess-old")
        m1.status(False)
        offline = _until(ws, lambda m: m["type"] == "status")
        assert (offline["status"], offline["online"]) == ("offline", False)
        for m in (m1, Machine(publisher, unique_site, "m2", "sess-b")):
            publisher.publish(status_topic(m.site, m.machine), b"", qos=1, retain=True)


def test_silent_machine_turns_unknown(
    stream_url: str,
    api_database: str,
    unique_site: str,
    keys: dict[Role, str],
    publisher: mqtt.Client,
) -> None:
    add_machines(api_database, [(unique_site, "q1")])
    q1 = Machine(publisher, unique_site, "q1", "sess-q")
    with _ws(stream_url, keys[Role.ADMIN]) as ws:
        _recv(ws)
        ws.send(orjson.dumps({"type": "subscribe", "machines": [f"{unique_site}:q1"]}).decode())
        _recv(ws), _recv(ws)
        q1.status(True)
        assert _until(ws, lambda m: m["type"] == "status")["status"] == "online"
        started = time.monotonic()
        silent = _until(ws, lambda m: m["type"] == "status", timeout=10)
        assert silent["status"] == "unknown" and silent["online"] is True
        assert 1.5 < time.monotonic() - started < 6
        q1.events({"ts": _ts(), "signal": "execution", "value": "READY"})
        back = _until(ws, lambda m: m["type"] == "status")
        assert back["status"] == "online" and "status" in back["changed"]
    publisher.publish(status_topic(unique_site, "q1"), b"", qos=1, retain=True)


def _body(data: bytes) -> bytes:
    return data[data.index(b"\r\n\r\n") + 4 :]


def _raw_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each unmasked frame a server sent."""
    frames, i = [], 0
    while i + 2 <= len(data):
        opcode, length, i = data[i] & 0x0F, data[i + 1] & 0x7F, i + 2
        if length == 126:
            length, i = int.from_bytes(data[i : i + 2]), i + 2
        elif length == 127:
            length, i = int.from_bytes(data[i : i + 8]), i + 8
        frames.append((opcode, data[i : i + length]))
        i += length
    return frames


def test_slow_consumer_is_closed_with_4100(
    stream_url: str,
    api_database: str,
    unique_site: str,
    keys: dict[Role, str],
    publisher: mqtt.Client,
) -> None:
    add_machines(api_database, [(unique_site, "f1")])
    f1 = Machine(publisher, unique_site, "f1", "sess-f")
    # A raw client with a tiny receive buffer that subscribes and then stops reading.
    port = int(stream_url.rsplit(":", 1)[1])
    sock = socket.socket()
    try:  # closed on every path, so a failure leaves no ResourceWarning behind
        _slow_client(sock, stream_url, keys, unique_site, f1, port)
    finally:
        sock.close()


def _slow_client(
    sock: socket.socket,
    stream_url: str,
    keys: dict[Role, str],
    unique_site: str,
    f1: Machine,
    port: int,
) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(20)
    key = keys[Role.VIEWER]
    sock.sendall(
        (
            f"GET /api/v1/stream?key={key} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    seen = b""
    while b'"ready"' not in seen:  # a client subscribes after `ready`
        seen += sock.recv(65536)
    request = orjson.dumps(
        {
            "type": "subscribe",
            "machines": [f"{unique_site}:f1"],
            "signals": ["spindle_load", "feedrate", "spindle_speed"],
            "padding": "x" * 64,
        }
    )
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[k % 4] for k, b in enumerate(request))
    assert 125 < len(request) < 65536
    sock.sendall(bytes([0x81, 0x80 | 126]) + len(request).to_bytes(2) + mask + masked)
    while b'"subscribed"' not in seen:
        seen += sock.recv(65536)
    metric = 'arbor_api_stream_disconnects_total{reason="slow_consumer"}'

    def slow_disconnects() -> float:
        text = httpx.get(stream_url + "/metrics").text
        lines = [line for line in text.splitlines() if line.startswith(metric)]
        return float(lines[0].split()[-1]) if lines else 0.0

    before = slow_disconnects()
    # Generous: the telemetry goes through the shared broker, which a loaded machine slows down.
    deadline = time.monotonic() + 120
    t = time.time()
    while slow_disconnects() == before:
        assert time.monotonic() < deadline, "the slow client was never disconnected"
        f1.telemetry(
            [{"ts": _ts(t + k * 1e-3), "values": {"spindle_load": 1.0}} for k in range(1000)]
        )
        t += 1
    # Reading again, the client gets what was queued and then the close frame with 4100.
    data = seen
    while not any(op == 0x8 and len(p) >= 2 for op, p in _raw_frames(_body(data))):
        chunk = sock.recv(1 << 20)
        assert chunk, "the connection ended without a close frame"
        data += chunk
    opcode, payload = next(f for f in _raw_frames(_body(data)) if f[0] == 0x8)
    assert opcode == 0x8, "the last frame is a close frame"
    assert int.from_bytes(payload[:2]) == 4100
    assert payload[2:].startswith(b"slow_consumer")
    f1.client.publish(status_topic(unique_site, "f1"), b"", qos=1, retain=True)


def test_outbox_policy() -> None:
    # Status is coalesced per machine (never dropped); telemetry drops the oldest samples.
    outbox = Outbox(queue_samples=3)
    key = ("s", "m")
    outbox.put_status(key, {"status": "online"}, None)
    outbox.put_status(key, {"status": "offline"}, ["status"])
    (snapshot,) = outbox.take_status()
    assert snapshot["snapshot"] is True and snapshot["status"] == "offline"
    outbox.put_status(key, {"execution": "READY"}, ["execution"])
    outbox.put_status(key, {"execution": "ACTIVE", "program": "P"}, ["execution", "program"])
    (change,) = outbox.take_status()
    assert change["changed"] == ["execution", "program"] and change["execution"] == "ACTIVE"
    t = datetime.now(UTC)
    for k in range(5):
        outbox.put_sample(key, "spindle_load", t, k)
    (frame,) = outbox.take_telemetry()
    assert [v for _, v in frame["signals"]["spindle_load"]] == [2, 3, 4]
    assert frame["dropped"] == 2 and outbox.dropped_total == 2
    assert outbox.take_telemetry() == [] and not outbox.has_telemetry
