"""The API's settings: one typed object built by the caller of `create_app()`, never global."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from protocol.endpoint import parse_mqtt_url

__all__ = ["ApiSettings"]


class ApiSettings(BaseSettings):
    """Where the API listens, what it talks to, and how hard a key may call it.

    Environment variables carry the `ARBOR_` prefix: `ARBOR_DATABASE_URL`, `ARBOR_MQTT_URL`,
    `ARBOR_API_HOST`, `ARBOR_API_PORT`, `ARBOR_API_RATE_PER_S`, `ARBOR_API_RATE_BURST`, ...
    """

    model_config = SettingsConfigDict(env_prefix="ARBOR_", extra="ignore")

    database_url: str = Field(description="PostgreSQL + TimescaleDB, postgresql://user:pw@host/db")
    mqtt_url: str = Field(
        default="",
        description="mqtt://user:password@host:port of the broker; empty disables program pushes",
    )
    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    api_tls_cert: str = Field(
        default="", description="PEM certificate (chain) to serve HTTPS with; needs api_tls_key"
    )
    api_tls_key: str = Field(default="", description="PEM private key of api_tls_cert")
    api_rate_per_s: Annotated[float, Field(gt=0)] = Field(
        default=50.0, description="sustained requests per second per API key (token bucket rate)"
    )
    api_rate_burst: Annotated[int, Field(ge=1)] = Field(
        default=100, description="requests a key may make at once (token bucket size)"
    )
    api_pool_min: Annotated[int, Field(ge=0)] = 0  # 0: the API starts even with the database down
    api_pool_max: Annotated[int, Field(ge=1)] = 10
    api_db_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    api_list_cache_s: Annotated[float, Field(ge=0, le=60)] = Field(
        default=1.0,
        description="GET /machines may answer from a fleet snapshot this old (0: read each time)",
    )
    api_auth_cache_s: Annotated[float, Field(ge=0, le=60)] = Field(
        default=5.0,
        description="a verified API key is trusted this long without reading api_key again, so "
        "a revocation takes effect within it (0: read on every request)",
    )
    api_mqtt_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    api_stream_rate_hz: Annotated[float, Field(gt=0, le=100)] = Field(
        default=2.0, description="telemetry frames per second per stream client, at most"
    )
    api_stream_queue_samples: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=256, description="samples kept per machine and signal for a client (drop oldest)"
    )
    api_stream_send_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=5.0, description="a stream client not taking a message for this long is closed"
    )
    api_stream_max_machines: Annotated[int, Field(ge=1)] = 5000
    api_stream_auth_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    api_stream_silence_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=60.0, description="online but silent this long -> unknown (as ingest's setting)"
    )
    api_max_program_bytes: Annotated[int, Field(ge=1, le=64 * 1024 * 1024)] = 16 * 1024 * 1024
    api_max_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=32 * 1024 * 1024,
        description="largest request body accepted (413 above it, before parsing); must hold "
        "a base64 program of api_max_program_bytes",
    )

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL (ARBOR_DATABASE_URL)")
        return value

    @model_validator(mode="after")
    def _body_holds_a_program(self) -> ApiSettings:
        # base64 is 4/3 of the bytes, plus the JSON around it.
        needed = self.api_max_program_bytes * 4 // 3 + 64 * 1024
        if self.api_max_body_bytes < needed:
            raise ValueError(
                f"api_max_body_bytes ({self.api_max_body_bytes}) must be at least {needed} to "
                f"accept a base64 program of api_max_program_bytes ({self.api_max_program_bytes})"
            )
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiSettings:
        if bool(self.api_tls_cert) != bool(self.api_tls_key):
            raise ValueError(
                "HTTPS needs both a certificate and its key (ARBOR_API_TLS_CERT, ARBOR_API_TLS_KEY)"
            )
        return self

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        if value:
            try:
                parse_mqtt_url(value)
            except ValueError as exc:  # the message names the URL without its password
                raise ValueError(
                    f"must be an mqtt:// or mqtts://user:password@host:port URL "
                    f"(ARBOR_MQTT_URL): {exc}"
                ) from None
        return value
