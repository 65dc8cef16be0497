"""Alerts settings: one typed object, built in `main()` and passed down.

Endpoints come from the stack-wide `ARBOR_DATABASE_URL` and `ARBOR_MQTT_URL`; every other setting
is `ARBOR_ALERTS_<NAME>` (e.g. `ARBOR_ALERTS_SHARE_GROUP=alerts`, `ARBOR_ALERTS_SMTP_HOST=...`).
"""

from __future__ import annotations

import os
import socket

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from protocol.endpoint import MqttEndpoint, parse_mqtt_url

__all__ = ["AlertsSettings", "MqttEndpoint"]


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class AlertsSettings(BaseSettings):
    """Everything an alerts worker needs; docs/alerts.md explains each."""

    model_config = SettingsConfigDict(env_prefix="ARBOR_ALERTS_", extra="ignore")

    database_url: str = Field(validation_alias=AliasChoices("ARBOR_DATABASE_URL", "database_url"))
    mqtt_url: str = Field(validation_alias=AliasChoices("ARBOR_MQTT_URL", "mqtt_url"))

    # --- the live stream ---
    share_group: str = "alerts"
    #: Site filter of the subscription (`+` = every site).
    site_filter: str = "+"
    worker_id: str = Field(default_factory=_default_worker_id)
    session_expiry_s: int = Field(default=300, ge=0)
    receive_maximum: int = Field(default=1_000, ge=1, le=65_535)
    #: Messages waiting for evaluation; beyond it the oldest are dropped and counted (the stream
    #: is a live view: stored-data rules and the next samples still see the machine).
    queue_max: int = Field(default=10_000, ge=1)
    batch_max: int = Field(default=500, ge=1)

    # --- evaluation ---
    rules_refresh_s: float = Field(default=2.0, gt=0)
    #: Stored-data rules (silence) and escalation are checked this often.
    tick_s: float = Field(default=1.0, gt=0)
    #: The heavier stored-data rules (tool_life, accuracy, utilisation) this often.
    slow_tick_s: float = Field(default=30.0, gt=0)

    # --- delivery ---
    delivery_poll_s: float = Field(default=0.5, gt=0)
    delivery_lease_s: float = Field(default=30.0, gt=0)
    delivery_max_attempts: int = Field(default=8, ge=1)
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    mqtt_timeout_s: float = Field(default=5.0, gt=0)
    smtp_host: str = ""
    smtp_port: int = Field(default=25, ge=1, le=65_535)
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = False
    smtp_from: str = "arbor-alerts@localhost"
    smtp_timeout_s: float = Field(default=10.0, gt=0)
    #: Where people open an alert (used in e-mails), e.g. https://arbor.example/alerts/
    link_base: str = ""

    db_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("share_group")
    @classmethod
    def _group(cls, value: str) -> str:
        if not value or any(c in value for c in "/+#"):
            raise ValueError("share group must be a single topic level without wildcards")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL (ARBOR_DATABASE_URL)")
        return value

    @property
    def mqtt(self) -> MqttEndpoint:
        """The broker (mqtt:// or mqtts://, protocol.endpoint); str() hides the password."""
        return parse_mqtt_url(self.mqtt_url)

    @property
    def client_id(self) -> str:
        return f"arbor-alerts-{self.share_group}-{self.worker_id}"[:128]
