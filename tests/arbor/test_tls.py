"""MQTT over TLS on a real Mosquitto configured by the stack's own code (arbor/stack.py):
the CA and certificate it makes, who gets in over TLS and who does not."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from arbor import stack
from arbor.mqttprobe import try_connect
from protocol.endpoint import parse_mqtt_url
from tests.arbor.mqtt_helpers import MqttConn, TlsBroker

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def broker() -> Iterator[TlsBroker]:
    with TlsBroker() as b:
        yield b


def test_ca_and_certificate_are_made_once_with_private_keys(broker: TlsBroker) -> None:
    tls = broker.settings.tls_dir
    for name in ("ca.key", "server.key"):
        mode = stat.S_IMODE((tls / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {mode:o}"
    if os.geteuid() == 0:  # the broker drops to `mosquitto`: its key must be that user's
        import pwd

        assert pwd.getpwuid((tls / "server.key").stat().st_uid).pw_name == "mosquitto"
        assert (tls / "ca.key").stat().st_uid == 0
    # The server certificate names 127.0.0.1 and localhost, is issued by the CA, and is no CA.
    text = subprocess.run(
        ["openssl", "x509", "-in", str(tls / "server.pem"), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    assert "CA:FALSE" in text and "TLS Web Server Authentication" in text
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(broker.ca_file), str(tls / "server.pem")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    before = {p.name: p.read_bytes() for p in tls.iterdir()}
    assert stack.ensure_tls(broker.settings) is False  # once: a later `up` keeps them
    assert {p.name: p.read_bytes() for p in tls.iterdir()} == before


def test_publish_and_receive_over_tls(broker: TlsBroker) -> None:
    topic, payload = "arbor/v1/tls/m1/event", b"over TLS"
    with MqttConn(broker.service()) as sub, MqttConn(broker.service()) as pub:
        assert sub.connect() == 0 and sub.subscribe("arbor/v1/tls/#") == [1]
        assert pub.connect() == 0 and pub.publish(topic, payload) == 0
        sub.wait_for(topic, payload)
    # The same through the URL a service is given (mqtts://, CA from ?ca=).
    ep = parse_mqtt_url(f"{broker.url(tls=True)}?ca={broker.ca_file}")
    assert ep.tls and ep.port == broker.settings.tls_port
    with MqttConn(ep) as conn:
        assert conn.connect() == 0


def test_a_client_that_cannot_verify_the_broker_is_refused(
    broker: TlsBroker, tmp_path: Path
) -> None:
    user, password = broker.service(tls=False).username, broker.service(tls=False).password
    port = broker.settings.tls_port
    # Plain MQTT to the TLS port gets no MQTT answer at all.
    assert not try_connect("127.0.0.1", port, user, password, 10).accepted
    # No CA file: the system's trust store does not know the local CA.
    no_ca = try_connect("127.0.0.1", port, user, password, 10, tls=True)
    assert not no_ca.accepted and "CERTIFICATE_VERIFY_FAILED" in no_ca.reason
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", "k.pem", "-out", "ca.pem", "-days", "1", "-subj", "/CN=other CA"],
        cwd=other, capture_output=True, check=True,
    )  # fmt: skip
    refused = try_connect("127.0.0.1", port, user, password, 10, ca_certs=str(other / "ca.pem"))
    assert not refused.accepted and "CERTIFICATE_VERIFY_FAILED" in refused.reason
    assert try_connect("127.0.0.1", port, user, password, 10, ca_certs=str(broker.ca_file)).accepted


def test_plain_mqtt_stays_on_its_own_port_and_tls_needs_credentials(broker: TlsBroker) -> None:
    s = broker.settings
    svc = broker.service(tls=False)
    assert try_connect("127.0.0.1", s.mqtt_port, svc.username, svc.password, 10).accepted
    # TLS is not a way around authentication: no password, no entry.
    ca = str(broker.ca_file)
    assert not try_connect("127.0.0.1", s.tls_port, None, None, 10, ca_certs=ca).accepted
    assert not try_connect("127.0.0.1", s.tls_port, svc.username, "x", 10, ca_certs=ca).accepted
