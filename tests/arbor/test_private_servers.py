"""The private servers fault tests rely on really restart with their data kept."""

from __future__ import annotations

import psycopg
import pytest

from tests.servers import PrivateBroker, PrivateDatabase

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_private_broker_restarts_on_the_same_port() -> None:
    with PrivateBroker() as broker:
        port = broker.port
        assert broker.accepts()
        broker.stop()
        assert not broker.running
        assert not broker.accepts()
        broker.start()
        assert broker.port == port
        assert broker.accepts()
    assert not broker.running


def test_private_database_keeps_rows_across_a_crash() -> None:
    with PrivateDatabase() as db:
        with psycopg.connect(db.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        db.stop(mode="kill")
        db.start()
        with psycopg.connect(db.url) as conn:
            assert conn.execute("SELECT x FROM kept").fetchall() == [(42,)]
