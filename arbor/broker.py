"""Broker principals for the local Mosquitto: who may connect and which topics each may use.

The registry (`.arbor/secrets/broker.json`, root-only) is the source of truth; Mosquitto's password
file and ACL file are rendered from it and the broker is told to reload (SIGHUP). Roles:

- ``service``: Arbor's own processes (ingest, alerts, API, shared-connection simulators) read and
  write everything under ``arbor/`` and ``spBv1.0/``;
- ``machine``: one controller (an i5 speaking MQTT natively) publishes only its own
  ``arbor/v1/{site}/{machine}/{status,telemetry,event,reply/...}`` (never a ``cmd/``: only services
  send commands) and reads only its own ``cmd/`` topics;
- ``gateway``: an edge box, the union of the machine rights of the machines it serves;
- ``sparkplug``: a Sparkplug B edge node (group, edge node id): publishes only its own
  ``N{BIRTH,DATA,DEATH}`` and its devices' ``D{BIRTH,DATA,DEATH}``, reads only the commands
  addressed to it and its devices, and the host applications' ``STATE``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from arbor.config import StackSettings
from arbor.errors import ProvisioningError
from arbor.mqttprobe import try_connect

__all__ = [
    "ROLES",
    "Principal",
    "Registry",
    "edge_node_username",
    "ensure_machines",
    "ensure_principal",
    "mosquitto_password_hash",
    "reload_broker",
    "render_acl",
    "render_password_file",
]

Role = Literal["service", "machine", "gateway", "sparkplug"]
ROLES: tuple[Role, ...] = ("service", "machine", "gateway", "sparkplug")
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SERVICE_USER = "arbor-service"
# What a machine (or a gateway, for each of its machines) may publish under its own prefix.
_MACHINE_WRITES = ("status", "telemetry", "event", "reply/#")
# What a Sparkplug edge node may publish for itself and for its devices.
_NODE_WRITES = ("NBIRTH", "NDATA", "NDEATH")
_DEVICE_WRITES = ("DBIRTH", "DDATA", "DDEATH")
# Mosquitto 2.0's own default for `mosquitto_passwd`: PBKDF2-SHA512, 101 iterations, 12-byte salt.
_PBKDF2_ITERATIONS = 101


def mosquitto_password_hash(password: str, salt: bytes | None = None) -> str:
    """The `$7$` (PBKDF2-SHA512) hash Mosquitto 2.0 expects in its password file."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS, 64)
    b64 = base64.b64encode
    return f"$7${_PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


@dataclass
class Principal:
    """One broker user; `machines` lists the (site, machine) pairs it may publish for."""

    username: str
    password: str
    role: Role
    machines: list[tuple[str, str]] = field(default_factory=list)
    password_hash: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "password": self.password,
            "password_hash": self.password_hash,
            "role": self.role,
            "machines": [list(m) for m in self.machines],
        }

    @classmethod
    def from_json(cls, username: str, data: dict[str, object]) -> Principal:
        machines = data.get("machines", [])
        assert isinstance(machines, list)
        role = str(data["role"])
        if role not in ROLES:
            raise ProvisioningError(f"broker registry: user {username!r} has unknown role {role!r}")
        return cls(
            username=username,
            password=str(data["password"]),
            role=role,  # checked just above
            machines=[(str(s), str(m)) for s, m in machines],
            password_hash=str(data.get("password_hash", "")),
        )


def machine_username(site: str, machine: str) -> str:
    """A machine's broker user name: `site.machine` (both ids are free of dots by the contract)."""
    return f"{site}.{machine}"


def edge_node_username(group: str, node: str) -> str:
    """A Sparkplug edge node's broker user name: `spb/group/node` (never a machine's, and
    unambiguous: `/` is the one separator Sparkplug ids cannot contain)."""
    return f"spb/{group}/{node}"


# Sparkplug B ids: any UTF-8 but the topic separators `/`, `+`, `#` (spec); here also not `:`
# (Mosquitto's password file splits on it), control characters, or blanks at either end
# (Mosquitto trims ACL lines). Ignition's defaults ("Edge Nodes", "Edge Node 1a2b") pass.
_SPARKPLUG_ID = re.compile(r"^(?!\s)[^/+#:\x00-\x1f\x7f]{1,128}(?<!\s)$")


