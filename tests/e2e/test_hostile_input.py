"""Hostile input at the doors, through the real ingest worker (and the real gateway for SHDR) into
the real database: schema-driven hypothesis payloads on every v1 channel, raw bytes and classic
nasties, fuzzed Sparkplug B protobufs, fuzzed SHDR streams.

For every message: the worker survives; the message is either stored completely (ledger row, and
the payload's values and events in the tables) or dead-lettered with a kind and a reason, and
never both nor half. The in-process decoder of ``protocol`` is the oracle for which.
Each message goes to a machine (or Sparkplug node) of its own, so its fate can be read back alone.
Figures are appended to artifacts/drills/hostile-*.jsonl for docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from ingest.migrate import apply_migrations
from protocol import PayloadError, TopicError, decode
from protocol.sparkplug import DataType, Metric, Payload, decode_payload, encode_payload
from tests.conftest import MqttSettings
from tests.e2e.drills.harness import FULL, ROOT, metric, query, wait_for
from tests.e2e.drills.schema_strategies import hostile, load_schema
from tests.servers import free_port

pytestmark = [pytest.mark.services, pytest.mark.slow]

N = 300 if FULL else 60  # examples per class
RESULTS = (
    ROOT / "artifacts" / "drills" / ("hostile-full.jsonl" if FULL else "hostile-reduced.jsonl")
)
DEAD_KINDS = {
    "bad_topic", "malformed_json", "non_finite", "wrong_type", "unknown_signal", "invalid",
    "oversized", "timestamp_range", "session_conflict", "sparkplug_decode", "sparkplug_no_birth",
    "db_rejected",
}  # fmt: skip


class _Pub:
    def __init__(self, m: MqttSettings) -> None:
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"hostile-{secrets.token_hex(4)}",
            protocol=mqtt.MQTTv5,
        )  # fmt: skip
        self.c.username_pw_set(m.username, m.password)
        self.c.max_inflight_messages_set(200)
        self.c.connect(m.host, m.port)
        self.c.loop_start()
        self.infos: list[mqtt.MQTTMessageInfo] = []

    def send(self, topic: str, payload: bytes) -> None:
        self.infos.append(self.c.publish(topic, payload, qos=1))

    def flush(self) -> None:
        for i in self.infos:
            i.wait_for_publish(30)
        self.infos.clear()

    def close(self) -> None:
        self.flush()
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture(scope="module")
def stack(
    fresh_database: str, mqtt_settings: MqttSettings, unique_site: str
) -> Iterator[tuple[str, str, int, _Pub]]:
    apply_migrations(fresh_database)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBOR_")}
    env.update(
        ARBOR_DATABASE_URL=fresh_database,
        ARBOR_MQTT_URL=mqtt_settings.url,
        ARBOR_INGEST_SHARE_GROUP=f"h{unique_site}",
        ARBOR_INGEST_TOPIC_FILTER=f"arbor/v1/{unique_site}/#",
        ARBOR_INGEST_STATUS_FILTER=f"arbor/v1/{unique_site}/+/status",
        ARBOR_INGEST_SPARKPLUG_FILTER=f"spBv1.0/{unique_site}/#",
        ARBOR_INGEST_CLIENT_ID_PREFIX=f"hostile-{unique_site}",
        ARBOR_INGEST_METRICS_PORT=str(port),
        ARBOR_INGEST_SESSION_EXPIRY_S="300",
        ARBOR_INGEST_SPARKPLUG_REBIRTH="false",
        # The jobs read what the hostile messages left (extreme values, seqs): run them often.
        ARBOR_INGEST_JOBS_INTERVAL_S="1",
    )
    log = (ROOT / "artifacts" / "drills").resolve()
    log.mkdir(parents=True, exist_ok=True)
    log_path = log / f"hostile-ingest-{unique_site}.log"
    with log_path.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ingest", "--no-migrate", "--log-level", "warning"],
            env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
    pub = _Pub(mqtt_settings)
    try:
        wait_for(lambda: metric(port, "arbor_ingest_subscribed") >= 1, 60, "ingest to subscribe")
        yield fresh_database, unique_site, port, pub
        assert proc.poll() is None, "the ingest worker died"
        time.sleep(2)  # a last round of the jobs over everything stored
        # A payload's bug is dead-lettered and a job's failure retried, so neither shows in
        # the fates above: the log is where they surface (a gap job failing on every run for
        # a seq of 2^63-1 went unnoticed here once).
        errors = [
            line
            for line in log_path.read_text(errors="replace").splitlines()
            if " ERROR " in line or " CRITICAL " in line
        ]
        assert not errors, f"the ingest worker logged errors ({log_path}): {errors[:5]}"
    finally:
        pub.close()
        proc.terminate()
        proc.wait(20)


def _fates(url: str, site: str) -> dict[str, dict[str, Any]]:
    """machine -> {ledger: n, n_values, samples, extra, events, dead: [(kind, reason)]}."""
    out: dict[str, dict[str, Any]] = {}

    def row(m: str) -> dict[str, Any]:
        return out.setdefault(
            m, {"ledger": 0, "n_values": 0, "samples": 0, "extra": 0, "events": 0, "dead": []}
        )

    for m, n, nv in query(
        url,
        "SELECT m.machine, count(*), coalesce(sum(l.n_values), 0) FROM message_ledger l "
        "JOIN machine m ON m.id = l.machine_id WHERE m.site = %s GROUP BY 1",
        site,
    ):
        row(m)["ledger"], row(m)["n_values"] = n, nv
    for table, key in (("sample", "samples"), ("sample_extra", "extra")):
        for m, n in query(
            url,
            f"SELECT m.machine, count(*) FROM {table} s JOIN machine m ON m.id = s.machine_id "  # noqa: S608
            "WHERE m.site = %s GROUP BY 1",
            site,
        ):
            row(m)[key] = n
    for m, n in query(
        url,
        "SELECT m.machine, count(*) FROM event e JOIN machine m ON m.id = e.machine_id "
        "WHERE m.site = %s AND e.signal <> 'status' GROUP BY 1",
        site,
    ):
        row(m)["events"] = n
    for topic, kind, reason in query(
        url, "SELECT topic, kind, reason FROM dead_letter WHERE topic LIKE %s", f"%/{site}/%"
    ):
        parts = topic.split("/")
        m = parts[3] if topic.startswith("arbor/") and len(parts) > 3 else parts[-1]
        row(m)["dead"].append((kind, reason))
    return out


def _expect(topic: str, payload: bytes, now: datetime) -> str:
    """What the contract says ingest must do: 'stored', 'dead' or 'ignored'."""
    if topic.endswith("/status") and not payload:
        return "ignored"
    try:
        msg = decode(topic, payload)
    except (PayloadError, TopicError):
        return "dead"
    stamps = [getattr(msg, "ts", None)]
    stamps += [s.ts for s in getattr(msg, "samples", [])] + [
        e.ts for e in getattr(msg, "events", [])
    ]
    for ts in stamps:
        if ts is not None and not (now - timedelta(days=30) < ts < now + timedelta(minutes=5)):
            return "dead"
    return "stored"


def _run_class(
    stack: tuple[str, str, int, _Pub], name: str, messages: list[tuple[str, str, bytes]]
) -> None:
    """Publish ``(machine, topic, payload)``, wait for every fate, check and record."""
    url, site, port, pub = stack
    now = datetime.now(UTC)
    expected = {m: _expect(t, p, now) for m, t, p in messages}
    before = metric(port, "arbor_ingest_messages_total")
    for _, topic, payload in messages:
        pub.send(topic, payload)
    pub.flush()
    wait_for(
        lambda: metric(port, "arbor_ingest_messages_total") >= before + len(messages),
        120,
        f"ingest to handle every {name} message",
    )
    time.sleep(0.5)
    fates = _fates(url, site)
    outcome: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    problems = []
    for machine, topic, payload in messages:
        f = fates.get(machine, {"ledger": 0, "samples": 0, "extra": 0, "events": 0, "dead": []})
        stored, dead = f["ledger"] > 0, f["dead"]
        want = expected[machine]
        got = "stored" if stored and not dead else "dead" if dead and not stored else (
            "ignored" if not stored and not dead else "both")  # fmt: skip
        outcome[got] += 1
        kinds.update(k for k, _ in dead)
        if got != want:
            problems.append(f"{topic}: expected {want}, got {got} {dead[:1]} {payload[:120]!r}")
        if dead and any(not r or k not in DEAD_KINDS for k, r in dead):
            problems.append(f"{topic}: dead letter without a kind or reason: {dead}")
        if got == "dead" and (f["samples"] or f["extra"] or f["events"]):
            problems.append(f"{topic}: dead-lettered but rows written: {f}")
        if got == "stored" and topic.endswith("/event"):
            n = len(json.loads(payload)["events"])
            if f["events"] != n:
                problems.append(f"{topic}: {f['events']} event rows for {n} events")
        if got == "stored" and topic.endswith("/telemetry"):
            doc = json.loads(payload)
            n_values = sum(len(s["values"]) for s in doc["samples"])
            if f["n_values"] != n_values or not (f["samples"] or f["extra"]):
                problems.append(f"{topic}: half-written ({f}, {n_values} values sent)")
    assert metric(port, "arbor_ingest_messages_total") >= before + len(messages)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"class": name, "sent": len(messages), "outcome": outcome,
                             "dead_kinds": kinds, "problems": problems[:10],
                             "n_problems": len(problems)}) + "\n")  # fmt: skip
    assert not problems, "\n".join(problems[:15])


def _collect(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    out: list[Any] = []

    @settings(max_examples=n, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy)
    def gather(x: Any) -> None:
        out.append(x)

    gather()
    return out


@pytest.mark.timeout(600)
@pytest.mark.parametrize("channel", ["telemetry", "event", "status"])
def test_schema_fuzzed_payloads(stack: tuple[str, str, int, _Pub], channel: str) -> None:
    _, site, _, _ = stack
    now = datetime.now(UTC)
    docs = _collect(hostile(load_schema(channel), now), N)
    messages = []
    for i, doc in enumerate(docs):
        machine = f"j{channel[0]}{i:04d}"
        try:
            payload = json.dumps(doc, allow_nan=False).encode()
        except ValueError:
            continue
        messages.append((machine, f"arbor/v1/{site}/{machine}/{channel}", payload))
    _run_class(stack, f"schema-fuzzed {channel}", messages)


def _nasties(site: str) -> list[tuple[str, str, bytes]]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    good = {"v": 1, "session": "s1", "seq": 0,
            "samples": [{"ts": now, "values": {"spindle_speed": 1.0}}]}  # fmt: skip
    raw = json.dumps(good)
    cases = [
        b"", b"null", b"[]", b"{}", b"\xff\xfe\x00", b"\xef\xbb\xbf" + raw.encode(),
        raw[:-5].encode(), raw.replace("1.0", "NaN").encode(), raw.replace("1.0", "1e999").encode(),
        raw.replace("1.0", "Infinity").encode(), b"[" * 100_000, b"{" * 10_000,
        json.dumps({**good, "samples": good["samples"] * 5000}).encode(),  # > 256 KiB
        raw.replace("spindle_speed", "spindle_speed\\u0000").encode(),
        raw.replace('"s1"', '"' + "s" * 10_000 + '"').encode(),
        raw.replace('"seq": 0', '"seq": 99999999999999999999999').encode(),
        raw.replace('"seq": 0', '"seq": -1').encode(),
        raw.replace(now, "2024-05-01T08:00:00").encode(),
        raw.replace(now, "9999-12-31T23:59:59.999Z").encode(),
        raw.replace('"v": 1', '"v": 2').encode(),
        raw.replace("spindle_speed", "x_evil_'; DROP TABLE sample; --").encode(),
        raw.replace("spindle_speed", "x_evil_robert_drop_table").replace("1.0", '"\'); DROP TABLE '
                                                                              'sample;--"').encode(),
        raw.encode() + b"\x00",
    ]  # fmt: skip
    out = [(f"k{i:03d}", f"arbor/v1/{site}/k{i:03d}/telemetry", p) for i, p in enumerate(cases)]
    out += [(f"ke{i:03d}", f"arbor/v1/{site}/ke{i:03d}/event", p) for i, p in enumerate(cases)]
    out += [(f"ks{i:03d}", f"arbor/v1/{site}/ks{i:03d}/status", p) for i, p in enumerate(cases)]
    for i, topic in enumerate([f"arbor/v1/{site}/Bad-Id/telemetry", f"arbor/v1/{site}/kt1/bogus",
                               f"arbor/v1/{site}/kt2/telemetry/extra"]):  # fmt: skip
        out.append((topic.split("/")[3], topic, raw.encode()))
        del i
    return out


@pytest.mark.timeout(600)
def test_raw_bytes_and_nasties(stack: tuple[str, str, int, _Pub]) -> None:
    _, site, _, _ = stack
    blobs = _collect(st.binary(max_size=2048), N)
    messages = [
        (f"r{i:04d}", f"arbor/v1/{site}/r{i:04d}/{('telemetry', 'event', 'status')[i % 3]}", b)
        for i, b in enumerate(blobs)
    ]
    _run_class(stack, "raw bytes", messages)
    _run_class(stack, "nasty payloads and topics", _nasties(site))


def _nbirth(t: int) -> Payload:
    return Payload(
        timestamp=t,
        seq=0,
        metrics=(
            Metric(name="bdSeq", datatype=DataType.INT64, value=0, timestamp=t),
            Metric(name="Spindle/Speed", alias=1, datatype=DataType.DOUBLE, value=1.0, timestamp=t),
            Metric(name="Execution", alias=2, datatype=DataType.STRING, value="READY", timestamp=t),
        ),
    )


@pytest.mark.timeout(600)
def test_sparkplug_fuzz(stack: tuple[str, str, int, _Pub]) -> None:
    """Per node: a valid NBIRTH, then one NDATA that is random bytes, a mutated valid payload,
    or a structurally valid payload with hostile metrics. Every node's NBIRTH is stored; every
    NDATA is stored or dead-lettered (sparkplug_decode / sparkplug_no_birth), never both."""
    url, site, port, pub = stack
    t = int(time.time() * 1000)
    good = encode_payload(
        Payload(timestamp=t, seq=1, metrics=(Metric(alias=1, value=2.0, timestamp=t),))
    )
    rnd = random.Random(10)
    blobs = _collect(st.binary(max_size=512), N // 2)
    for _ in range(N // 2):
        b = bytearray(good)
        for _ in range(rnd.randint(1, 4)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        blobs.append(bytes(b[: rnd.randint(0, len(b))]) if rnd.random() < 0.3 else bytes(b))
    weird = [
        Metric(name="x" * 5000, datatype=DataType.DOUBLE, value=1.0, timestamp=t),
        Metric(alias=99, value=1.0, timestamp=t),  # undeclared alias
        Metric(alias=1, datatype=DataType.STRING, value="'; DROP TABLE event;--", timestamp=t),
        Metric(name="Spindle/Speed", datatype=DataType.DOUBLE, value=float("nan"), timestamp=t),
        Metric(name="Spindle/Speed", datatype=DataType.DOUBLE, value=1.0, timestamp=2**62),
    ]
    blobs += [encode_payload(Payload(timestamp=t, seq=1, metrics=(m,))) for m in weird]
    before = metric(port, "arbor_ingest_messages_total")
    for i, blob in enumerate(blobs):
        node = f"p{i:04d}"
        pub.send(f"spBv1.0/{site}/NBIRTH/{node}", encode_payload(_nbirth(t)))
        pub.send(f"spBv1.0/{site}/NDATA/{node}", blob)
    pub.flush()
    wait_for(
        lambda: metric(port, "arbor_ingest_messages_total") >= before + 2 * len(blobs),
        120,
        "ingest to handle every Sparkplug message",
    )
    time.sleep(0.5)
    ledger = dict(
        query(
            url,
            "SELECT m.machine || '/' || l.channel, count(*) FROM message_ledger l JOIN machine m "
            "ON m.id = l.machine_id WHERE m.site = %s GROUP BY 1",
            site,
        )
    )
    dead = {
        topic.rsplit("/", 1)[-1]: (kind, reason)
        for topic, kind, reason in query(
            url, "SELECT topic, kind, reason FROM dead_letter WHERE topic LIKE %s",
            f"spBv1.0/{site}/NDATA/%",
        )
    }  # fmt: skip
    outcome: Counter[str] = Counter()
    problems = []
    for i, blob in enumerate(blobs):
        node = f"p{i:04d}"
        if not ledger.get(f"{node}/nbirth"):
            problems.append(f"{node}: NBIRTH not stored")
        stored = bool(ledger.get(f"{node}/ndata"))
        d = dead.get(node)
        outcome["stored" if stored and not d else "dead" if d and not stored else
                "both" if d else "ignored"] += 1  # fmt: skip
        if stored and d:
            problems.append(f"{node}: stored and dead-lettered {d}")
        if d and (d[0] not in DEAD_KINDS or not d[1]):
            problems.append(f"{node}: dead letter without kind/reason {d}")
        try:
            decode_payload(blob)
            decodable = True
        except ValueError:
            decodable = False
        if not decodable and stored:
            problems.append(f"{node}: undecodable payload stored {blob[:40]!r}")
        if not decodable and not d:
            problems.append(f"{node}: undecodable payload without a dead letter {blob[:40]!r}")
    row = {
        "class": "sparkplug fuzz",
        "sent": len(blobs),
        "outcome": outcome,
        "dead_kinds": Counter(k for k, _ in dead.values()),
        "problems": problems[:10],
        "n_problems": len(problems),
    }
    with RESULTS.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
    assert not problems, "\n".join(problems[:15])
    assert metric(port, "arbor_ingest_messages_total") >= before + 2 * len(blobs)


def _shdr_fuzz_lines(n: int) -> list[str]:
    keys = ["Xact", "Srpm", "exec", "mode", "program", "Scond", "system", "avail", "tool",
            "nope", "", "sm-001:Xact", "*", "@ASSET@"]  # fmt: skip
    junk = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=60)
    words = ["UNAVAILABLE", "fault", "ACTIVE", "1e999", "nan", "-0", "\\|", '"a\\|b"', "", "12"]
    field = st.one_of(junk, st.sampled_from(keys), st.sampled_from(words))
    # Valid stamps only in the past hour (ingest accepts them; a jump back starts a session).
    # A stamp older than ingest's max_past would take the good samples of its batch with it.
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    ts = st.one_of(st.just(""), junk, st.just(hour_ago + "Z"), st.just("not-a-time"),
                   st.just("2026-13-45T99:99:99Z"))  # fmt: skip
    line = st.builds(lambda t, fs: "|".join([t, *fs]), ts, st.lists(field, max_size=12))
    lines = _collect(line, n)
    lines += ["x" * (2 << 20), "* adapterVersion:2.0", "*PONG", "|" * 5000, "\r\r\n", "\x00\x01"]
    return [x for x in lines if "PONG" not in x.upper()]  # a fuzzed heartbeat is not our oracle


@pytest.mark.timeout(600)
def test_shdr_fuzz_through_gateway(
    mqtt_settings: MqttSettings,
    provision_machines: Any,
    stack: tuple[str, str, int, _Pub],
    tmp_path: Path,
) -> None:
    """Junk interleaved with good lines on an SHDR stream: the gateway keeps reading, and every
    good line's sample lands in the database at its own timestamp."""
    import asyncio
    import threading

    from simulators.shdr_adapter import ShdrServer

    url, site, _, _ = stack
    devices = tmp_path / "Devices.xml"
    subprocess.run(
        [sys.executable, "-m", "simulators", "--transport", "shdr", "--machines", "1",
         "--duration", "0.1", "--speedup", "0", "--shdr-port", "0", "--devices-xml",
         str(devices)], cwd=ROOT, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    device = "m0001"
    (user, pw) = provision_machines([(site, "shdrfuzz")])[(site, "shdrfuzz")]
    (tmp_path / "gw.toml").write_text(
        f'[mqtt]\nurl = "mqtt://{mqtt_settings.host}:{mqtt_settings.port}"\n'
        f'[buffer]\npath = "{tmp_path / "buf.sqlite"}"\n[pipeline]\nbatch_interval_s = 0.2\n'
        f'max_interval_s = 3600\n[[source]]\naddress = "127.0.0.1:{{port}}"\n'
        f'devices = "{devices}"\ndevice = "{device}"\nsite = "{site}"\nmachine = "shdrfuzz"\n'
        f'username = "{user}"\npassword = "{pw}"\n'
    )
    loop = asyncio.new_event_loop()
    server = ShdrServer("127.0.0.1", 0)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(10)
    cfg = tmp_path / "gw.toml"
    cfg.write_text(cfg.read_text().replace("{port}", str(server.port)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBOR_")}
    with (tmp_path / "gateway.log").open("wb") as fh:
        gw = subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(cfg)], env=env,
                              cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)  # fmt: skip
    good: list[float] = []
    try:
        wait_for(lambda: server.readers > 0, 30, "the gateway to connect")
        junk = _shdr_fuzz_lines(N * 3)
        t0 = time.time()
        for i, bad in enumerate(junk):
            t = round(t0 + i * 0.01, 3)
            stamp = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            batch = [f"{stamp}|Xact|{i}|Srpm|{1000 + i}", bad]
            asyncio.run_coroutine_threadsafe(server.broadcast(batch), loop).result(10)
            good.append(t)
            if i % 50 == 0:
                time.sleep(0.05)
        last = datetime.fromtimestamp(good[-1], UTC)

        def landed() -> bool:
            got = query(
                url,
                "SELECT max(s.ts) FROM sample s JOIN machine m ON m.id = s.machine_id "
                "WHERE m.site = %s AND m.machine = 'shdrfuzz' AND s.ts <= %s",
                site,
                last,
            )
            return got[0][0] is not None and got[0][0] >= last

        wait_for(landed, 60, "the last good SHDR line in the database")
        assert gw.poll() is None, "the gateway died"
        stored = {
            round(r[0], 3)
            for r in query(
                url,
                "SELECT extract(epoch FROM s.ts)::float8 FROM sample s JOIN machine m ON "
                "m.id = s.machine_id WHERE m.site = %s AND m.machine = 'shdrfuzz' AND "
                "s.position_x IS NOT NULL",
                site,
            )
        }
        missing = [x for x in good if x not in stored]
        with RESULTS.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"class": "shdr fuzz", "sent": len(junk), "good_lines": len(good),
                                 "good_missing": len(missing), "gateway_alive": True,
                                 "n_problems": len(missing)}) + "\n")  # fmt: skip
        assert not missing, f"{len(missing)} of {len(good)} good lines lost, first {missing[:3]}"
    finally:
        gw.terminate()
        gw.wait(20)
        asyncio.run_coroutine_threadsafe(server.__aexit__(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.timeout(120)
def test_topic_spoofing_with_another_machines_credentials(
    mqtt_settings: MqttSettings, provision_machines: Any, stack: tuple[str, str, int, _Pub]
) -> None:
    """Machine A's broker account publishing as machine B: the broker's per-machine ACL refuses
    it (MQTT 5 PUBACK 0x87, not authorised) and nothing of it reaches the database, while A's
    own message lands."""
    url, site, _, _ = stack
    creds = provision_machines([(site, "spoofa"), (site, "spoofb")])
    user, pw = creds[(site, "spoofa")]
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"spoof-{site}", protocol=mqtt.MQTTv5)
    c.username_pw_set(user, pw)
    codes: dict[int, int] = {}
    c.on_publish = lambda _c, _u, mid, rc, _p: codes.__setitem__(mid, rc.value)
    c.connect(mqtt_settings.host, mqtt_settings.port)
    c.loop_start()
    try:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        sample = {"ts": now, "values": {"spindle_speed": 1.0}}
        body = json.dumps({"v": 1, "session": "s1", "seq": 0, "samples": [sample]}).encode()
        spoof = c.publish(f"arbor/v1/{site}/spoofb/telemetry", body, qos=1)
        own = c.publish(f"arbor/v1/{site}/spoofa/telemetry", body, qos=1)
        spoof.wait_for_publish(10)
        own.wait_for_publish(10)
        wait_for(lambda: len(codes) == 2, 10, "both PUBACKs")
    finally:
        c.disconnect()
        c.loop_stop()
    assert codes[own.mid] == 0
    assert codes[spoof.mid] == 0x87, codes  # Not authorized

    def landed() -> bool:
        rows = query(
            url,
            "SELECT count(*) FROM message_ledger l JOIN machine m ON m.id = l.machine_id "
            "WHERE m.site = %s AND m.machine = 'spoofa'",
            site,
        )
        return bool(rows[0][0])

    wait_for(landed, 30, "machine A's own message")
    spoofed = query(
        url,
        "SELECT (SELECT count(*) FROM machine WHERE site = %s AND machine = 'spoofb'), "
        "(SELECT count(*) FROM dead_letter WHERE topic LIKE %s)",
        site,
        f"%/{site}/spoofb/%",
    )
    assert spoofed[0] == (0, 0), spoofed
    with RESULTS.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"class": "topic spoofing (another machine's credentials)",
                             "sent": 1, "outcome": {"refused by broker (0x87)": 1},
                             "dead_kinds": {}, "n_problems": 0}) + "\n")  # fmt: skip
