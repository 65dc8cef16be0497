"""Gateway settings (environment) and configuration (a TOML file), validated at start.

:class:`GatewaySettings` reads ``ARBOR_*`` environment variables (``ARBOR_MQTT_URL``,
``ARBOR_GATEWAY_BUFFER``, ``ARBOR_LOG_LEVEL``); :func:`load_config` reads the TOML file that lists
the sources, checks everything (schema, ids, addresses, each Devices.xml and its device,
duplicate machines, deadband signal names, broker URL and credentials) and raises one
:class:`~gateway.errors.ConfigError` with every problem found. :func:`single_source_config` builds
the same object from the quick command-line form (``--shdr HOST:PORT --devices ...``).
"""

from __future__ import annotations

import codecs

__all__ = [
    "BufferConfig",
    "ControllerConfig",
    "GatewayConfig",
    "GatewaySettings",
    "MqttConfig",
    "MqttEndpoint",
    "PipelineConfig",
    "ResolvedSource",
    "SourceConfig",
    "load_config",
    "parse_mqtt_url",
    "resolve",
    "single_source_config",
]

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.errors import ConfigError, DeviceModelError
from gateway.sources.devices import DeviceModel, load_devices, select_device
from protocol import CATALOGUE, CONTROLLER_KINDS, is_valid_id, is_vendor_signal
from protocol.endpoint import MqttEndpoint, parse_mqtt_url


class GatewaySettings(BaseSettings):
    """Process settings from the environment (``ARBOR_`` prefix); the TOML file may override."""

    model_config = SettingsConfigDict(env_prefix="ARBOR_", extra="ignore")

    mqtt_url: str = ""
    gateway_buffer: Path = Path(".arbor/gateway/buffer.sqlite")
    log_level: str = "INFO"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ControllerConfig(_Strict):
    """What the birth message says about the controller."""

    vendor: str = Field(default="mtconnect", min_length=1, max_length=64)
    model: str = Field(default="shdr", min_length=1, max_length=64)
    kind: str = "other"
    firmware: str | None = Field(default=None, max_length=64)

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in CONTROLLER_KINDS:
            raise ValueError(f"must be one of {', '.join(CONTROLLER_KINDS)}")
        return value


class SourceConfig(_Strict):
    """One machine behind an SHDR adapter (several may share one multi-device adapter)."""

    type: Literal["shdr"] = "shdr"
    address: str = Field(description="HOST:PORT of the adapter")
    devices: Path = Field(description="the adapter's Devices.xml")
    device: str | None = Field(default=None, description="device name or uuid in Devices.xml")
    site: str
    machine: str
    username: str | None = None
    password: str | None = None
    program_dir: Path | None = Field(
        default=None, description="where downloaded NC programs are written (controller share)"
    )
    controller: ControllerConfig = ControllerConfig()
    deadband: dict[str, float] = Field(default_factory=dict)
    legacy_timeout_s: float = Field(default=600.0, gt=0)
    encoding: str = Field(
        default="auto",
        description="the adapter's text encoding: auto (UTF-8, else Windows-1252) or a codec, "
        "e.g. cp932 (Japanese controllers), gbk (Chinese), cp1250",
    )
    timestamps: Literal["auto", "source", "arrival"] = Field(
        default="auto",
        description="auto: the adapter's times, shifted to the gateway's clock only while they "
        "lie outside [now - clock_max_behind_s, now + clock_max_ahead_s] (a wrong controller "
        "clock, a replayed capture); source: always the adapter's; arrival: the gateway's "
        "(cppagent's IgnoreTimestamps)",
    )

    @field_validator("site", "machine")
    @classmethod
    def _id(cls, value: str) -> str:
        if not is_valid_id(value):
            raise ValueError(f"{value!r} is not a valid id (lower-case [a-z0-9_-], 1-64)")
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        split_address(value)
        return value

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        if value != "auto":
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError(
                    f"unknown encoding {value!r} (auto, utf-8, cp932, gbk, ...)"
                ) from None
        return value

    @field_validator("deadband")
    @classmethod
    def _deadband(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k in value if k not in CATALOGUE and not is_vendor_signal(k)]
        if bad:
            raise ValueError(f"unknown signals {', '.join(sorted(bad))}")
        negative = [k for k, v in value.items() if v < 0]
        if negative:
            raise ValueError(f"negative deadband for {', '.join(sorted(negative))}")
        return value


class MqttConfig(_Strict):
    """The broker; ``url`` defaults to ARBOR_MQTT_URL, credentials to the URL's user info."""

    url: str | None = None
    username: str | None = None
    password: str | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    window: int = Field(default=100, ge=1, le=65535, description="QoS 1 messages in flight")
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    session_expiry_s: int = Field(default=3600, ge=0)


class BufferConfig(_Strict):
    """The on-disk store-and-forward queue."""

    path: Path | None = None
    max_messages: int = Field(default=1_000_000, ge=10)
    policy: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    synchronous: Literal["normal", "full"] = "normal"


class PipelineConfig(_Strict):
    """Batching, report-by-exception and the queues between stages."""

    batch_interval_s: float = Field(default=0.5, gt=0, le=60)
    max_batch: int = Field(default=500, ge=1, le=1000)
    report_by_exception: bool = True
    max_interval_s: float = Field(default=60.0, gt=0, description="resend unchanged telemetry")
    time_jump_tolerance_s: float = Field(default=1.0, ge=0)
    # Ingest refuses samples over 5 min ahead of its clock or 30 days behind (max_future,
    # max_past): an adapter whose clock is outside these bounds would lose everything it sends.
    clock_max_ahead_s: float = Field(default=240.0, gt=0)
    clock_max_behind_s: float = Field(default=86_400.0, gt=0)
    queue_size: int = Field(
        default=50,
        ge=1,
        description="parsed lines per machine between the adapter and the pipeline; kept small "
        "because what is read but not yet on disk is lost if the process dies",
    )


