"""The drill harness: a factory of real processes, fault injection, and the ground-truth check.

One drill = one short factory run on a site of its own:

* ``python -m simulators --transport mqtt`` -- native i5 machines, one MQTT connection each;
* ``python -m simulators --transport shdr --record FILE`` -- an SHDR adapter serving more machines
  (multi-device), read by ``python -m gateway --config FILE`` which publishes them through a
  loopback :class:`~tests.e2e.drills.proxy.TcpProxy` (so the gateway-broker link can be cut);
* two ``python -m ingest`` workers on the MQTT 5 shared subscription;
* a private Mosquitto and a private TimescaleDB (``tests/servers.py``), restartable.

Ground truth: the i5 simulator's ``arbor-sim-truth/1`` summary (messages per session, samples per
machine), and for SHDR machines the adapter's recording of every line it served (a sample per
line that carries a telemetry key). :func:`verify` compares the database with both and returns
every discrepancy; a drill asserts there are none beyond what its fault's policy allows.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from protocol import parse_timestamp
from tests.e2e.drills.proxy import TcpProxy
from tests.servers import PrivateBroker, PrivateDatabase, free_port

__all__ = [
    "FULL",
    "RESULTS",
    "Factory",
    "Servers",
    "Verdict",
    "record_result",
    "verify",
]

ROOT = Path(__file__).resolve().parents[3]
#: The full drill (``make drills``) or the reduced one that runs inside ``make test``.
FULL = os.environ.get("ARBOR_DRILLS_FULL", "") not in ("", "0")
#: Where each drill appends its figures (one JSON object per line); docs/reliability.md is
#: generated from it by ``python -m tests.e2e.drills.report``.
RESULTS = Path(
    os.environ.get(
        "ARBOR_DRILLS_RESULTS",
        ROOT / "artifacts" / "drills" / ("full.jsonl" if FULL else "reduced.jsonl"),
    )
)

#: SHDR keys of the simulator's adapter that are telemetry (a line with any of them is a sample).
SHDR_TELEMETRY_KEYS = frozenset(
    {"Srpm", "Sload", "Sovr", "path_feedrate", "Fovr", "Xact", "Yact", "Zact", "Aact", "Cact"}
)

_FACTORY_TOML = """\
site = "{site}"
[calendar]
workdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
shifts = [{{name = "a", start = "00:00", end = "12:00"}},
          {{name = "b", start = "12:00", end = "00:00"}}]
