"""Ingest settings: one typed object, built in ``main()`` and passed down.

Endpoints come from the stack-wide variables ``ARBOR_DATABASE_URL`` and ``ARBOR_MQTT_URL``; every
other setting is ``ARBOR_INGEST_<NAME>`` (e.g. ``ARBOR_INGEST_BATCH_MAX_MESSAGES=5000``).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from protocol.endpoint import MqttEndpoint, parse_mqtt_url

__all__ = [
    "SUB_ANCHOR",
    "SUB_SHARED",
    "SUB_SPARKPLUG",
    "SUB_STATUS",
    "IngestSettings",
    "MqttEndpoint",
]

#: MQTT 5 subscription identifiers of ingest's subscriptions.
SUB_SHARED = 1  # $share/<group>/<topic_filter>: each message to one worker
SUB_STATUS = 2  # status_filter, non-shared: every worker knows every machine's session
SUB_SPARKPLUG = 3  # sparkplug_filter, non-shared
SUB_ANCHOR = 4  # topic_filter, non-shared, worker 0 only: survives a broker restart


class IngestSettings(BaseSettings):
    """Everything an ingest worker needs; see docs/ingest.md for the meaning of each."""

    model_config = SettingsConfigDict(env_prefix="ARBOR_INGEST_", extra="ignore")

    database_url: str = Field(validation_alias=AliasChoices("ARBOR_DATABASE_URL", "database_url"))
    mqtt_url: str = Field(validation_alias=AliasChoices("ARBOR_MQTT_URL", "mqtt_url"))

    # --- subscription ---
    share_group: str = "ingest"
    topic_filter: str = "arbor/v1/#"
    #: Non-shared: every worker sees every status, so it knows each machine's live session.
    status_filter: str = "arbor/v1/+/+/status"
    #: Non-shared (Sparkplug's seq needs every message of a node in order); "" turns it off.
    sparkplug_filter: str = "spBv1.0/#"
    client_id_prefix: str = "arbor-ingest"
    worker_index: int = Field(default=0, ge=0)
    #: A non-shared "anchor" subscription to `topic_filter` in this worker's persistent session,
    #: so that what is published after a broker restart but before the shared subscription is
    #: back is still queued for ingest (Mosquitto 2.0 does not persist shared subscriptions; see
    #: docs/ingest.md). By default worker 0 holds it; "false" turns it off.
    anchor: bool | None = None
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    #: MQTT 5 Receive Maximum: unacked QoS 1 messages the broker may send us. This is the memory
    #: bound and the backpressure: when batches are not committed, acks stop and the broker stops.
    receive_maximum: int = Field(default=20_000, ge=1, le=65_535)

    # --- batching ---
    batch_max_messages: int = Field(default=2_000, ge=1)
    batch_max_age_s: float = Field(default=0.1, gt=0)

    # --- validation ---
    max_payload_bytes: int = Field(default=256 * 1024, ge=1024)
    max_future: timedelta = timedelta(minutes=5)
    max_past: timedelta = timedelta(days=30)

    # --- Sparkplug ---
    #: Sparkplug metric name -> Arbor signal name, e.g. {"Spindle/Speed": "spindle_speed"}.
    sparkplug_metric_map: dict[str, str] = Field(default_factory=dict)
    #: Only one worker should ask edge nodes to rebirth; by default worker 0.
    sparkplug_rebirth: bool | None = None
    #: Every worker sees every Sparkplug message; only one records the bad ones as dead letters
    #: (the others count them as ignored), by default worker 0.
    sparkplug_dead_letters: bool | None = None
    rebirth_min_interval_s: float = 5.0

    # --- jobs ---
    jobs_interval_s: float = Field(default=30.0, gt=0)
    silence_timeout_s: float = Field(default=60.0, gt=0)
    gap_settle_s: float = Field(default=10.0, ge=0)
    gap_lookback: timedelta = timedelta(hours=1)
    #: Most of a rollup written per job run (catching up after downtime or on history).
    rollup_step: timedelta = Field(default=timedelta(hours=1), gt=timedelta(0))
    #: hypertable -> how long to keep, e.g. {"sample": "30 days"}; overrides retention_policy.
    retention: dict[str, timedelta] = Field(default_factory=dict)

    # --- operations ---
    metrics_port: int = Field(default=9108, ge=0, le=65_535)  # worker i serves port + i; 0 = off
    db_timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("share_group")
    @classmethod
    def _group(cls, value: str) -> str:
        if not value or any(c in value for c in "/+#"):
            raise ValueError("share group must be a single topic level without wildcards")
        return value

    @property
    def mqtt(self) -> MqttEndpoint:
        """The broker (mqtt:// or mqtts://, protocol.endpoint); never logs its password."""
        return parse_mqtt_url(self.mqtt_url)

    @property
    def client_id(self) -> str:
        """Stable per worker, so a restarted worker resumes its persistent session."""
        return f"{self.client_id_prefix}-{self.share_group}-{self.worker_index}"

    @property
    def records_sparkplug_dead_letters(self) -> bool:
        if self.sparkplug_dead_letters is not None:
            return self.sparkplug_dead_letters
        return self.worker_index == 0

    @property
    def sends_rebirth(self) -> bool:
        if self.sparkplug_rebirth is not None:
            return self.sparkplug_rebirth
        return self.worker_index == 0

    @property
    def has_anchor(self) -> bool:
        if self.anchor is not None:
            return self.anchor
        return self.worker_index == 0

    @property
    def anchor_marker_topic(self) -> str:
        """Where the anchor's catch-up marker goes (read only by this client's own session)."""
        return f"arbor/ingest/anchor/{self.client_id}"

    def subscriptions(self) -> list[tuple[int, str]]:
        """(MQTT 5 subscription identifier, filter): the identifier comes back on every message,
        so the worker knows which subscription delivered it (see ``SUB_*``)."""
        subs = [(SUB_SHARED, f"$share/{self.share_group}/{self.topic_filter}")]
        if self.status_filter:
            subs.append((SUB_STATUS, self.status_filter))
        if self.sparkplug_filter:
            subs.append((SUB_SPARKPLUG, self.sparkplug_filter))
        if self.has_anchor:
            subs.append((SUB_ANCHOR, self.topic_filter))
            subs.append((SUB_ANCHOR, self.anchor_marker_topic))
        return subs
