"""The plain records that flow from the decoder to the writer (no I/O, no validation here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from protocol import CATALOGUE, SignalChannel

__all__ = [
    "WIDE_INDEX",
    "WIDE_SIGNALS",
    "Accepted",
    "Ack",
    "DeadLetter",
    "DecodedBatch",
    "EventRow",
    "ExtraRow",
    "Gap",
    "Raw",
    "StatusChange",
    "WideRow",
]

#: The catalogue's telemetry signals, in the column order of the `sample` table (migration 0002).
#: A signal added to the catalogue later lands in `sample_extra` until a migration adds its column.
WIDE_SIGNALS: tuple[str, ...] = (
    "spindle_speed", "spindle_speed_command", "spindle_override", "spindle_load",
    "spindle_temperature", "feedrate", "feedrate_command", "feed_override", "rapid_override",
    "position_x", "position_y", "position_z", "position_a", "position_b", "position_c",
    "load_x", "load_y", "load_z", "load_a", "load_b", "load_c", "power", "ambient_temperature",
    "coolant_temperature", "cutting_time", "operating_time", "spindle_run_time",
)  # fmt: skip
WIDE_INDEX: dict[str, int] = {
    name: i
    for i, name in enumerate(WIDE_SIGNALS)
    if name in CATALOGUE and CATALOGUE[name].channel is SignalChannel.TELEMETRY
}

#: (ts, value per WIDE_SIGNALS column ...): one `sample` row without its machine id.
WideRow = tuple[Any, ...]
#: (ts, signal, value, value_text): one `sample_extra` row without its machine id.
ExtraRow = tuple[datetime, str, float | None, str | None]
#: (ts, signal, value, value_num, component, level, code, native_severity, qualifier, message,
#: historical): one `event` row without its machine id and receive time.
EventRow = tuple[
    datetime, str, str | None, float | None, str | None, str | None, str | None, str | None,
    str | None, str | None, bool,
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Ack:
    """What acknowledging a message needs; ``generation`` is the MQTT connection it came on."""

    mid: int
    qos: int
    generation: int


@dataclass(slots=True)
class Raw:
    """One MQTT message as received (``received`` is wall-clock seconds)."""

    topic: str
    payload: bytes
    ack: Ack
    received: float
    #: The identifiers of the subscriptions that delivered it (ingest.config.SUB_*); () unknown.
    via: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A machine went online (birth) or offline (Last Will, death) at ``ts``."""

    site: str
    machine: str
    online: bool
    ts: datetime
    session: str
    controller: dict[str, Any] | None = None
    reason: str | None = None
    source: str = "v1"


@dataclass(slots=True)
class Accepted:
    """The rows of one valid message, keyed for the exactly-once ledger.

    ``key_site``/``key_machine`` own the ledger key (for Sparkplug device messages that is the
    edge node, whose seq counter they share); ``site``/``machine`` own the rows.
    """

    site: str
    machine: str
    key_site: str
    key_machine: str
    session: str
    seq: int
    ts: datetime
    channel: str
    received: datetime
    historical: bool = False
    wide: list[WideRow] = field(default_factory=list)
    extra: list[ExtraRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    status: list[StatusChange] = field(default_factory=list)
    n_values: int = 0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that cannot be stored: why (``kind`` is the stable class), and its raw bytes."""

    kind: str
    reason: str
    topic: str
    payload: bytes
    received: datetime
    site: str | None = None
    machine: str | None = None


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages ``first_missing..last_missing`` of a session never arrived (Sparkplug: seen now)."""

    site: str
    machine: str
    session: str
    first_missing: int
    last_missing: int
    source: str = "sparkplug"


@dataclass(slots=True)
class DecodedBatch:
    """Everything one batch of raw messages turned into; ``acks`` in arrival order."""

    accepted: list[Accepted] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    rebirths: list[tuple[str, str]] = field(default_factory=list)  # (group, edge node)
    acks: list[Ack] = field(default_factory=list)
    ignored: int = 0
    first_received: float = 0.0
