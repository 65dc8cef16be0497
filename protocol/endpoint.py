"""Broker endpoints: one parser for ``mqtt://`` and ``mqtts://`` URLs that every service uses.

    mqtt://user:password@host:1883          plain MQTT (default port 1883)
    mqtts://user:password@host:8883         MQTT over TLS (default port 8883), server verified
    mqtts://user:password@host:8883?ca=/path/ca.pem    ... against this CA file

User name and password are percent-decoded. For ``mqtts`` the CA file comes from the URL's ``ca``
query, else from the caller's environment (``ARBOR_MQTT_CA``), else the system's trust store.
The certificate and its host name are always verified: there is no "insecure" switch.

`MqttEndpoint.configure(client)` applies credentials and TLS to a paho client; `str(endpoint)`
and `redact_url()` never show a password (``mqtt://user:***@host:port``), so log lines and error
messages can name the endpoint safely.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = [
    "CA_ENV",
    "MqttEndpoint",
    "TlsClient",
    "parse_mqtt_url",
    "redact_url",
]

#: The environment variable naming the CA file for ``mqtts://`` endpoints without ``?ca=``.
CA_ENV = "ARBOR_MQTT_CA"

_PLAIN = ("mqtt", "tcp")
_TLS = ("mqtts", "ssl", "tls")
_DEFAULT_PORT = {False: 1883, True: 8883}


class TlsClient(Protocol):
    """The two paho ``Client`` methods `MqttEndpoint.configure` calls."""

    def username_pw_set(self, username: str | None, password: str | None = None) -> None: ...

    def tls_set(self, ca_certs: str | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    """Where and as whom to connect; `password` never appears in `repr` or `str`."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_certs: str | None = None

    @property
    def scheme(self) -> str:
        return "mqtts" if self.tls else "mqtt"

    def redacted(self) -> str:
        """``mqtt://user:***@host:port``: safe for logs and error messages."""
        user = ""
        if self.username is not None:
            user = quote(self.username, safe="") + (":***" if self.password else "") + "@"
        return f"{self.scheme}://{user}{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.redacted()

    def configure(self, client: TlsClient) -> None:
        """Set credentials and, for ``mqtts``, TLS with server verification on a paho client."""
        if self.username:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set(ca_certs=self.ca_certs)


def parse_mqtt_url(url: str, *, env: Mapping[str, str] | None = None) -> MqttEndpoint:
    """``mqtt[s]://user:pass@host:port[?ca=FILE]`` -> endpoint; ``ValueError`` (password-free).

    `env` is where ``ARBOR_MQTT_CA`` is looked up (default: this process's environment); it
    applies to ``mqtts`` URLs without a ``ca`` query only.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"MQTT URL {redact_url(url)!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _PLAIN + _TLS:
        raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {redact_url(url)!r}")
    if not parts.hostname:
        raise ValueError(f"MQTT URL {redact_url(url)!r} has no host")
    tls = scheme in _TLS
    query = parse_qs(parts.query)
    unknown = sorted(set(query) - {"ca"})
    if unknown:
        raise ValueError(f"MQTT URL {redact_url(url)!r}: unknown option(s) {', '.join(unknown)}")
    ca: str | None = query["ca"][-1] if "ca" in query else None
    if ca is not None and not tls:
        raise ValueError(f"MQTT URL {redact_url(url)!r}: ?ca= needs an mqtts:// URL")
    if tls and ca is None:
        ca = (os.environ if env is None else env).get(CA_ENV) or None
    return MqttEndpoint(
        host=parts.hostname,
        port=port or _DEFAULT_PORT[tls],
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=tls,
        ca_certs=ca,
    )


# scheme://user:password@  -> scheme://user:***@   (any scheme: mqtt, postgresql, https, ...)
_CREDENTIALS = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):(?P<pw>[^@\s/]*)@")


def redact_url(text: str) -> str:
    """Replace the password of every ``scheme://user:password@`` in `text` with ``***``."""
    return _CREDENTIALS.sub(lambda m: f"{m['head']}:***@", text)
