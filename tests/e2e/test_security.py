"""Security end to end, on a private stack made by `arbor up` (its own ports, CA and secrets):

- `arbor up` makes the CA and the broker's TLS listener once and writes the TLS endpoints;
- the real services run for a while, ingest, the gateway and the API over TLS (mqtts:// and
  https://), the simulator and alerts over loopback plain MQTT, plus misconfigured runs whose
  error messages must name an endpoint without its password;
- no broker password, database password or API key appears in any log, stdout or stderr;
- API keys are stored hashed: the keys table holds no plaintext key.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import httpx
import psycopg
import pytest

from arbor.paths import project_root
from tests.servers import free_port

pytestmark = [pytest.mark.services, pytest.mark.slow]

ARBOR = [sys.executable, "-m", "arbor.cli"]
TIMEOUT_S = 120.0  # two shared cores and cold interpreters: generous, and only ever polled


def _wait(
    predicate: Callable[[], object],
    what: str,
    timeout_s: float = TIMEOUT_S,
    context: Callable[[], str] = str,
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{context()}"
        time.sleep(0.2)


@dataclass
class Stack:
    state: Path
    env: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def values(self) -> dict[str, str]:
        out = {}
        for line in (self.state / "arbor.env").read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.startswith("#"):
                out[key] = value
        return out

    def arbor(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*ARBOR, *args],
            env={**self.env, **env},
            text=True,
            capture_output=True,
            timeout=300,
            check=False,
        )

    def spawn(self, name: str, args: list[str], **env: str) -> subprocess.Popen[bytes]:
        out: IO[bytes]
        with (self.logs / f"{name}.out").open("ab") as out:
            proc = subprocess.Popen(
                [*ARBOR, *args],
                env={**self.env, "PYTHONUNBUFFERED": "1", **env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs[name] = proc
        return proc

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)

    def log_text(self, name: str) -> str:
        return (self.logs / f"{name}.out").read_text(errors="replace")

    def tails(self) -> str:
        """The end of every process's output, for a failure message."""
        return "\n".join(
            f"--- {name} (exit {p.poll()}):\n{self.log_text(name)[-1500:]}"
            for name, p in self.procs.items()
        )


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    state = project_root() / ".arbor" / "test-stacks" / f"sec-{secrets.token_hex(4)}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ARBOR_") or k == "ARBOR_REQUIRE_SERVICES"
    }
    env.update(
        ARBOR_STATE_DIR=str(state),
        ARBOR_PG_PORT=str(free_port()),
        ARBOR_MQTT_PORT=str(free_port()),
        ARBOR_MQTT_TLS_PORT=str(free_port()),
        ARBOR_PG_SHARED_BUFFERS="128MB",
    )
    logs = state / "test-logs"
    s = Stack(state, env, logs)
    try:
        up = s.arbor("up")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "created the local CA" in up.stdout and "TLS on 127.0.0.1:" in up.stdout
        logs.mkdir()
        (logs / "up.out").write_text(up.stdout + up.stderr)
        yield s
    finally:
        s.stop_all()
        s.arbor("down")
        shutil.rmtree(state, ignore_errors=True)


def test_up_writes_tls_endpoints_once(stack: Stack) -> None:
    values = stack.values
    tls_port = stack.env["ARBOR_MQTT_TLS_PORT"]
    assert values["ARBOR_MQTT_TLS_URL"].startswith("mqtts://arbor-service:")
    assert values["ARBOR_MQTT_TLS_URL"].endswith(f"@127.0.0.1:{tls_port}")
    assert values["ARBOR_MQTT_CA"] == str(stack.state / "tls" / "ca.pem")
    assert values["ARBOR_MQTT_URL"].endswith(f"@127.0.0.1:{stack.env['ARBOR_MQTT_PORT']}")
    conf = (stack.state / "mosquitto" / "mosquitto.conf").read_text()
    assert f"listener {tls_port} 127.0.0.1\ncertfile {stack.state / 'tls' / 'server.pem'}" in conf
    ca = (stack.state / "tls" / "ca.pem").read_bytes()
    again = stack.arbor("up")
    assert again.returncode == 0 and "already up: nothing to do" in again.stdout, again.stdout
    assert (stack.state / "tls" / "ca.pem").read_bytes() == ca
    status = stack.arbor("status")
    assert f"TLS 127.0.0.1:{tls_port}" in status.stdout


