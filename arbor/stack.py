"""The local stack: our own PostgreSQL + TimescaleDB cluster and our own Mosquitto, on loopback.

`up` is idempotent: servers already running are left alone, missing ones are initialised and
started, and readiness is waited for (pg_ctl -w, an accepted MQTT CONNECT), never slept for.
State lives under the state directory (`.arbor/` in the checkout):

    pg/data, pg/log/postgresql.log      the cluster, owned by `postgres` when we run as root
    mosquitto/{mosquitto.conf,passwd,acl,data/,mosquitto.log,mosquitto.pid}
    secrets/{postgres.json,broker.json,machines.json}   mode 0600
    tls/{ca.pem,ca.key,server.pem,server.key}   a self-signed CA and the broker's certificate
                                         (keys 0600; server.key owned by the broker's user)
    arbor.env                            ARBOR_DATABASE_URL / ARBOR_MQTT_URL for the services,
                                         ARBOR_MQTT_TLS_URL / ARBOR_MQTT_CA for TLS clients
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from arbor.broker import SERVICE_USER, ensure_principal
from arbor.config import StackSettings
from arbor.errors import StackError
from arbor.mqttprobe import try_connect

__all__ = [
    "ServerStatus",
    "database_url",
    "down",
    "ensure_tls",
    "mqtt_tls_url",
    "mqtt_url",
    "status",
    "up",
]

_PG_SUPERUSER = "postgres"
_APP_ROLE = "arbor"
_APP_DB = "arbor"


@dataclass(frozen=True)
class ServerStatus:
    """What `arbor status` shows for one server."""

    name: str
    running: bool
    pid: int | None
    endpoint: str
    detail: str = ""


# --- helpers --------------------------------------------------------------------------------------


def _is_root() -> bool:
    return os.geteuid() == 0


def _run_as(user: str, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a server tool as `user` when we are root (initdb and postgres refuse to run as root)."""
    if _is_root():
        args = ["runuser", "-u", user, "--", *args]
    return subprocess.run(args, text=True, capture_output=True, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def _chown(path: Path, user: str) -> None:
    if _is_root():
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _write_private(path: Path, text: str, owner: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    if owner:
        _chown(tmp, owner)
    tmp.replace(path)


def _pid_alive(pid: int, name: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return name.encode() in cmdline


@contextlib.contextmanager
def _stack_lock(settings: StackSettings) -> Iterator[None]:
    # Two `arbor up` at once (make demo in one shell, make test in another) must not both initdb.
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.state_dir / "stack.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _secrets(settings: StackSettings) -> dict[str, str]:
    path = settings.secrets_dir / "postgres.json"
    if path.is_file():
        data: dict[str, str] = json.loads(path.read_text())
        return data
    data = {"superuser": secrets.token_urlsafe(24), _APP_ROLE: secrets.token_urlsafe(24)}
    _write_private(path, json.dumps(data, indent=1))
    return data


def database_url(settings: StackSettings, role: str = _APP_ROLE, database: str = _APP_DB) -> str:
    """The URL of the local cluster for `role` (the app role `arbor` or the superuser)."""
    pw = _secrets(settings)["superuser" if role == _PG_SUPERUSER else role]
    return f"postgresql://{role}:{quote(pw, safe='')}@127.0.0.1:{settings.pg_port}/{database}"


def mqtt_url(settings: StackSettings) -> str:
    """The URL of the local broker with the service account's credentials."""
    principal = ensure_principal(settings, SERVICE_USER, "service")
    return (
        f"mqtt://{principal.username}:{quote(principal.password, safe='')}"
        f"@127.0.0.1:{settings.mqtt_port}"
    )


def mqtt_tls_url(settings: StackSettings) -> str:
    """The local broker's TLS listener with the service account (verify with `settings.ca_file`)."""
    principal = ensure_principal(settings, SERVICE_USER, "service")
    return (
        f"mqtts://{principal.username}:{quote(principal.password, safe='')}"
        f"@127.0.0.1:{settings.tls_port}"
    )


# --- TLS: a self-signed CA and the broker's certificate ------------------------------------------

_TLS_FILES = ("ca.pem", "ca.key", "server.pem", "server.key")
_SERVER_EXT = """basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


def _openssl(args: list[str], cwd: Path) -> None:
    res = subprocess.run(
        ["openssl", *args], cwd=cwd, text=True, capture_output=True, check=False, timeout=60
    )
    if res.returncode != 0:
        raise StackError(f"openssl {args[0]} failed: {res.stderr.strip()}")


def ensure_tls(settings: StackSettings) -> bool:
    """Create, once, the CA and the broker's certificate for 127.0.0.1/localhost under tls/.

    Returns whether anything was made. The CA key never leaves tls/ (root-only); the server key
    is readable by the broker's user only. Everything is made in a scratch directory and moved in
    last, so a crash half-way leaves nothing a later `up` would mistake for a finished set.
    """
    tls_dir = settings.tls_dir
    if all((tls_dir / name).is_file() for name in _TLS_FILES):
        return False
    if shutil.which("openssl") is None:
        raise StackError("the openssl command is missing (deploy/setup.sh installs it)")
    tls_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(tls_dir, 0o755)  # noqa: S103 - the broker's user reads server.pem, server.key (0600)
    with tempfile.TemporaryDirectory(dir=tls_dir, prefix=".new-") as tmp_name:
        tmp = Path(tmp_name)  # mode 0700: nothing readable before the keys are locked down
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        _openssl(
            ["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "3650",
             "-subj", "/CN=Arbor local CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            tmp,
        )  # fmt: skip
        _openssl(["req", *ec, "-keyout", "server.key", "-out", "server.csr",
                  "-subj", "/CN=localhost"], tmp)  # fmt: skip
        (tmp / "server.ext").write_text(_SERVER_EXT)
        _openssl(
            ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-set_serial", str(secrets.randbits(63)), "-days", "825",
             "-extfile", "server.ext", "-out", "server.pem"],
            tmp,
        )  # fmt: skip
        for name, mode in (("ca.key", 0o600), ("server.key", 0o600)):
            os.chmod(tmp / name, mode)
        for name in ("ca.pem", "server.pem"):
            os.chmod(tmp / name, 0o644)
        if _is_root():
            with contextlib.suppress(KeyError):  # no such user: the broker runs as us
                _chown(tmp / "server.key", "mosquitto")
        # The CA last: its presence with the rest says the set is complete.
        for name in ("ca.key", "server.key", "server.pem", "ca.pem"):
            (tmp / name).replace(tls_dir / name)
    return True


# --- PostgreSQL + TimescaleDB ---------------------------------------------------------------------


def _pg_conf(settings: StackSettings) -> str:
    log_dir = settings.pg_dir / "log"
    return f"""# Written by `arbor up` at every start; edit StackSettings (ARBOR_PG_*) instead.
listen_addresses = '127.0.0.1'
port = {settings.pg_port}
unix_socket_directories = ''
max_connections = 200
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
timescaledb.max_background_workers = 8
max_worker_processes = 16
# Ingest writes in large COPY batches: bigger WAL and fewer checkpoints, durable commits kept
# (an MQTT message is acked only after its batch commits, so commits must survive a crash).
shared_buffers = '{settings.pg_shared_buffers}'
effective_cache_size = '8GB'
work_mem = '32MB'
maintenance_work_mem = '512MB'
wal_buffers = '64MB'
wal_compression = on
max_wal_size = '8GB'
min_wal_size = '1GB'
checkpoint_timeout = '15min'
checkpoint_completion_target = 0.9
synchronous_commit = on
random_page_cost = 1.1
jit = off
log_destination = 'stderr'
log_min_duration_statement = 2000
log_line_prefix = '%m [%p] %q%u@%d '
# Keep our own log next to the cluster (pg_ctl -l writes there too).
log_directory = '{log_dir}'
"""


def _pg_running(settings: StackSettings) -> int | None:
    pid_file = settings.pg_data / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    return pid if _pid_alive(pid, "postgres") else None


def _pg_init(settings: StackSettings) -> None:
    data = settings.pg_data
    pg_dir = settings.pg_dir
    (pg_dir / "log").mkdir(parents=True, exist_ok=True)
    for path in (pg_dir, pg_dir / "log"):
        _chown(path, _PG_SUPERUSER)
    if (data / "PG_VERSION").is_file():
        return
    pwfile = pg_dir / "pwfile"
    _write_private(pwfile, _secrets(settings)["superuser"] + "\n", owner=_PG_SUPERUSER)
    try:
        res = _run_as(
            _PG_SUPERUSER,
            [
                str(settings.pg_bin / "initdb"),
                "-D",
                str(data),
                "-U",
                _PG_SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            ],
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if res.returncode != 0:
        raise StackError(f"initdb failed:\n{res.stderr.strip()}")
    with open(data / "postgresql.conf", "a") as fh:
        fh.write("\ninclude 'arbor.conf'\n")


def _pg_start(settings: StackSettings) -> None:
    conf = settings.pg_data / "arbor.conf"
    _write_private(conf, _pg_conf(settings), owner=_PG_SUPERUSER)
    os.chmod(conf, 0o644)
    log = settings.pg_dir / "log" / "postgresql.log"
    res = _run_as(
        _PG_SUPERUSER,
        [
            str(settings.pg_bin / "pg_ctl"),
            "-D",
            str(settings.pg_data),
            "-l",
            str(log),
            "-w",
            "-t",
            str(int(settings.ready_timeout_s)),
            "start",
        ],
    )
    if res.returncode != 0:
        tail = log.read_text().splitlines()[-15:] if log.is_file() else []
        raise StackError("PostgreSQL did not start:\n" + res.stdout + res.stderr + "\n".join(tail))


def _pg_bootstrap(settings: StackSettings) -> None:
    """Create the app role and database, and TimescaleDB in template1 so test databases have it."""
    creds = _secrets(settings)
    admin = database_url(settings, _PG_SUPERUSER, "postgres")
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [_APP_ROLE]).fetchone()
        if not exists:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                    sql.Identifier(_APP_ROLE), sql.Literal(creds[_APP_ROLE])
                )
            )
        for db in ("template1",):
            with psycopg.connect(
                database_url(settings, _PG_SUPERUSER, db), autocommit=True, connect_timeout=10
            ) as tconn:
                tconn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [_APP_DB]).fetchone():
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(_APP_DB), sql.Identifier(_APP_ROLE)
                )
            )


def _pg_stop(settings: StackSettings) -> bool:
    if _pg_running(settings) is None:
        return False
    res = _run_as(
        _PG_SUPERUSER,
        [str(settings.pg_bin / "pg_ctl"), "-D", str(settings.pg_data), "-m", "fast", "-w", "stop"],
    )
    if res.returncode != 0 and _pg_running(settings) is not None:
        raise StackError(f"PostgreSQL did not stop: {res.stderr.strip()}")
    return True


# --- Mosquitto ------------------------------------------------------------------------------------


def _mqtt_conf(settings: StackSettings) -> str:
    d = settings.mqtt_dir
    user = "mosquitto" if _is_root() else pwd.getpwuid(os.geteuid()).pw_name
    tls = ""
    if settings.tls_port:
        t = settings.tls_dir
        tls = f"""# MQTT over TLS: the same users and ACL (per_listener_settings false), the server
# certificate issued by the local CA ({t / "ca.pem"}), TLS 1.2 at least.
listener {settings.tls_port} 127.0.0.1
certfile {t / "server.pem"}
keyfile {t / "server.key"}
tls_version tlsv1.2
"""
    return f"""# Written by `arbor up` at every start; edit StackSettings (ARBOR_MQTT_*) instead.
per_listener_settings false
allow_anonymous false
password_file {d / "passwd"}
acl_file {d / "acl"}
# Plain MQTT on loopback, kept for local compatibility; devices off this host use TLS.
listener {settings.mqtt_port} 127.0.0.1
{tls}user {user}
pid_file {d / "mosquitto.pid"}
# Mosquitto's defaults lose data: queued QoS 1 messages beyond 1,000 per client are dropped, and
# without persistence a restart forgets every queued message and persistent session.
persistence true
persistence_location {d / "data"}/
autosave_interval {settings.mqtt_autosave_s}
max_queued_messages {settings.mqtt_max_queued_messages}
max_queued_bytes {settings.mqtt_max_queued_bytes}
# 0: no broker-side cap on messages in flight to a client; MQTT 5 clients bound it themselves with
# Receive Maximum (ingest holds acks until its batch commits, so it needs thousands in flight).
max_inflight_messages 0
max_packet_size {settings.mqtt_max_packet_size}
persistent_client_expiration 14d
log_dest file {d / "mosquitto.log"}
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
log_timestamp_format %Y-%m-%dT%H:%M:%S
"""


def _mqtt_running(settings: StackSettings) -> int | None:
    try:
        pid = int((settings.mqtt_dir / "mosquitto.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _pid_alive(pid, "mosquitto") else None


#: Where deploy/setup.sh installs the broker it builds (Debian 13's Mosquitto 2.0.21).
BUILT_MOSQUITTO = Path("/usr/local/sbin/mosquitto")


def mosquitto_binary() -> str:
    """The broker to start: the one set-up built, whatever PATH says (Debian's 2.0.11 in
    /usr/sbin segfaulted under load), else the first `mosquitto` on PATH."""
    if os.access(BUILT_MOSQUITTO, os.X_OK):
        return str(BUILT_MOSQUITTO)
    return shutil.which("mosquitto") or "mosquitto"


def _mqtt_start(settings: StackSettings) -> None:
    d = settings.mqtt_dir
    (d / "data").mkdir(parents=True, exist_ok=True)
    broker_user = "mosquitto"
    for path in (d, d / "data"):
        _chown(path, broker_user)
    # Credentials first, so the broker starts with a service account it accepts.
    ensure_principal(settings, SERVICE_USER, "service")
    if settings.tls_port:
        ensure_tls(settings)
    conf = d / "mosquitto.conf"
    _write_private(conf, _mqtt_conf(settings), owner=broker_user)
    res = subprocess.run(
        [mosquitto_binary(), "-c", str(conf), "-d"], text=True, capture_output=True, check=False
    )
    if res.returncode != 0:
        raise StackError(f"Mosquitto did not start: {res.stderr.strip() or res.stdout.strip()}")
    _mqtt_wait_ready(settings)


def _mqtt_wait_ready(settings: StackSettings) -> None:
    from arbor.broker import Registry, registry_path

    service = Registry(registry_path(settings)).principals[SERVICE_USER]
    deadline = time.monotonic() + settings.ready_timeout_s
    delay = 0.02
    last = ""
    while time.monotonic() < deadline:
        res = try_connect("127.0.0.1", settings.mqtt_port, service.username, service.password, 2)
        if res.accepted and settings.tls_port:
            res = try_connect(
                "127.0.0.1",
                settings.tls_port,
                service.username,
                service.password,
                2,
                ca_certs=str(settings.ca_file),
            )
        if res.accepted:
            return
        last = res.reason
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    log = settings.mqtt_dir / "mosquitto.log"
    tail = "\n".join(log.read_text().splitlines()[-10:]) if log.is_file() else ""
    raise StackError(f"Mosquitto did not become ready ({last}):\n{tail}")


def _wait_exit(pid: int, name: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid, name):
            return True
        time.sleep(0.05)
    return False


def _mqtt_stop(settings: StackSettings) -> bool:
    pid = _mqtt_running(settings)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)  # Mosquitto saves its persistence file on SIGTERM.
    if not _wait_exit(pid, "mosquitto", 30):
        os.kill(pid, signal.SIGKILL)
        _wait_exit(pid, "mosquitto", 5)
    (settings.mqtt_dir / "mosquitto.pid").unlink(missing_ok=True)
    return True


# --- the public verbs -----------------------------------------------------------------------------


def _write_env_file(settings: StackSettings) -> None:
    text = (
        "# Written by `arbor up`: the local stack's endpoints. A variable set in the environment\n"
        "# wins over this file, so ARBOR_DATABASE_URL=... points Arbor at your own database.\n"
        f"ARBOR_DATABASE_URL={database_url(settings)}\n"
        f"ARBOR_MQTT_URL={mqtt_url(settings)}\n"
    )
    if settings.tls_port:
        text += (
            "# The same broker over TLS, verified against the local CA (docs/security.md).\n"
            f"ARBOR_MQTT_TLS_URL={mqtt_tls_url(settings)}\n"
            f"ARBOR_MQTT_CA={settings.ca_file}\n"
        )
    text += (
        # The ports too, so later `arbor` commands and tests manage the same servers.
        f"ARBOR_PG_PORT={settings.pg_port}\nARBOR_MQTT_PORT={settings.mqtt_port}\n"
    )
    # Not ARBOR_MQTT_TLS_PORT: it follows from the plain port (arbor/config.py), and written there
    # it would follow the tests into every private broker they start on other ports.
    _write_private(settings.env_file, text)


def up(settings: StackSettings) -> list[str]:
    """Start whatever is not running; returns one line per action taken (empty: nothing to do)."""
    actions: list[str] = []
    with _stack_lock(settings):
        settings.secrets_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(settings.secrets_dir, 0o700)
        if _pg_running(settings) is None:
            _pg_init(settings)
            _pg_start(settings)
            actions.append(f"started PostgreSQL + TimescaleDB on 127.0.0.1:{settings.pg_port}")
        _pg_bootstrap(settings)
        if settings.tls_port and ensure_tls(settings):
            actions.append(
                f"created the local CA and the broker's certificate in {settings.tls_dir}"
            )
        if _mqtt_running(settings) is None:
            _mqtt_start(settings)
            tls = f", TLS on 127.0.0.1:{settings.tls_port}" if settings.tls_port else ""
            actions.append(f"started Mosquitto on 127.0.0.1:{settings.mqtt_port}{tls}")
        _write_env_file(settings)
    return actions


def down(settings: StackSettings) -> list[str]:
    """Stop both servers; returns one line per server stopped."""
    from arbor.processes import stop_processes

    actions: list[str] = []
    with _stack_lock(settings):
        # Arbor's own processes first, so none of them sees its servers vanish under it.
        actions += [f"stopped {name}" for name in stop_processes(settings)]
        if _mqtt_stop(settings):
            actions.append("stopped Mosquitto")
        if _pg_stop(settings):
            actions.append("stopped PostgreSQL")
    return actions


def status(settings: StackSettings) -> list[ServerStatus]:
    """Whether each local server runs, with its pid and endpoint."""
    pg_pid = _pg_running(settings)
    mqtt_pid = _mqtt_running(settings)
    return [
        ServerStatus(
            "postgresql",
            pg_pid is not None,
            pg_pid,
            f"127.0.0.1:{settings.pg_port}",
            f"data {settings.pg_data}",
        ),
        ServerStatus(
            "mosquitto",
            mqtt_pid is not None,
            mqtt_pid,
            f"127.0.0.1:{settings.mqtt_port}",
            (f"TLS 127.0.0.1:{settings.tls_port}, " if settings.tls_port else "")
            + f"config {settings.mqtt_dir / 'mosquitto.conf'}",
        ),
    ]
