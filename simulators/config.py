"""The simulator's one settings object (pydantic-settings, env prefix ``ARBOR_SIM_`` for its
own options and ``ARBOR_MQTT_URL`` for the broker); the CLI builds it from flags over the
environment."""

from __future__ import annotations

__all__ = ["SimSettings"]

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SimSettings(BaseSettings):
    """Everything a simulator run needs; units in the field descriptions."""

    model_config = SettingsConfigDict(
        env_prefix="ARBOR_SIM_", extra="ignore", populate_by_name=True
    )

    mqtt_url: str = Field(
        default="mqtt://127.0.0.1:18830",
        validation_alias="ARBOR_MQTT_URL",
        description="Broker and the service account (used for shared connections and machines "
        "without credentials of their own).",
    )
    machines: int = Field(default=20, ge=1, description="Machines of the default factory.")
    factory: Path | None = Field(default=None, description="Factory TOML (overrides machines).")
    site: str = Field(default="sim", description="Site id of the default factory.")
    rate_hz: float = Field(default=10.0, gt=0, le=1000, description="Sample rate per machine.")
    batch_s: float = Field(
        default=1.0, gt=0, description="Seconds of samples per telemetry message."
    )
    duration_s: float = Field(default=float("inf"), gt=0, description="Simulated seconds to run.")
    speedup: float = Field(default=1.0, ge=0, description="Simulated s per wall s; 0 = max.")
    seed: int = 0
    start: datetime = Field(
        default=datetime(2025, 3, 3, 5, 45, tzinfo=UTC),
        description="Simulated start time (UTC); default a Monday, 15 min before the first shift.",
    )
    summary: Path | None = Field(default=None, description="Ground-truth JSON written at exit.")
    summary_every_s: float = Field(default=0.0, ge=0, description="Also write it every N sim s.")
    transport: Literal["mqtt", "shdr", "none"] = "mqtt"
    connection: Literal["per_machine", "shared"] = "per_machine"
    credentials_file: Path | None = Field(
        default=None, description='JSON {"site/machine": {"username", "password"}}.'
    )
    max_inflight: int = Field(default=200, ge=1, description="Unacked QoS 1 per connection.")
    max_pending: int = Field(default=20000, ge=1, description="Unacked QoS 1 before blocking.")
    buffer_max: int = Field(
        default=1000,
        ge=1,
        description="Messages a machine keeps while its broker link is down "
        "(oldest dropped beyond, each drop a seq gap).",
    )
    reconnect_max_s: float = Field(
        default=5.0, gt=0, description="Longest wait between reconnect attempts (backoff)."
    )
    run_id: str | None = Field(default=None, description="Session id prefix (random if unset).")
    shdr_host: str = "127.0.0.1"
    shdr_port: int = Field(default=7878, ge=0, le=65535)
    replay: Path | None = Field(default=None, description="SHDR capture to replay instead.")
    record: Path | None = Field(default=None, description="Write the served SHDR lines here.")

    @field_validator("start")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("start must carry a time zone (use ...Z for UTC)")
        return v.astimezone(UTC)