def _metric(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except (urllib.error.URLError, OSError):
        return -1.0
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return -1.0


def _machines_with_data(db_url: str, site: str) -> set[str]:
    with psycopg.connect(db_url, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT DISTINCT m.machine FROM message_ledger l JOIN machine m ON m.id = l.machine_id "
            "WHERE m.site = %s AND l.seq >= 0",
            [site],
        ).fetchall()
    return {r[0] for r in rows}


def _secrets_of(state: Path) -> dict[str, str]:
    """Every password the stack holds: database roles, every broker principal, machines."""
    out: dict[str, str] = {}
    pg = json.loads((state / "secrets" / "postgres.json").read_text())
    out |= {f"postgres:{role}": pw for role, pw in pg.items()}
    broker = json.loads((state / "secrets" / "broker.json").read_text())
    out |= {f"broker:{user}": p["password"] for user, p in broker["users"].items()}
    machines = json.loads((state / "secrets" / "machines.json").read_text())
    out |= {f"machine:{k}": v["password"] for k, v in machines.items()}
    return out


def test_services_over_tls_never_log_a_secret(stack: Stack) -> None:
    values = stack.values
    db_url, ca = values["ARBOR_DATABASE_URL"], values["ARBOR_MQTT_CA"]
    tls_url = values["ARBOR_MQTT_TLS_URL"]
    tls_dir = stack.state / "tls"
    # Simulated time runs at wall speed from a Wednesday 10:00 UTC a week or two ago: in shift,
    # so the machines produce, and well within ingest's accepted past.
    today = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=(today.weekday() - 2) % 7 + 7)
    now = start.strftime("%Y-%m-%dT%H:%M:%SZ")

    # Ingest over TLS; its CA comes from ARBOR_MQTT_CA in arbor.env (not set here).
    metrics = free_port()
    stack.spawn("ingest", ["ingest", "--workers", "1"], ARBOR_MQTT_URL=tls_url,
                ARBOR_INGEST_METRICS_PORT=str(metrics))  # fmt: skip
    _wait(lambda: _metric(metrics, "arbor_ingest_subscribed") == 1.0, "ingest to subscribe")
    stack.spawn("alerts", ["alerts"])
    # The API: HTTPS with the stack's certificate, its broker links over TLS.
    api_port = free_port()
    stack.spawn(
        "api",
        ["api", "--host", "127.0.0.1", "--port", str(api_port),
         "--tls-cert", str(tls_dir / "server.pem"), "--tls-key", str(tls_dir / "server.key")],
        ARBOR_MQTT_URL=tls_url,
    )  # fmt: skip
    # i5 machines of the simulator, each with its own broker account (plain loopback MQTT).
    stack.spawn("sim", ["sim", "--machines", "2", "--site", "secsim", "--rate", "5",
                        "--speedup", "1", "--start", now])  # fmt: skip
    # An SHDR adapter and the gateway in front of it, as one machine, over mqtts:// with the
    # machine's own credentials and the CA named in the URL.
    shdr_port, devices = free_port(), stack.logs / "devices.xml"
    shdr_args = ["sim", "--transport", "shdr", "--machines", "1", "--site", "secgw", "--rate", "5",
                 "--speedup", "1", "--start", now, "--shdr-port", str(shdr_port),
                 "--devices-xml", str(devices)]  # fmt: skip
    stack.spawn("sim-shdr", shdr_args)
    added = stack.arbor("machines", "add", "secgw/gw-m1")
    assert added.returncode == 0, added.stderr
    creds = json.loads((stack.state / "secrets" / "machines.json").read_text())["secgw/gw-m1"]
    _wait(devices.is_file, "the SHDR adapter's Devices.xml")
    stack.spawn(
        "gateway",
        ["gateway", "--shdr", f"127.0.0.1:{shdr_port}", "--devices", str(devices),
         "--site", "secgw", "--machine", "gw-m1", "--buffer", str(stack.logs / "gw.buffer")],
        ARBOR_MQTT_URL=(f"mqtts://{creds['username']}:{creds['password']}"
                        f"@127.0.0.1:{stack.env['ARBOR_MQTT_TLS_PORT']}?ca={ca}"),
    )  # fmt: skip
    # Misconfigured and refused runs: their errors must name endpoints without passwords.
    canaries = {f"canary{i}": f"Canary{i}{secrets.token_hex(8)}" for i in range(6)}
    stack.spawn("ingest-bad-password", ["ingest", "--workers", "1"],
                ARBOR_MQTT_URL=f"mqtts://arbor-service:{canaries['canary0']}"
                               f"@127.0.0.1:{stack.env['ARBOR_MQTT_TLS_PORT']}",
                ARBOR_INGEST_METRICS_PORT=str(free_port()), ARBOR_INGEST_SHARE_GROUP="bad",
                ARBOR_INGEST_CLIENT_ID_PREFIX="bad-ingest")  # fmt: skip
    bad_runs = {
        "api-bad-url": stack.arbor(
            "api", ARBOR_MQTT_URL=f"mqtt://arbor-service:{canaries['canary1']}@127.0.0.1:x"
        ),
        "gateway-bad-url": stack.arbor(
            *["gateway", "--shdr", "127.0.0.1:1", "--devices", str(devices)],
            *["--site", "secgw", "--machine", "gw-bad", "--check"],
            ARBOR_MQTT_URL=f"ftp://arbor-service:{canaries['canary2']}@127.0.0.1:1",
        ),
        # Libraries quote what they were given: pydantic (alerts), psycopg (ingest).
        "alerts-bad-db-url": stack.arbor(
            "alerts", ARBOR_DATABASE_URL=f"mysql://arbor:{canaries['canary4']}@127.0.0.1/x"
        ),
        "ingest-bad-db-url": stack.arbor(
            "ingest", ARBOR_DATABASE_URL=f"mysql://arbor:{canaries['canary5']}@127.0.0.1/x"
        ),
    }
    db_password = _secrets_of(stack.state)["postgres:arbor"]
    stack.spawn("alerts-bad-db", ["alerts"], ARBOR_ALERTS_SHARE_GROUP="bad",
                ARBOR_DATABASE_URL=db_url.replace(db_password, canaries["canary3"]))  # fmt: skip
    for name, run in bad_runs.items():
        assert run.returncode != 0, f"{name} should have been refused"
        (stack.logs / f"{name}.out").write_text(run.stdout + run.stderr)

    # Data flows: the simulator's machines and the gateway's, the latter and ingest over TLS.
    _wait(lambda: len(_machines_with_data(db_url, "secsim")) == 2, "sim data", context=stack.tails)
    _wait(
        lambda: _machines_with_data(db_url, "secgw") == {"gw-m1"},
        "gateway data",
        context=stack.tails,
    )

    # HTTPS: verified against the local CA; refused by a client that does not trust it.
    base = f"https://127.0.0.1:{api_port}"
    trust = ssl.create_default_context(cafile=ca)

    def api_up() -> bool:
        try:
            return httpx.get(f"{base}/healthz", verify=trust, timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    _wait(api_up, "the API over HTTPS")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{base}/healthz", timeout=5)  # the system's trust store only
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=5)  # no plain HTTP there
    created = stack.arbor("apikey", "create", "--role", "admin", "--name", "security-test")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    me = httpx.get(f"{base}/api/v1/me", headers={"Authorization": f"Bearer {key}"}, verify=trust)
    assert me.status_code == 200, me.text
    # Everything that should run still runs; then stop it all and read what it wrote.
    assert all(p.poll() is None for n, p in stack.procs.items() if "bad" not in n), {
        n: stack.log_text(n)[-2000:] for n, p in stack.procs.items() if p.poll() is not None
    }
    # The misconfigured long-runners had their say (refused) before we look at their logs.
    _wait(lambda: "refused" in stack.log_text("ingest-bad-password").lower(), "ingest refused")
    stack.stop_all()

    # API keys at rest: only the SHA-256 of the key, never the key or its secret part.
    with psycopg.connect(db_url, connect_timeout=10) as conn:
        rows = conn.execute("SELECT row_to_json(k)::text, k.key_hash FROM api_key k").fetchall()
    assert rows, "the key was not stored"
    secret_part = key.rsplit("_", 1)[-1]
    for text, _hash in rows:
        assert key not in text and secret_part not in text
    assert hashlib.sha256(key.encode()).hexdigest() in {h for _t, h in rows}

    # No secret in any log, stdout or stderr: ours, the services', the servers'.
    hidden = {**_secrets_of(stack.state), **canaries, "api key": key, "api secret": secret_part}
    assert len([k for k in hidden if k.startswith("machine:")]) >= 3
    files = list(stack.logs.glob("*.out"))
    files += [p for p in stack.state.rglob("*.log") if p.is_file()]
    assert len(files) >= 10, files
    leaks = [
        f"{name} in {path.relative_to(stack.state)}"
        for path in files
        for name, value in hidden.items()
        if value in path.read_text(errors="replace")
    ]
    assert leaks == []
    # And the redaction is there to see where an endpoint is named: user, then ***.
    assert "arbor-service:***@" in stack.log_text("api-bad-url")
    assert "mysql://arbor:***@" in stack.log_text("alerts-bad-db-url")
    assert "mysql://arbor:***@" in stack.log_text("ingest-bad-db-url")
