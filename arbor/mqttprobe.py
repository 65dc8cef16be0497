"""A one-shot MQTT 5 connect: waits for the broker and checks that credentials took effect."""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["ConnectResult", "try_connect"]


@dataclass(frozen=True)
class ConnectResult:
    """What the broker answered: `accepted`, or the reason it refused (or `no answer`)."""

    accepted: bool
    reason: str


def try_connect(
    host: str,
    port: int,
    username: str | None,
    password: str | None,
    timeout_s: float = 5.0,
    *,
    ca_certs: str | None = None,
    tls: bool | None = None,
) -> ConnectResult:
    """Open one MQTT 5 connection, report the CONNACK, and disconnect.

    With `ca_certs` (or `tls=True`: the system's trust store) the connection is TLS, the broker's
    certificate and host name verified; a failed verification is reported, not raised.
    """
    if tls is None:
        tls = ca_certs is not None
    if tls:
        # The handshake on a socket we own first: paho leaks its socket when a handshake fails.
        refused = _tls_refusal(host, port, ca_certs, timeout_s)
        if refused is not None:
            return refused
    done = threading.Event()
    result: list[ConnectResult] = []

    def on_connect(
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: object,
    ) -> None:
        result.append(ConnectResult(not reason_code.is_failure, str(reason_code)))
        done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if username is not None:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set(ca_certs=ca_certs)
    client.on_connect = on_connect
    try:
        client.connect(host, port, keepalive=10)
    except OSError as exc:
        return ConnectResult(False, f"no answer: {exc}")
    client.loop_start()
    try:
        if not done.wait(timeout_s):
            return ConnectResult(False, "no answer: CONNACK timed out")
        return result[0]
    finally:
        client.disconnect()
        client.loop_stop()


def _tls_refusal(
    host: str, port: int, ca_certs: str | None, timeout_s: float
) -> ConnectResult | None:
    """None when a TLS handshake verifying the broker succeeds, else why it failed."""
    context = ssl.create_default_context(cafile=ca_certs)
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return None
    except OSError as exc:  # ssl.SSLError is one
        return ConnectResult(False, f"no answer: {exc}")
