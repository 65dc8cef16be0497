"""Machine status across sessions: births carry the machine's clock, Last Wills their arrival.

A controller that restarts publishes a new birth while the broker may still be about to deliver the
old connection's Last Will; the old death must not take the new session offline, whichever of the
two ingest hears first, and a machine whose clock runs ahead must still go offline when it dies.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from protocol import Controller, Status, encode
from tests.ingest.helpers import Publisher, scalar, wait_until

pytestmark = pytest.mark.services

_STATE = (
    "SELECT status || ':' || coalesce(session, '-') FROM machine WHERE site = %s AND machine = %s"
)


def _status(session: str, online: bool, ts: datetime) -> bytes:
    controller = Controller(vendor="i5", model="M8", kind="five_axis_mc")
    return encode(Status(online=online, ts=ts, session=session, controller=controller))


def _publish(pub: Publisher, topic: str, payload: bytes) -> None:
    pub.publish(topic, payload)
    pub.flush()


def test_old_last_will_after_new_birth_keeps_machine_online(
    db: str, worker: int, pub: Publisher, unique_site: str
) -> None:
    site, m = unique_site, "restart-a"
    topic = f"arbor/v1/{site}/{m}/status"
    now = datetime.now(UTC)
    _publish(pub, topic, _status("old", True, now - timedelta(minutes=5)))
    wait_until(lambda: scalar(db, _STATE, site, m) == "online:old", what="old session online")
    _publish(pub, topic, _status("new", True, now - timedelta(seconds=1)))
    wait_until(lambda: scalar(db, _STATE, site, m) == "online:new", what="new session online")
    # The broker delivers the dead connection's Will late: stamped on arrival, after the birth.
    _publish(pub, topic, _status("old", False, now - timedelta(minutes=5)))
    ended = "SELECT count(*) FROM machine_session WHERE session = 'old' AND ended_at IS NOT NULL"
    wait_until(lambda: scalar(db, ended) == 1, what="old session ended")
    assert scalar(db, _STATE, site, m) == "online:new"


def test_new_birth_heard_after_old_last_will_takes_machine_online(
    db: str, worker: int, pub: Publisher, unique_site: str
) -> None:
    site, m = unique_site, "restart-b"
    topic = f"arbor/v1/{site}/{m}/status"
    now = datetime.now(UTC)
    _publish(pub, topic, _status("old", True, now - timedelta(minutes=5)))
    wait_until(lambda: scalar(db, _STATE, site, m) == "online:old", what="old session online")
    _publish(pub, topic, _status("old", False, now - timedelta(minutes=5)))
    wait_until(lambda: scalar(db, _STATE, site, m) == "offline:old", what="old session offline")
    # The new birth was stamped by the machine before ingest heard the old Will.
    _publish(pub, topic, _status("new", True, now - timedelta(seconds=30)))
    wait_until(lambda: scalar(db, _STATE, site, m) == "online:new", what="new session online")


def test_machine_with_clock_ahead_still_goes_offline(
    db: str, worker: int, pub: Publisher, unique_site: str
) -> None:
    site, m = unique_site, "fast-clock"
    topic = f"arbor/v1/{site}/{m}/status"
    ahead = datetime.now(UTC) + timedelta(minutes=2)
    _publish(pub, topic, _status("s1", True, ahead))
    wait_until(lambda: scalar(db, _STATE, site, m) == "online:s1", what="online")
    _publish(pub, topic, _status("s1", False, ahead))
    wait_until(lambda: scalar(db, _STATE, site, m) == "offline:s1", what="offline")


def test_late_birth_of_an_ended_session_changes_nothing(
    db: str, worker: int, pub: Publisher, unique_site: str
) -> None:
    site, m = unique_site, "replayed"
    topic = f"arbor/v1/{site}/{m}/status"
    now = datetime.now(UTC)
    _publish(pub, topic, _status("s1", True, now - timedelta(seconds=20)))
    _publish(pub, topic, _status("s1", False, now - timedelta(seconds=20)))
    wait_until(lambda: scalar(db, _STATE, site, m) == "offline:s1", what="offline")
    _publish(pub, topic, _status("s1", True, now - timedelta(seconds=20)))  # a redelivered birth
    _publish(pub, topic, _status("probe", True, now - timedelta(minutes=10)))
    wait_until(
        lambda: scalar(db, "SELECT count(*) FROM machine_session WHERE session = 'probe'") == 1,
        what="the probe birth processed",
    )
    # An older-born session does not displace a later one, and s1 stays ended.
    assert scalar(db, _STATE, site, m) == "offline:s1"


@pytest.fixture(scope="module")
def worker_extra_env() -> dict[str, str]:
    # The silence job every second, so that a wrong "silent" verdict shows within the test.
    return {"ARBOR_INGEST_JOBS_INTERVAL_S": "1", "ARBOR_INGEST_SILENCE_TIMEOUT_S": "60"}


def test_a_birth_stamped_long_ago_is_not_silent_on_arrival(
    db: str, worker: int, pub: Publisher, unique_site: str
) -> None:
    # A controller whose clock is ten minutes behind (or a birth delivered late): heard now, so
    # not silent, although its own timestamp is older than the silence timeout.
    site, m = unique_site, "slow-clock"
    topic = f"arbor/v1/{site}/{m}/status"
    _publish(pub, topic, _status("s1", True, datetime.now(UTC) - timedelta(minutes=10)))
    wait_until(lambda: scalar(db, _STATE, site, m) == "online:s1", what="online")
    seen = (
        "SELECT extract(epoch FROM now() - last_seen) FROM machine WHERE site = %s AND machine = %s"
    )
    assert scalar(db, seen, site, m) < 60  # our clock, not the machine's
    time.sleep(3)  # three runs of the silence job
    assert scalar(db, _STATE, site, m) == "online:s1"
