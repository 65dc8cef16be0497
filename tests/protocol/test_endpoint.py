"""protocol.endpoint: the one mqtt:// / mqtts:// parser, and passwords kept out of text."""

from __future__ import annotations

import pytest

from protocol.endpoint import CA_ENV, MqttEndpoint, parse_mqtt_url, redact_url


def test_plain_url_with_encoded_credentials() -> None:
    ep = parse_mqtt_url("mqtt://plant1.m001:p%40ss%3Aw%2Frd@broker.local:18830")
    assert ep == MqttEndpoint("broker.local", 18830, "plant1.m001", "p@ss:w/rd", False, None)
    assert parse_mqtt_url("mqtt://h").port == 1883 and parse_mqtt_url("tcp://h").tls is False


def test_tls_url_takes_its_ca_from_the_query_before_the_environment() -> None:
    env = {CA_ENV: "/env/ca.pem"}
    assert parse_mqtt_url("mqtts://u:p@h", env=env) == MqttEndpoint(
        "h", 8883, "u", "p", True, "/env/ca.pem"
    )
    assert parse_mqtt_url("mqtts://u:p@h:18883?ca=/q/ca.pem", env=env).ca_certs == "/q/ca.pem"
    assert parse_mqtt_url("mqtts://h", env={}).ca_certs is None  # the system's trust store
    # The CA only matters for TLS: a plain URL ignores ARBOR_MQTT_CA.
    assert parse_mqtt_url("mqtt://h", env=env).ca_certs is None


@pytest.mark.parametrize(
    "url",
    [
        "http://u:s3cret@h:1",
        "mqtt://u:s3cret@:1883",
        "mqtt://u:s3cret@h:notaport",
        "mqtt://u:s3cret@h:99999",
        "mqtt://u:s3cret@h?ca=/x",
        "mqtts://u:s3cret@h?insecure=1",
    ],
)
def test_bad_urls_are_refused_without_showing_the_password(url: str) -> None:
    with pytest.raises(ValueError, match="MQTT URL") as info:
        parse_mqtt_url(url)
    assert "s3cret" not in str(info.value) and "***" in str(info.value)


def test_str_and_repr_never_show_the_password() -> None:
    ep = parse_mqtt_url("mqtts://svc:hunter2@127.0.0.1:18883?ca=/ca.pem")
    assert str(ep) == "mqtts://svc:***@127.0.0.1:18883"
    assert "hunter2" not in repr(ep) and "hunter2" not in f"{ep}"
    assert str(parse_mqtt_url("mqtt://h:1")) == "mqtt://h:1"


def test_redact_url_in_free_text() -> None:
    text = (
        "connect to postgresql://arbor:pw1@127.0.0.1:55432/arbor failed; "
        "broker mqtt://arbor-service:pw-2_x@127.0.0.1:18830, https://example.org/a@b"
    )
    out = redact_url(text)
    assert "pw1" not in out and "pw-2_x" not in out
    assert "postgresql://arbor:***@127.0.0.1" in out and "mqtt://arbor-service:***@127" in out
    assert out.endswith("https://example.org/a@b")  # no credentials there: untouched


class _Client:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object, object]] = []

    def username_pw_set(self, username: str | None, password: str | None = None) -> None:
        self.calls.append(("user", username, password))

    def tls_set(self, ca_certs: str | None = None) -> None:
        self.calls.append(("tls", ca_certs, None))


def test_configure_sets_credentials_and_tls_only_for_mqtts() -> None:
    plain, tls = _Client(), _Client()
    parse_mqtt_url("mqtt://u:p@h").configure(plain)
    parse_mqtt_url("mqtts://u:p@h?ca=/ca.pem").configure(tls)
    assert plain.calls == [("user", "u", "p")]
    assert tls.calls == [("user", "u", "p"), ("tls", "/ca.pem", None)]
