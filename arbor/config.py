"""Settings of the local stack (`arbor up|down|status`): ports, state directory, server tuning."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from arbor.paths import state_dir

__all__ = ["StackSettings"]


class StackSettings(BaseSettings):
    """The local servers Arbor starts for itself; every value can be set as ARBOR_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="ARBOR_", extra="ignore")

    state_dir: Path = Field(default_factory=state_dir)
    pg_port: int = Field(default=55432, ge=1024, le=65535)
    mqtt_port: int = Field(default=18830, ge=1024, le=65535)
    # MQTT over TLS (certificate under tls/). Unset: 18883 next to the default plain port 18830,
    # none when the plain port was moved (a private stack must not collide with the shared one's
    # TLS port); 0: no TLS listener.
    mqtt_tls_port: int | None = Field(default=None, ge=0, le=65535)
    pg_bin: Path = Path("/usr/lib/postgresql/15/bin")
    # Sized for a 2-core, 24 GiB machine that also runs the broker and the services.
    pg_shared_buffers: str = "1GB"
    # An ingest outage of minutes at 1,000 machines (about 2,000 messages/s) must not overflow the
    # broker's queue for the ingest group: ten minutes is 1.2 M messages.
    mqtt_max_queued_messages: int = Field(default=2_000_000, ge=1000)
    mqtt_max_queued_bytes: int = Field(default=2 * 1024**3, ge=1024**2)
    mqtt_max_packet_size: int = Field(default=1024 * 1024, ge=64 * 1024)
    # Seconds between Mosquitto's snapshots of its queues to disk. Mosquitto 2.0 writes the whole
    # in-memory store each time, in its one thread, with every client waiting: with a backlog of
    # 2.5 GB (ingest down for some minutes) a 10 s interval kept the broker saving almost all the
    # time and ingest crawled (docs/ingest.md, "Broker persistence"). A clean stop (SIGTERM, what
    # `arbor down` and restarts send) always saves; only a crash of the broker loses what was
    # accepted since the last snapshot.
    mqtt_autosave_s: int = Field(default=60, ge=1)
    ready_timeout_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _default_tls_port(self) -> StackSettings:
        if self.mqtt_tls_port is None:
            self.mqtt_tls_port = 18883 if self.mqtt_port == 18830 else 0
        elif self.mqtt_tls_port and self.mqtt_tls_port < 1024:
            raise ValueError("mqtt_tls_port must be 0 (off) or 1024..65535")
        return self

    @property
    def tls_port(self) -> int:
        """The TLS listener's port, 0 when there is none."""
        return self.mqtt_tls_port or 0

    @property
    def tls_dir(self) -> Path:
        return self.state_dir / "tls"

    @property
    def ca_file(self) -> Path:
        return self.tls_dir / "ca.pem"

    @property
    def pg_dir(self) -> Path:
        return self.state_dir / "pg"

    @property
    def pg_data(self) -> Path:
        return self.pg_dir / "data"

    @property
    def mqtt_dir(self) -> Path:
        return self.state_dir / "mosquitto"

    @property
    def secrets_dir(self) -> Path:
        return self.state_dir / "secrets"

    @property
    def env_file(self) -> Path:
        return self.state_dir / "arbor.env"
