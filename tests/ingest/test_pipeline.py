"""The worker against the real broker and database: good data lands exactly once, every class of
bad input is dead-lettered with its reason while the good messages around it still land, gaps
and machine status are recorded."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import orjson
import pytest

from protocol import Sample, Telemetry, encode
from tests.conftest import MqttSettings
from tests.ingest.helpers import (
    Publisher,
    event,
    metric,
    rows,
    scalar,
    status,
    telemetry,
    wait_until,
)

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def worker_extra_env() -> dict[str, str]:
    return {"ARBOR_INGEST_SILENCE_TIMEOUT_S": "3"}


def _mid(db: str, site: str, machine: str) -> int | None:
    value = scalar(db, "SELECT id FROM machine WHERE site = %s AND machine = %s", site, machine)
    return None if value is None else int(value)


def _count(db: str, table: str, site: str, machine: str) -> int:
    return int(
        scalar(
            db,
            f"SELECT count(*) FROM {table} t JOIN machine m ON m.id = t.machine_id "  # noqa: S608
            "WHERE m.site = %s AND m.machine = %s",
            site,
            machine,
        )
    )


def test_good_data_lands_once(db: str, worker: int, pub: Publisher, unique_site: str) -> None:
    site, m = unique_site, "m-good"
    base = f"arbor/v1/{site}/{m}"
    pub.publish(f"{base}/status", status("s1", True), retain=True)
    payloads = [telemetry("s1", seq, n=5, x_acme_temp=21.5) for seq in range(20)]
    for payload in payloads:
        pub.publish(f"{base}/telemetry", payload)
    pub.publish(f"{base}/event", event("s1", 20, "execution", "ACTIVE"))
    pub.publish(f"{base}/telemetry", payloads[3])  # a replay of seq 3: changes nothing
    assert pub.flush() == [0] * 23
    wait_until(lambda: _count(db, "message_ledger", site, m) >= 22, what="22 ledger rows")
    wait_until(lambda: _count(db, "event", site, m) >= 2, what="the events")
    assert _count(db, "sample", site, m) == 100
    assert _count(db, "sample_extra", site, m) == 100  # the vendor signal, narrow
    assert _count(db, "message_ledger", site, m) == 22  # 21 data + the birth
    state = rows(
        db,
        "SELECT status, online, session, controller->>'vendor' FROM machine "
        "WHERE site = %s AND machine = %s",
        site,
        m,
    )
    assert state == [("online", True, "s1", "i5")]
    values = rows(
        db,
        "SELECT value FROM event e JOIN machine m ON m.id = e.machine_id "
        "WHERE m.site = %s AND m.machine = %s ORDER BY signal",
        site,
        m,
    )
    assert values == [("ACTIVE",), ("online",)]
    pub.publish(f"{base}/status", b"", retain=True)
    pub.flush()


def test_every_bad_input_is_dead_lettered_and_good_data_still_lands(
    db: str, worker: int, pub: Publisher, unique_site: str, mqtt_settings: MqttSettings
) -> None:
    site, m = unique_site, "m-bad"
    base = f"arbor/v1/{site}/{m}"
    now = datetime.now(UTC)
    good = [telemetry("s1", seq) for seq in range(10)]
    bad: dict[str, tuple[str, bytes]] = {
        "malformed_json": (f"{base}/telemetry", b'{"v": 1, "session": "s1", "seq": '),
        "wrong_type": (
            f"{base}/telemetry",
            orjson.dumps(
                {
                    "v": 1,
                    "session": "s1",
                    "seq": 100,
                    "samples": [
                        {"ts": "2024-05-01T00:00:00Z", "values": {"spindle_speed": "fast"}}
                    ],
                }
            ),
        ),
        "non_finite": (
            f"{base}/telemetry",
            b'{"v":1,"session":"s1","seq":101,"samples":[{"ts":"2024-05-01T00:00:00Z",'
            b'"values":{"spindle_load":NaN}}]}',
        ),
        "unknown_signal": (
            f"{base}/telemetry",
            orjson.dumps(
                {
                    "v": 1,
                    "session": "s1",
                    "seq": 102,
                    "samples": [{"ts": "2024-05-01T00:00:00Z", "values": {"warp_drive": 1.0}}],
                }
            ),
        ),
        "timestamp_range": (f"{base}/telemetry", telemetry("s1", 103, t0=now + timedelta(days=2))),
        "oversized": (f"{base}/telemetry", b"{" + b" " * (300 * 1024) + b"}"),
        "bad_topic": (f"arbor/v1/{site}/Not_Valid/telemetry", telemetry("s1", 104)),
        "session_conflict": (f"{base}/telemetry", telemetry("intruder", 0)),
    }
    past = telemetry("s1", 105, t0=now - timedelta(days=400))
    pub.publish(f"{base}/status", status("s1", True), retain=True)
    for i, (topic, payload) in enumerate(bad.values()):
        pub.publish(f"{base}/telemetry", good[i])
        pub.publish(topic, payload)
    pub.publish(f"{base}/telemetry", past)
    pub.publish(f"{base}/telemetry", good[9])
    pub.publish(f"{base}/telemetry", good[8])
    assert all(rc == 0 for rc in pub.flush())

    wait_until(lambda: _count(db, "message_ledger", site, m) >= 10, what="the good messages")
    wait_until(
        lambda: (
            int(
                scalar(
                    db, "SELECT count(*) FROM dead_letter WHERE topic LIKE %s", f"arbor/v1/{site}/%"
                )
            )
            >= len(bad) + 1
        ),
        what="the dead letters",
    )
    got = rows(
        db,
        "SELECT kind, reason, topic, length(payload) FROM dead_letter "
        "WHERE topic LIKE %s ORDER BY received_at",
        f"arbor/v1/{site}/%",
    )
    kinds = [g[0] for g in got]
    assert sorted(kinds) == sorted([*bad, "timestamp_range"])
    reasons = {g[0]: g[1] for g in got}
    assert "spindle_speed" in reasons["wrong_type"]
    assert "warp_drive" in reasons["unknown_signal"]
    assert "307" in reasons["oversized"] or "limit" in reasons["oversized"]
    assert "machine id" in reasons["bad_topic"]
    assert "intruder" in reasons["session_conflict"]
    assert all(g[3] > 0 for g in got), "the raw payload is kept"
    assert _count(db, "message_ledger", site, m) == 11  # 10 good + birth
    assert _count(db, "sample", site, m) == 50
    pub.publish(f"{base}/status", b"", retain=True)
    pub.flush()


def test_machine_account_cannot_publish_as_another(
    db: str,
    worker: int,
    unique_site: str,
    mqtt_settings: MqttSettings,
    provision_machines: Callable[[list[tuple[str, str]]], dict[tuple[str, str], tuple[str, str]]],
) -> None:
    site = unique_site
    creds = provision_machines([(site, "ma"), (site, "mb")])
    user, password = creds[(site, "ma")]
    spoofer = Publisher(mqtt_settings.host, mqtt_settings.port, user, password)
    try:
        spoofer.publish(f"arbor/v1/{site}/mb/telemetry", telemetry("fake", 0))
        spoofer.publish(f"arbor/v1/{site}/ma/telemetry", telemetry("real", 0))
        codes = spoofer.flush()
    finally:
        spoofer.close()
    assert codes[1] == 0
    wait_until(
        lambda: _mid(db, site, "ma") is not None and _count(db, "message_ledger", site, "ma") == 1,
        what="ma's own message",
    )
    assert _mid(db, site, "mb") is None, "the broker's ACL kept the spoofed message out"


def test_gaps_are_recorded(db: str, worker: int, pub: Publisher, unique_site: str) -> None:
    site, m = unique_site, "m-gap"
    for seq in (0, 1, 2, 6, 7):
        pub.publish(f"arbor/v1/{site}/{m}/telemetry", telemetry("g1", seq))
    pub.flush()
    wait_until(
        lambda: (
            rows(
                db,
                "SELECT first_missing, last_missing FROM sequence_gap g "
                "JOIN machine m ON m.id = g.machine_id WHERE m.machine = %s",
                m,
            )
            == [(3, 5)]
        ),
        what="the gap 3..5",
    )


def test_a_lost_session_head_is_recorded_as_a_gap(
    db: str, worker: int, pub: Publisher, unique_site: str
) -> None:
    site, m = unique_site, "m-head"
    for seq in (3, 4):  # 0..2 never arrive (a new session starts at 0)
        pub.publish(f"arbor/v1/{site}/{m}/telemetry", telemetry("h1", seq))
    pub.flush()
    wait_until(
        lambda: (
            rows(
                db,
                "SELECT g.session, first_missing, last_missing FROM sequence_gap g "
                "JOIN machine m ON m.id = g.machine_id WHERE m.machine = %s",
                m,
            )
            == [("h1", 0, 2)]
        ),
        what="the lost head 0..2",
    )


def test_silent_machine_becomes_unknown_then_online(
    db: str, worker: int, pub: Publisher, unique_site: str
) -> None:
    site, m = unique_site, "m-quiet"
    base = f"arbor/v1/{site}/{m}"
    pub.publish(f"{base}/status", status("q1", True))
    pub.publish(f"{base}/telemetry", telemetry("q1", 0))
    pub.flush()
    state = "SELECT status FROM machine WHERE site = %s AND machine = %s"
    wait_until(lambda: scalar(db, state, site, m) == "online", what="online")
    wait_until(lambda: scalar(db, state, site, m) == "unknown", timeout=30, what="unknown")
    pub.publish(f"{base}/telemetry", telemetry("q1", 1))
    pub.flush()
    wait_until(lambda: scalar(db, state, site, m) == "online", what="online again")
    pub.publish(f"{base}/status", status("q1", False))
    pub.flush()
    wait_until(lambda: scalar(db, state, site, m) == "offline", what="offline")
    history = rows(
        db,
        "SELECT value FROM state_interval s JOIN machine m ON m.id = s.machine_id "
        "WHERE m.machine = %s AND signal = 'status' ORDER BY start_ts",
        m,
    )
    states = [h[0] for h in history]
    # On a loaded machine the 3 s silence can pass again before the offline status is processed:
    # another unknown -> online pair is then correct too.
    assert states[:3] == ["online", "unknown", "online"] and states[-1] == "offline", states
    assert all(a != b for a, b in pairwise(states)), states


def test_a_bad_status_is_dead_lettered_by_its_shared_copy_only() -> None:
    """Bug 8 of docs/reliability.md: a status message reaches a worker through the non-shared
    status subscription (every worker) and the shared one (one worker); only the shared copy
    (or, while recovering, the anchor's) dead-letters it."""
    import time

    from ingest.config import SUB_ANCHOR, SUB_SHARED, SUB_STATUS, IngestSettings
    from ingest.decode import Decoder
    from ingest.records import Ack, Raw

    settings = IngestSettings(database_url="postgresql://unused", mqtt_url="mqtt://unused")
    topic = "arbor/v1/s1/m1/status"
    raws = [
        Raw(topic, b"not json", Ack(i, 1, 1), time.time(), via)
        for i, via in enumerate(
            [(SUB_STATUS,), (SUB_SHARED,), (SUB_ANCHOR,), (SUB_SHARED, SUB_STATUS), ()]
        )
    ]
    out = Decoder(settings).decode(raws)
    assert [d.kind for d in out.dead] == ["malformed_json"] * 4
    assert out.ignored == 1
    # A status filter the shared filter does not cover: worker 0 dead-letters the status copy.
    other = IngestSettings(
        database_url="postgresql://unused", mqtt_url="mqtt://unused", topic_filter="arbor/v1/x/#"
    )
    assert len(Decoder(other).decode(raws[:1]).dead) == 1
    other1 = other.model_copy(update={"worker_index": 1})
    assert Decoder(other1).decode(raws[:1]).dead == []


def test_a_bad_status_is_dead_lettered_once(
    db: str, worker: int, pub: Publisher, unique_site: str
) -> None:
    site, m = unique_site, "m-badstatus"
    ignored = metric(worker, "arbor_ingest_messages_total", outcome="ignored")
    pub.publish(f"arbor/v1/{site}/{m}/status", b"\x00not json")
    pub.publish(f"arbor/v1/{site}/{m}/telemetry", telemetry("b1", 0))
    pub.flush()
    wait_until(lambda: _count(db, "message_ledger", site, m) == 1, what="the message after it")
    # The status subscription's copy was seen (and ignored) and the shared copy dead-lettered.
    wait_until(
        lambda: metric(worker, "arbor_ingest_messages_total", outcome="ignored") >= ignored + 1,
        what="the status subscription's copy",
    )
    dead = "SELECT count(*) FROM dead_letter WHERE topic = %s"
    wait_until(lambda: scalar(db, dead, f"arbor/v1/{site}/{m}/status") >= 1, what="a dead letter")
    assert scalar(db, dead, f"arbor/v1/{site}/{m}/status") == 1


def test_a_replayed_backlog_reaches_the_rollups(
    db: str, worker: int, pub: Publisher, unique_site: str
) -> None:
    """A gateway replaying its disk buffer sends samples hours old, into rollup buckets the job
    has already written: the job redoes them for that machine (and only writes them once)."""
    site, m = unique_site, "m-backlog"
    base = f"arbor/v1/{site}/{m}"

    def marks() -> dict[str, datetime]:
        return dict(rows(db, "SELECT rollup, done_until FROM rollup_watermark"))

    # The job has written the final buckets up to about now: the backlog lands behind it.
    recent = datetime.now(UTC) - timedelta(minutes=5)
    wait_until(
        lambda: len(marks()) == 3 and marks()["sample_1m"] > recent, what="rollups caught up"
    )
    pub.publish(f"{base}/status", status("s-bl", True), retain=True)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    t0 = hour + timedelta(minutes=10)
    # Six messages one minute apart, each 5 samples: spindle_speed 1000..1004, load 20.5.
    for k in range(6):
        pub.publish(f"{base}/telemetry", telemetry("s-bl", k, n=5, t0=t0 + timedelta(minutes=k)))
    assert pub.flush() == [0] * 7
    wait_until(lambda: _mid(db, site, m) is not None, what="the machine")
    mid = _mid(db, site, m)
    expected = {
        "sample_1m": [(t0 + timedelta(minutes=k), 5, 1002.0, 1000.0, 1004.0) for k in range(6)],
        "sample_5m": [
            (t0, 25, 1002.0, 1000.0, 1004.0),
            (t0 + timedelta(minutes=5), 5, 1002.0, 1000.0, 1004.0),
        ],
        "sample_1h": [(hour, 30, 1002.0, 1000.0, 1004.0)],
    }

    def rolled(table: str) -> list[tuple[Any, ...]]:
        return rows(
            db,
            f"SELECT bucket, n, spindle_speed_avg, spindle_speed_min, spindle_speed_max "  # noqa: S608
            f"FROM {table} WHERE machine_id = %s ORDER BY bucket",
            mid,
        )

    for table, want in expected.items():
        wait_until(lambda t=table, w=want: rolled(t) == w, timeout=30, what=f"{table} redone")
    assert rows(db, "SELECT count(*) FROM rollup_dirty") == [(0,)]
    # A second replay of the same messages is a duplicate: nothing changes.
    dupes = metric(worker, "arbor_ingest_messages_total", outcome="duplicate")
    for k in range(6):
        pub.publish(f"{base}/telemetry", telemetry("s-bl", k, n=5, t0=t0 + timedelta(minutes=k)))
    assert pub.flush() == [0] * 6
    wait_until(
        lambda: metric(worker, "arbor_ingest_messages_total", outcome="duplicate") >= dupes + 6,
        what="the replay counted as duplicates",
    )
    assert {t: rolled(t) for t in expected} == expected


def test_a_replayed_backlog_does_not_count_as_ingest_latency(
    db: str, worker: int, pub: Publisher, unique_site: str
) -> None:
    """The latency histogram is for dashboards and alerts on ingest itself: a gateway's disk
    buffer replayed after an outage (historical, hours old) would read as hours of latency."""
    site, m = unique_site, "m-latency"
    base = f"arbor/v1/{site}/{m}"
    pub.publish(f"{base}/status", status("s-lat", True), retain=True)
    assert pub.flush() == [0]
    wait_until(lambda: _count(db, "message_ledger", site, m) >= 1, what="the birth")
    old = datetime.now(UTC) - timedelta(hours=2)
    replay = Telemetry(
        session="s-lat", seq=0, historical=True,
        samples=[Sample(ts=old, values={"spindle_speed": 1.0})],
    )  # fmt: skip
    count = "arbor_ingest_latency_seconds_count"
    before = metric(worker, count)
    pub.publish(f"{base}/telemetry", encode(replay))
    pub.publish(f"{base}/telemetry", telemetry("s-lat", 1, n=1))
    assert pub.flush() == [0, 0]
    wait_until(lambda: _count(db, "message_ledger", site, m) >= 3, what="both stored")
    wait_until(lambda: metric(worker, count) >= before + 1, what="the live one counted")
    assert metric(worker, count) == before + 1  # the live message only