class Registry:
    """The broker principals, persisted as JSON with mode 0600."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.principals: dict[str, Principal] = {}
        if path.is_file():
            raw = json.loads(path.read_text())
            self.principals = {u: Principal.from_json(u, d) for u, d in raw["users"].items()}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        payload = {"users": {u: p.to_json() for u, p in sorted(self.principals.items())}}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=1)
        tmp.replace(self.path)

    def add(self, username: str, role: Role, machines: Iterable[tuple[str, str]] = ()) -> bool:
        """Add a principal unless it exists; returns whether anything changed."""
        wanted = sorted(set(machines))
        rule, what = (
            (_SPARKPLUG_ID, "Sparkplug group and edge node")
            if role == "sparkplug"
            else (_ID, "site and machine")
        )
        for site, machine in wanted:
            if not (rule.match(site) and rule.match(machine)):
                raise ValueError(f"{what} ids must match {rule.pattern}: got {site!r}/{machine!r}")
        existing = self.principals.get(username)
        if existing is not None:
            if existing.role != role:
                raise ProvisioningError(
                    f"broker user {username!r} exists with role {existing.role}, not {role}"
                )
            merged = sorted(set(existing.machines) | set(wanted))
            if merged == existing.machines:
                return False
            existing.machines = merged
            return True
        password = secrets.token_urlsafe(24)
        self.principals[username] = Principal(
            username, password, role, wanted, mosquitto_password_hash(password)
        )
        return True


def render_password_file(registry: Registry) -> str:
    return "".join(f"{p.username}:{p.password_hash}\n" for p in registry.principals.values())


def render_acl(registry: Registry) -> str:
    """Mosquitto ACL text: explicit per-user blocks (pattern ACLs cannot express site/machine)."""
    lines = ["# Rendered by arbor from .arbor/secrets/broker.json; edits here are overwritten.", ""]
    for p in sorted(registry.principals.values(), key=lambda p: p.username):
        lines.append(f"user {p.username}")
        if p.role == "service":
            lines += ["topic readwrite arbor/#", "topic readwrite spBv1.0/#", "topic read $SYS/#"]
        elif p.role == "sparkplug":
            for group, node in p.machines:
                # Only host applications command (NCMD/DCMD), and only this node's topics and its
                # devices' (the fifth level) are its own; NDEATH is also its Last Will.
                lines += [f"topic write spBv1.0/{group}/{kind}/{node}" for kind in _NODE_WRITES]
                lines += [f"topic write spBv1.0/{group}/{kind}/{node}/+" for kind in _DEVICE_WRITES]
                lines += [f"topic read spBv1.0/{group}/NCMD/{node}",
                          f"topic read spBv1.0/{group}/DCMD/{node}/+"]  # fmt: skip
            lines.append("topic read spBv1.0/STATE/+")
        else:
            for site, machine in p.machines:
                prefix = f"arbor/v1/{site}/{machine}"
                # The uplink channels one by one: a machine must not write its own `cmd/` (a
                # command it did not get from a service) nor invent channels.
                lines += [f"topic write {prefix}/{channel}" for channel in _MACHINE_WRITES]
                lines.append(f"topic read {prefix}/cmd/#")
        lines.append("")
    return "\n".join(lines)


def write_broker_files(settings: StackSettings, registry: Registry) -> None:
    """Write the password and ACL files the broker reads (readable by the broker's user only)."""
    mqtt_dir = settings.mqtt_dir
    mqtt_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("passwd", render_password_file(registry)), ("acl", render_acl(registry))):
        target = mqtt_dir / name
        tmp = target.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        _give_to_broker_user(tmp)
        tmp.replace(target)


def _give_to_broker_user(path: Path) -> None:
    # Run as root, Mosquitto drops to the `mosquitto` user and re-reads these files on SIGHUP.
    if os.geteuid() == 0:
        import pwd

        try:
            entry = pwd.getpwnam("mosquitto")
        except KeyError:
            return
        os.chown(path, entry.pw_uid, entry.pw_gid)


def registry_path(settings: StackSettings) -> Path:
    return settings.secrets_dir / "broker.json"


def reload_broker(settings: StackSettings) -> bool:
    """Ask a running broker to re-read its password and ACL files; False when none runs."""
    pid_file = settings.mqtt_dir / "mosquitto.pid"
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False
    return True


def _wait_accepted(settings: StackSettings, principal: Principal, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    last = ""
    while time.monotonic() < deadline:
        res = try_connect("127.0.0.1", settings.mqtt_port, principal.username, principal.password)
        if res.accepted:
            return
        last = res.reason
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    raise ProvisioningError(
        f"the broker did not accept the new credentials of {principal.username!r} "
        f"within {timeout_s:.0f} s (last answer: {last})"
    )


def ensure_principal(
    settings: StackSettings,
    username: str,
    role: Role,
    machines: Iterable[tuple[str, str]] = (),
) -> Principal:
    """Create or extend one principal, reload the running broker and wait until it takes effect."""
    registry = Registry(registry_path(settings))
    changed = registry.add(username, role, machines)
    principal = registry.principals[username]
    if changed:
        registry.save()
        write_broker_files(settings, registry)
        if reload_broker(settings):
            _wait_accepted(settings, principal)
    return principal


def ensure_machines(
    pairs: Iterable[tuple[str, str]],
    settings: StackSettings | None = None,
    *,
    sparkplug: bool = False,
) -> dict[tuple[str, str], tuple[str, str]]:
    """Credentials for natively connected machines (or, with ``sparkplug``, Sparkplug B edge
    nodes: the pairs are (group, edge node id)), created where missing.

    Returns pair -> (username, password). Also keeps `.arbor/secrets/machines.json`
    (`{"site/machine": {"username", "password"}}`, edge nodes as `"spBv1.0/group/node"`) for
    processes that read credentials from a file.
    """
    settings = settings or StackSettings()
    registry = Registry(registry_path(settings))
    wanted = list(dict.fromkeys(pairs))
    role: Role = "sparkplug" if sparkplug else "machine"
    username = edge_node_username if sparkplug else machine_username
    changed = False
    for a, b in wanted:
        changed |= registry.add(username(a, b), role, [(a, b)])
    if changed:
        registry.save()
        write_broker_files(settings, registry)
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for a, b in wanted:
        p = registry.principals[username(a, b)]
        out[(a, b)] = (p.username, p.password)
    if changed:
        _write_machines_file(settings, registry)
        if reload_broker(settings) and wanted:
            _wait_accepted(settings, registry.principals[username(*wanted[-1])])
    return out


def _write_machines_file(settings: StackSettings, registry: Registry) -> None:
    prefix = {"machine": "", "sparkplug": "spBv1.0/"}
    data = {
        f"{prefix[p.role]}{p.machines[0][0]}/{p.machines[0][1]}": {
            "username": p.username, "password": p.password,
        }
        for p in registry.principals.values()
        if p.role in prefix and p.machines
    }  # fmt: skip
    path = settings.secrets_dir / "machines.json"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1)
    tmp.replace(path)