class GatewayConfig(_Strict):
    """The whole TOML file."""

    name: str = Field(default="gateway", min_length=1, max_length=64)
    mqtt: MqttConfig = MqttConfig()
    buffer: BufferConfig = BufferConfig()
    pipeline: PipelineConfig = PipelineConfig()
    source: list[SourceConfig] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class ResolvedSource:
    """A source with its device model loaded and its broker endpoint decided."""

    config: SourceConfig
    host: str
    port: int
    device: DeviceModel
    endpoint: MqttEndpoint


def split_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); ``ValueError`` saying why not."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{value!r} is not HOST:PORT")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{value!r}: port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"{value!r}: port {port} out of range")
    return host.strip("[]"), port


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(file)"


def _validate(data: dict[str, Any], issues: list[str]) -> GatewayConfig | None:
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            msg = err["msg"].removeprefix("Value error, ")
            issues.append(f"{_loc(tuple(err['loc']))}: {msg}")
        return None


def _absolute(config: GatewayConfig, base: Path) -> GatewayConfig:
    def fix(p: Path | None) -> Path | None:
        return None if p is None or p.is_absolute() else base / p

    sources = [
        s.model_copy(
            update={
                "devices": fix(s.devices) or s.devices,
                "program_dir": fix(s.program_dir) or s.program_dir,
            }
        )
        for s in config.source
    ]
    buffer = config.buffer.model_copy(
        update={"path": fix(config.buffer.path) or config.buffer.path}
    )
    return config.model_copy(update={"source": sources, "buffer": buffer})


def resolve(config: GatewayConfig, settings: GatewaySettings) -> list[ResolvedSource]:
    """Load every Devices.xml and decide each machine's broker endpoint; all problems at once."""
    issues: list[str] = []
    url = config.mqtt.url or settings.mqtt_url
    base: MqttEndpoint | None = None
    if not url:
        issues.append("mqtt.url: no broker URL (set it here or in ARBOR_MQTT_URL)")
    else:
        try:
            base = parse_mqtt_url(url)
        except ValueError as exc:
            issues.append(f"mqtt.url: {exc}")
    seen: dict[tuple[str, str], int] = {}
    devices_by_file: dict[Path, list[DeviceModel]] = {}
    out: list[ResolvedSource] = []
    for i, src in enumerate(config.source):
        where = f"source[{i}]"
        key = (src.site, src.machine)
        if key in seen:
            issues.append(
                f"{where}: machine {src.site}/{src.machine} already served by source[{seen[key]}]"
            )
        seen[key] = i
        model: DeviceModel | None = None
        try:
            if src.devices not in devices_by_file:
                devices_by_file[src.devices] = load_devices(src.devices)
            model = select_device(devices_by_file[src.devices], src.device, str(src.devices))
        except DeviceModelError as exc:
            issues.append(f"{where}.devices: {exc}")
        if src.program_dir is not None and not src.program_dir.is_dir():
            issues.append(f"{where}.program_dir: {src.program_dir} is not a directory")
        username = src.username or config.mqtt.username or (base.username if base else None)
        password = src.password or config.mqtt.password or (base.password if base else None)
        if base is not None and (not username or not password):
            issues.append(
                f"{where}: no broker credentials (username/password here, in [mqtt] "
                "or in the MQTT URL)"
            )
        host, port = split_address(src.address)
        if model is not None and base is not None:
            # Same broker, scheme and CA (mqtts://) as the URL; this machine's credentials.
            endpoint = dataclasses.replace(base, username=username, password=password)
            out.append(ResolvedSource(src, host, port, model, endpoint))
    by_address: dict[str, set[str]] = {}
    for r in out:
        names = by_address.setdefault(r.config.address, set())
        if r.device.name in names:
            issues.append(f"address {r.config.address}: device {r.device.name} configured twice")
        names.add(r.device.name)
    encodings: dict[str, set[str]] = {}
    for r in out:  # one connection per address, so one encoding
        encodings.setdefault(r.config.address, set()).add(r.config.encoding)
    for address, names in encodings.items():
        if len(names) > 1:
            issues.append(
                f"address {address}: sources disagree on encoding ({', '.join(sorted(names))})"
            )
    if issues:
        raise ConfigError(issues)
    return out


def load_config(path: Path) -> GatewayConfig:
    """Read and validate a TOML configuration file (paths relative to the file's folder)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    issues: list[str] = []
    config = _validate(data, issues)
    if config is None:
        raise ConfigError(issues)
    return _absolute(config, path.resolve().parent)


def single_source_config(
    *,
    shdr: str,
    devices: Path,
    device: str | None,
    site: str,
    machine: str,
    program_dir: Path | None = None,
    buffer: Path | None = None,
) -> GatewayConfig:
    """The quick form ``--shdr HOST:PORT --devices X --site S --machine M`` as a config."""
    data: dict[str, Any] = {
        "source": [
            {
                "type": "shdr",
                "address": shdr,
                "devices": str(devices),
                "site": site,
                "machine": machine,
                **({"device": device} if device else {}),
                **({"program_dir": str(program_dir)} if program_dir else {}),
            }
        ],
    }
    if buffer is not None:
        data["buffer"] = {"path": str(buffer)}
    issues: list[str] = []
    config = _validate(data, issues)
    if config is None:
        raise ConfigError(issues)
    return _absolute(config, Path.cwd())
