"""Versioned SQL migrations, applied with psycopg.

Files `ingest/migrations/NNNN_name.sql` are applied in order, each in its own transaction, and
recorded in `arbor_schema_migration` with a checksum. A session-level advisory lock serialises
concurrent runs (two ingest workers starting together), so running twice or at once is safe; a
recorded migration whose file has since changed is refused rather than silently skipped.
After migrating, the TimescaleDB edition is detected and recorded in `arbor_timescaledb`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

__all__ = [
    "Migration",
    "MigrationError",
    "TimescaleFeatures",
    "apply_migrations",
    "load_migrations",
]

# Any constant shared by every Arbor process: pg_advisory_lock takes a bigint.
_LOCK_KEY = 0x4172626F72  # "Arbor"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """A migration file is malformed, changed after it was applied, or failed to apply."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class TimescaleFeatures:
    """What the connected TimescaleDB offers.

    Compression and continuous aggregates need the community (`timescale`) license.
    """

    version: str
    license: str

    @property
    def compression(self) -> bool:
        return self.license == "timescale"

    @property
    def continuous_aggregates(self) -> bool:
        return self.license == "timescale"


def load_migrations() -> list[Migration]:
    """The migrations shipped in this package, in version order."""
    found: list[Migration] = []
    for entry in resources.files("ingest").joinpath("migrations").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        m = _NAME.match(entry.name)
        if not m:
            raise MigrationError(f"migration file name {entry.name!r} is not NNNN_name.sql")
        found.append(Migration(int(m.group(1)), m.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {versions}")
    return found


def apply_migrations(
    dsn: str, migrations: list[Migration] | None = None
) -> tuple[list[Migration], TimescaleFeatures]:
    """Apply the pending migrations; returns those applied now and the TimescaleDB features."""
    migrations = load_migrations() if migrations is None else migrations
    applied: list[Migration] = []
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [_LOCK_KEY])
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS arbor_schema_migration (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       checksum   text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {
                int(v): str(c)
                for v, c in conn.execute("SELECT version, checksum FROM arbor_schema_migration")
            }
            for m in migrations:
                if m.version in done:
                    if done[m.version] != m.checksum:
                        raise MigrationError(
                            f"migration {m.version:04d}_{m.name} was changed after it was applied; "
                            "add a new migration instead of editing an applied one"
                        )
                    continue
                try:
                    with conn.transaction():
                        conn.execute(m.sql.encode())
                        conn.execute(
                            "INSERT INTO arbor_schema_migration (version, name, checksum) "
                            "VALUES (%s, %s, %s)",
                            [m.version, m.name, m.checksum],
                        )
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {m.version:04d}_{m.name} failed: {exc}"
                    ) from exc
                applied.append(m)
            features = _detect_timescaledb(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])
    return applied, features


def _detect_timescaledb(conn: psycopg.Connection[tuple[object, ...]]) -> TimescaleFeatures:
    row = conn.execute(
        "SELECT extversion, coalesce(current_setting('timescaledb.license', true), 'apache') "
        "FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone()
    if row is None:
        raise MigrationError("TimescaleDB is not installed in this database")
    features = TimescaleFeatures(version=str(row[0]), license=str(row[1]))
    conn.execute(
        """CREATE TABLE IF NOT EXISTS arbor_timescaledb (
               id                    boolean PRIMARY KEY DEFAULT true CHECK (id),
               version               text NOT NULL,
               license               text NOT NULL,
               compression           boolean NOT NULL,
               continuous_aggregates boolean NOT NULL,
               detected_at           timestamptz NOT NULL DEFAULT now())"""
    )
    conn.execute(
        """INSERT INTO arbor_timescaledb
               (version, license, compression, continuous_aggregates, detected_at)
           VALUES (%s, %s, %s, %s, now())
           ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, license = EXCLUDED.license,
               compression = EXCLUDED.compression,
               continuous_aggregates = EXCLUDED.continuous_aggregates,
               detected_at = EXCLUDED.detected_at""",
        [features.version, features.license, features.compression, features.continuous_aggregates],
    )
    return features
