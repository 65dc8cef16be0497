"""Migrations against the real TimescaleDB: idempotent, safe concurrently, hypertables made."""

from __future__ import annotations

import threading

import psycopg
import pytest

from ingest.migrate import Migration, MigrationError, apply_migrations, load_migrations
from tests.conftest import drop_database

pytestmark = pytest.mark.services


def test_migrations_are_numbered_and_ordered() -> None:
    migrations = load_migrations()
    assert migrations, "no migration files shipped"
    versions = [m.version for m in migrations]
    assert versions == sorted(versions)
    assert versions[0] == 1


def test_second_run_applies_nothing(fresh_database: str) -> None:
    first, _ = apply_migrations(fresh_database)
    second, _ = apply_migrations(fresh_database)
    assert [m.version for m in first] == [m.version for m in load_migrations()]
    assert second == []
    with psycopg.connect(fresh_database) as conn:
        rows = conn.execute("SELECT version FROM arbor_schema_migration ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == [m.version for m in load_migrations()]


def test_dead_letter_is_a_hypertable(fresh_database: str) -> None:
    apply_migrations(fresh_database)
    with psycopg.connect(fresh_database) as conn:
        names = {
            r[0]
            for r in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")
        }
    assert "dead_letter" in names


def test_timescaledb_edition_is_recorded(fresh_database: str) -> None:
    _, features = apply_migrations(fresh_database)
    with psycopg.connect(fresh_database) as conn:
        row = conn.execute(
            "SELECT version, license, compression, continuous_aggregates FROM arbor_timescaledb"
        ).fetchone()
        license_setting = conn.execute(
            "SELECT coalesce(current_setting('timescaledb.license', true), 'apache')"
        ).fetchone()
    assert row is not None and license_setting is not None
    assert row[1] == license_setting[0] == features.license
    # Compression and continuous aggregates exist only in the community (timescale) edition.
    assert row[2] is row[3] is (features.license == "timescale")


def test_edited_migration_is_refused(fresh_database: str) -> None:
    apply_migrations(fresh_database)
    first = load_migrations()[0]
    tampered = Migration(first.version, first.name, first.sql + "\n-- edited later\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        apply_migrations(fresh_database, [tampered])


def test_concurrent_runs_apply_each_migration_once(database_url: str) -> None:
    # Its own database: this test must see the very first run race against the others.
    import secrets

    from psycopg import sql

    name = f"t_concurrent_{secrets.token_hex(4)}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = database_url.rsplit("/", 1)[0] + "/" + name
    try:
        applied: list[int] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def worker() -> None:
            try:
                done, _ = apply_migrations(url)
            except BaseException as exc:  # noqa: BLE001 - collected and asserted on below
                with lock:
                    errors.append(exc)
                return
            with lock:
                applied.extend(m.version for m in done)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert sorted(applied) == [m.version for m in load_migrations()]
    finally:
        drop_database(database_url, name)


def test_broken_migration_rolls_back_and_names_itself(fresh_database: str) -> None:
    apply_migrations(fresh_database)
    bad = Migration(9999, "broken", "CREATE TABLE half_done (x int); SELECT no_such_function();")
    with pytest.raises(MigrationError, match="9999_broken failed"):
        apply_migrations(fresh_database, [*load_migrations(), bad])
    with psycopg.connect(fresh_database) as conn:
        leftover = conn.execute("SELECT to_regclass('half_done')").fetchone()
        recorded = conn.execute(
            "SELECT count(*) FROM arbor_schema_migration WHERE version = 9999"
        ).fetchone()
    assert leftover == (None,)
    assert recorded == (0,)