breaks = []
{groups}
"""
_KINDS = ("mill", "five_axis", "lathe")


def _factory_toml(site: str, prefix: str, count: int) -> str:
    groups = []
    per = [count // 3 + (1 if i < count % 3 else 0) for i in range(3)]
    for kind, n in zip(_KINDS, per, strict=True):
        if n:
            groups.append(
                f'[[machines]]\nkind = "{kind}"\ncount = {n}\nprefix = "{prefix}{kind[0]}"\n'
            )
    return _FACTORY_TOML.format(site=site, groups="\n".join(groups))


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def wait_for(check: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> float:
    """Poll ``check`` until true; returns the seconds it took (AssertionError on timeout)."""
    t0 = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - t0
        except (psycopg.OperationalError, OSError):
            pass
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(sql.encode(), params).fetchall()  # type: ignore[call-overload]


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + " ", name + "{"))
    )


class Servers:
    """The private broker and database every drill of a module shares (sites keep them apart)."""

    def __init__(self) -> None:
        self.broker = PrivateBroker()
        self.db = PrivateDatabase()

    def __enter__(self) -> Servers:
        self.broker.__enter__()
        self.db.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.db.__exit__(None, None, None)
        finally:
            self.broker.__exit__(None, None, None)

    def ensure_up(self) -> None:
        """After a drill that stopped a server: make sure it runs again for the next one."""
        self.broker.start()
        self.db.start()


@dataclass
class Factory:
    """One drill's factory: ``i5`` native machines, ``shdr`` machines behind the gateway."""

    servers: Servers
    workdir: Path
    i5: int
    shdr: int
    duration_s: float
    rate_hz: float = 10.0
    seed: int = 0
    gateway_buffer_max: int = 1_000_000
    extra_sources: list[dict[str, Any]] = field(default_factory=list)
    site: str = field(default_factory=lambda: f"d{secrets.token_hex(4)}")
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    t_start: float = 0.0

    # ---- set-up ---------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.group = f"g{secrets.token_hex(3)}"
        self.i5_truth = self.workdir / "i5-truth.json"
        self.shdr_record = self.workdir / "shdr-record.txt"
        self.devices_xml = self.workdir / "Devices.xml"
        self.gateway_toml = self.workdir / "gateway.toml"
        self.gateway_buffer = self.workdir / "gateway-buffer.sqlite"
        self.logs = self.workdir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.metrics_ports = [free_port(), free_port()]
        self.shdr_port = free_port()
        self.proxy: TcpProxy | None = None
        self.not_recovered: list[str] = []
        (self.workdir / "i5.toml").write_text(_factory_toml(self.site, "n", self.i5))
        (self.workdir / "shdr.toml").write_text(_factory_toml(self.site, "s", self.shdr))

    def machine_ids(self, prefix: str, count: int) -> list[str]:
        per = [count // 3 + (1 if i < count % 3 else 0) for i in range(3)]
        return [
            f"{prefix}{kind[0]}-{i:03d}"
            for kind, n in zip(_KINDS, per, strict=True)
            for i in range(1, n + 1)
        ]

    @property
    def i5_machines(self) -> list[str]:
        return self.machine_ids("n", self.i5)

    @property
    def shdr_machines(self) -> list[str]:
        return self.machine_ids("s", self.shdr)

    def _env(self, **more: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARBOR_")}
        env.update(PYTHONUNBUFFERED="1", **more)
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, *argv], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.procs[name] = proc
        return proc

    def ingest_env(self, index: int) -> dict[str, str]:
        return self._env(
            ARBOR_DATABASE_URL=self.servers.db.url,
            ARBOR_MQTT_URL=self.servers.broker.url,
            ARBOR_INGEST_SHARE_GROUP=self.group,
            ARBOR_INGEST_TOPIC_FILTER=f"arbor/v1/{self.site}/#",
            ARBOR_INGEST_STATUS_FILTER=f"arbor/v1/{self.site}/+/status",
            ARBOR_INGEST_SPARKPLUG_FILTER=f"spBv1.0/{self.site}/#",
            ARBOR_INGEST_CLIENT_ID_PREFIX=f"drill-{self.group}",
            ARBOR_INGEST_METRICS_PORT=str(self.metrics_ports[index] - index),
            ARBOR_INGEST_SESSION_EXPIRY_S="900",
            ARBOR_INGEST_JOBS_INTERVAL_S="1",
            ARBOR_INGEST_GAP_SETTLE_S="2",
            ARBOR_INGEST_SILENCE_TIMEOUT_S="600",
        )

    def start_ingest(self, index: int) -> None:
        self._spawn(
            f"ingest{index}",
            ["-m", "ingest", "--no-migrate", "--worker-index", str(index), "--log-level",
             "warning"],
            self.ingest_env(index),
        )  # fmt: skip

    def wait_ingest_ready(self, index: int, timeout: float = 60) -> None:
        """Subscribed once the retained probe status of the site has reached the worker."""
        port = self.metrics_ports[index]
        wait_for(
            lambda: metric(port, "arbor_ingest_messages_total") >= 1,
            timeout,
            f"ingest worker {index} to subscribe",
        )

    def _probe(self, clear: bool = False) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from protocol import Controller, Status, encode

        user, pw = self.servers.broker.service_credentials
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{self.site}")
        c.username_pw_set(user, pw)
        c.connect(self.servers.broker.host, self.servers.broker.port)
        c.loop_start()
        try:
            payload = (
                b""
                if clear
                else encode(
                    Status(
                        online=True,
                        ts=datetime.now(UTC),
                        session="probe",
                        controller=Controller(vendor="i5", model="M8", kind="other"),
                    )
                )
            )
            topic = f"arbor/v1/{self.site}/probe/status"
            c.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
        finally:
            c.disconnect()
            c.loop_stop()

    def write_gateway_config(self, mqtt_port: int) -> None:
        creds = self.servers.broker.ensure_machines(
            [(self.site, m) for m in self.shdr_machines]
            + [(self.site, s["machine"]) for s in self.extra_sources]
        )
        lines = [
            f'name = "gw-{self.site}"',
            "[mqtt]",
            f'url = "mqtt://127.0.0.1:{mqtt_port}"',
            "keepalive_s = 5",
            "reconnect_min_s = 0.2",
            "reconnect_max_s = 1.0",
            "connect_timeout_s = 3",
            "[buffer]",
            f'path = "{self.gateway_buffer}"',
            f"max_messages = {self.gateway_buffer_max}",
            'policy = "drop_oldest"',
            "[pipeline]",
            "batch_interval_s = 0.5",
            "max_interval_s = 3600",
        ]
        sources = [
            {
                "address": f"127.0.0.1:{self.shdr_port}",
                "devices": str(self.devices_xml),
                "device": m,
                "machine": m,
            }
            for m in self.shdr_machines
        ] + self.extra_sources
        for s in sources:
            user, pw = creds[(self.site, s["machine"])]
            lines += [
                "[[source]]",
                f'address = "{s["address"]}"',
                f'devices = "{s["devices"]}"',
                f'device = "{s["device"]}"',
                f'site = "{self.site}"',
                f'machine = "{s["machine"]}"',
                f'username = "{user}"',
                f'password = "{pw}"',
            ]
        self.gateway_toml.write_text("\n".join(lines) + "\n")

    def start_gateway(self) -> None:
        self._spawn("gateway", ["-m", "gateway", "--config", str(self.gateway_toml)], self._env())

    def start(self) -> None:
        """Start everything and wait until data flows; the simulators start now, in real time."""
        self._probe()
        for i in range(2):
            self.start_ingest(i)
        for i in range(2):
            self.wait_ingest_ready(i)
        self._probe(clear=True)
        self.proxy = TcpProxy(self.servers.broker.host, self.servers.broker.port).__enter__()
        start = iso(time.time() + 3.0)  # simulated time = wall time (speedup 1), ms precision
        if self.shdr:
            self._spawn(
                "sim-shdr",
                ["-m", "simulators", "--transport", "shdr", "--factory",
                 str(self.workdir / "shdr.toml"), "--rate", str(self.rate_hz), "--duration",
                 str(self.duration_s), "--speedup", "1", "--seed", str(self.seed + 1),
                 "--start", start, "--shdr-port", str(self.shdr_port), "--devices-xml",
                 str(self.devices_xml), "--record", str(self.shdr_record)],
                self._env(),
            )  # fmt: skip
            wait_for(self.devices_xml.exists, 30, "the SHDR adapter's Devices.xml")
        if self.shdr or self.extra_sources:
            self.write_gateway_config(self.proxy.port)
            self.start_gateway()
        if self.i5:
            creds = self.servers.broker.ensure_machines([(self.site, m) for m in self.i5_machines])
            cred_file = self.workdir / "i5-credentials.json"
            cred_file.write_text(
                json.dumps(
                    {f"{s}/{m}": {"username": u, "password": p} for (s, m), (u, p) in creds.items()}
                )
            )
            self._spawn(
                "sim-i5",
                ["-m", "simulators", "--transport", "mqtt", "--factory",
                 str(self.workdir / "i5.toml"), "--rate", str(self.rate_hz), "--duration",
                 str(self.duration_s), "--speedup", "1", "--seed", str(self.seed), "--start",
                 start, "--credentials", str(cred_file), "--summary", str(self.i5_truth),
                 "--run-id", self.group],
                self._env(ARBOR_MQTT_URL=self.servers.broker.url),
            )  # fmt: skip
        self.t_start = parse_timestamp(start).timestamp()
        if self.shdr:
            # On a loaded machine the gateway can take seconds to import and connect; a fault
            # injected before its first sample would test nothing on the SHDR side.
            wait_for(self._shdr_flowing, 90, "the first SHDR sample through the gateway", 0.5)

    def _shdr_flowing(self) -> bool:
        rows = query(
            self.servers.db.url,
            "SELECT EXISTS (SELECT 1 FROM sample s JOIN machine m ON m.id = s.machine_id "
            "WHERE m.site = %s AND m.machine = ANY(%s))",
            self.site,
            self.shdr_machines,
        )
        return bool(rows[0][0])

    # ---- faults --------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def wait_sims(self, timeout: float) -> None:
        """Wait for both simulators to finish their run (truth and recording written)."""
        for name in ("sim-i5", "sim-shdr"):
            proc = self.procs.get(name)
            if proc is not None:
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired as exc:
                    raise AssertionError(f"{name} did not finish within {timeout} s") from exc
                assert proc.returncode == 0, f"{name} exited {proc.returncode}: see {self.logs}"

    def sleep_until(self, t_sim: float) -> None:
        """Sleep until wall time = simulated start + ``t_sim`` seconds."""
        delay = self.t_start + t_sim - time.time()
        if delay > 0:
            time.sleep(delay)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self.proxy is not None:
            self.proxy.__exit__(None, None, None)
            self.proxy = None

    # ---- measurements --------------------------------------------------------------------
    def flow_recovered_s(self, t_clear: float, machines: list[str]) -> float | None:
        """Seconds from ``t_clear`` (epoch) until every one of ``machines`` had a message
        committed again (ledger ``received_at``); None if one never did."""
        rows = query(
            self.servers.db.url,
            "SELECT m.machine, min(l.received_at) FROM message_ledger l "
            "JOIN machine m ON m.id = l.machine_id WHERE m.site = %s AND l.seq >= 0 "
            "AND l.received_at > to_timestamp(%s) GROUP BY m.machine",
            self.site,
            t_clear,
        )
        got = {m: ts.timestamp() for m, ts in rows}
        self.not_recovered = [m for m in machines if m not in got]
        if self.not_recovered:
            return None
        return round(max(got[m] for m in machines) - t_clear, 2)


@contextmanager
def running(factory: Factory) -> Iterator[Factory]:
    try:
        factory.start()
        yield factory
    finally:
        factory.close()


# ---- ground truth -----------------------------------------------------------------------------
@dataclass
class MachineCheck:
    machine: str
    kind: str  # i5 | shdr
    sent_messages: int = 0
    stored_messages: int = 0
    sent_samples: int = 0
    stored_samples: int = 0
    duplicate_samples: int = 0
    missing_samples: int = 0
    extra_samples: int = 0
    missing_seqs: int = 0
    open_gaps: int = 0
    filled_gaps: int = 0
    sessions: int = 0
    missing_ts: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    machines: dict[str, MachineCheck]
    dead_letters: dict[str, int]
    ledger_duplicates: int

    def problems_of(self, kind: str) -> list[str]:
        return [p for mc in self.machines.values() if mc.kind == kind for p in mc.problems]

    @property
    def problems(self) -> list[str]:
        out = [p for mc in self.machines.values() for p in mc.problems]
        if self.ledger_duplicates:
            out.append(f"{self.ledger_duplicates} duplicate ledger keys")
        return out

    def totals(self, kind: str | None = None) -> dict[str, int]:
        keys = ("sent_messages", "stored_messages", "sent_samples", "stored_samples",
                "duplicate_samples", "missing_samples", "extra_samples", "missing_seqs",
                "open_gaps", "filled_gaps")  # fmt: skip
        return {
            k: sum(getattr(mc, k) for mc in self.machines.values() if kind in (None, mc.kind))
            for k in keys
        }


def shdr_expected(record: Path) -> dict[str, list[float]]:
    """Machine -> sorted epoch timestamps of the recorded lines carrying a telemetry key."""
    out: dict[str, set[float]] = defaultdict(set)
    for line in record.read_text(encoding="utf-8").splitlines():
        parts = line.split("|")
        if len(parts) < 3 or not parts[0]:
            continue
        keys = parts[1::2]
        for k in keys:
            dev, _, key = k.rpartition(":")
            if key in SHDR_TELEMETRY_KEYS:
                out[dev].add(parse_timestamp(parts[0]).timestamp())
                break
    return {m: sorted(v) for m, v in out.items()}


def _db_state(url: str, site: str) -> dict[str, Any]:
    ledger = query(
        url,
        "SELECT m.machine, l.session, l.seq, l.channel FROM message_ledger l "
        "JOIN machine m ON m.id = l.machine_id WHERE m.site = %s AND l.seq >= 0",
        site,
    )
    samples = query(
        url,
        "SELECT m.machine, extract(epoch FROM s.ts)::float8 FROM sample s "
        "JOIN machine m ON m.id = s.machine_id WHERE m.site = %s",
        site,
    )
    gaps = query(
        url,
        "SELECT m.machine, g.session, g.first_missing, g.last_missing, g.filled_at IS NOT NULL "
        "FROM sequence_gap g JOIN machine m ON m.id = g.machine_id WHERE m.site = %s",
        site,
    )
    dead = query(url, "SELECT kind, count(*) FROM dead_letter WHERE site = %s GROUP BY kind", site)
    return {"ledger": ledger, "samples": samples, "gaps": gaps, "dead": dict(dead)}


def verify(
    factory: Factory,
    *,
    shdr_lost_windows: dict[str, list[tuple[float, float]]] | None = None,
    allow_gaps: set[str] | None = None,
) -> Verdict:
    """Compare the database with the ground truth of ``factory``'s run.

    i5 machines: per session, messages stored == sent with seq 0..last_seq each once; samples
    stored == sent, no timestamp twice. SHDR machines: every recorded telemetry line after the
    gateway's first sample of the machine is a stored sample (except inside
    ``shdr_lost_windows``: lines served while no gateway read them), and no stored sample is
    absent from the recording (except a reconnect snapshot). ``allow_gaps``: machines whose
    missing seqs the policy allows (a full disk buffer); everywhere else a gap is a problem.
    """
    db = _db_state(factory.servers.db.url, factory.site)
    allow_gaps = allow_gaps or set()
    lost = shdr_lost_windows or {}
    seqs: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    channels: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for machine, session, seq, channel in db["ledger"]:
        seqs[machine][session].append(seq)
        channels[machine][channel] += 1
    samples: dict[str, list[float]] = defaultdict(list)
    for machine, ts in db["samples"]:
        samples[machine].append(round(ts, 3))
    gaps: dict[str, list[tuple[str, int, int, bool]]] = defaultdict(list)
    for machine, session, first, last, filled in db["gaps"]:
        gaps[machine].append((session, first, last, filled))
    checks: dict[str, MachineCheck] = {}
    ledger_dups = 0
    for by_session in seqs.values():
        for s in by_session.values():
            ledger_dups += len(s) - len(set(s))

    def gap_check(mc: MachineCheck) -> None:
        g = gaps.get(mc.machine, [])
        mc.open_gaps = sum(last - first + 1 for _, first, last, filled in g if not filled)
        mc.filled_gaps = sum(1 for *_, filled in g if filled)
        if mc.open_gaps and mc.machine not in allow_gaps:
            mc.problems.append(f"{mc.machine}: {mc.open_gaps} seqs recorded missing")

    if factory.i5:
        truth = json.loads(factory.i5_truth.read_text())
        for machine, t in truth["machines"].items():
            mc = MachineCheck(machine, "i5")
            checks[machine] = mc
            mc.sent_messages = t["messages"]["telemetry"] + t["messages"]["event"]
            mc.sent_samples = t["samples"]
            stored = seqs.get(machine, {})
            mc.stored_messages = sum(len(set(v)) for v in stored.values())
            mc.sessions = len(t["sessions"])
            for sess in t["sessions"]:
                got = set(stored.get(sess["session"], []))
                want = set(range(sess["last_seq"] + 1))
                missing = want - got
                mc.missing_seqs += len(missing)
                if missing:
                    mc.problems.append(
                        f"{machine} session {sess['session']}: {len(missing)} of "
                        f"{len(want)} messages missing (first {min(missing)})"
                    )
                if got - want:
                    mc.problems.append(f"{machine} session {sess['session']}: seqs never sent")
            unknown = set(stored) - {s["session"] for s in t["sessions"]}
            if unknown:
                mc.problems.append(f"{machine}: sessions the simulator never had: {unknown}")
            ts = samples.get(machine, [])
            mc.stored_samples = len(ts)
            mc.duplicate_samples = len(ts) - len(set(ts))
            if mc.stored_samples != mc.sent_samples:
                mc.problems.append(
                    f"{machine}: {mc.stored_samples} samples stored, {mc.sent_samples} sent"
                )
            if mc.duplicate_samples:
                mc.problems.append(f"{machine}: {mc.duplicate_samples} duplicate samples")
            gap_check(mc)
    if factory.shdr:
        expected = shdr_expected(factory.shdr_record)
        for machine in factory.shdr_machines:
            mc = MachineCheck(machine, "shdr")
            checks[machine] = mc
            ts = samples.get(machine, [])
            mc.stored_samples = len(ts)
            mc.duplicate_samples = len(ts) - len(set(ts))
            mc.stored_messages = sum(len(set(v)) for v in seqs.get(machine, {}).values())
            mc.sessions = len(seqs.get(machine, {}))
            # Only lines after the machine's first stored sample are checked (below); a full
            # buffer (allow_gaps) may drop all a machine has: an idle machine serves one
            # snapshot line, and a buffer of a few messages per machine can overflow at start,
            # when every machine writes its first batches before its MQTT connection is up.
            if not ts and machine not in allow_gaps:
                mc.problems.append(f"{machine}: no samples stored")
                continue
            first = min(ts, default=math.inf)  # none stored: no line is after the first
            want = [x for x in expected.get(machine, []) if x >= first]
            windows = lost.get(machine, [])
            counted = [x for x in want if not any(a < x < b for a, b in windows)]
            mc.sent_samples = len(counted)
            have = set(ts)
            missing = [x for x in counted if x not in have]
            mc.missing_samples = len(missing)
            mc.missing_ts = missing
            extra = sorted(have - set(expected.get(machine, [])))
            mc.extra_samples = len(extra)
            if missing and machine not in allow_gaps:
                mc.problems.append(
                    f"{machine}: {len(missing)} of {len(counted)} served samples missing "
                    f"(first {iso(missing[0])})"
                )
            # A sample not in the recording is only legitimate as a birth snapshot: at most one
            # per gateway session of the machine.
            if len(extra) > mc.sessions:
                mc.problems.append(
                    f"{machine}: {len(extra)} samples never served (sessions {mc.sessions})"
                )
            if mc.duplicate_samples:
                mc.problems.append(f"{machine}: {mc.duplicate_samples} duplicate samples")
            # Each gateway session's seqs: contiguous from 0 unless a gap is recorded for them.
            for session, got_seqs in seqs.get(machine, {}).items():
                got = set(got_seqs)
                holes = set(range(max(got) + 1)) - got
                recorded = {
                    s
                    for sess, a, b, filled in gaps.get(machine, [])
                    if sess == session and not filled
                    for s in range(a, b + 1)
                }
                mc.missing_seqs += len(holes)
                if holes and machine not in allow_gaps:
                    mc.problems.append(f"{machine} session {session}: {len(holes)} seqs missing")
                if holes - recorded and mc.machine in allow_gaps:
                    mc.problems.append(
                        f"{machine} session {session}: {len(holes - recorded)} missing seqs "
                        "not recorded in sequence_gap"
                    )
                if recorded & got:
                    mc.problems.append(
                        f"{machine} session {session}: {len(recorded & got)} seqs recorded "
                        "missing in sequence_gap but stored"
                    )
            gap_check(mc)
    return Verdict(checks, db["dead"], ledger_dups)


def record_result(row: dict[str, Any]) -> None:
    """Append one drill's figures to :data:`RESULTS`."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    row = {"full": FULL, "at": datetime.now(UTC).isoformat(timespec="seconds"), **row}
    with RESULTS.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, default=asdict) + "\n")
