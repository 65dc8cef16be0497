"""The telemetry route's rollup watermarks are read in one statement; a database without
ingest's migration 0003 (no rollup_watermark table) reads raw samples only."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from api.telemetry import _watermarks

pytestmark = pytest.mark.services


def test_watermarks_with_and_without_the_table(fresh_database: str) -> None:
    mark = datetime(2026, 3, 2, 6, tzinfo=UTC)
    chain = ["sample_5m", "sample_1m"]

    async def run() -> tuple[dict[str, datetime | None], dict[str, datetime | None]]:
        conn = await asyncpg.connect(fresh_database)
        try:
            absent = await _watermarks(conn, chain)
            await conn.execute(
                "CREATE TABLE rollup_watermark (rollup text PRIMARY KEY, done_until timestamptz)"
            )
            await conn.execute(
                "INSERT INTO rollup_watermark VALUES ('sample_1m', $1), ('sample_1h', $1)", mark
            )
            return absent, await _watermarks(conn, chain)
        finally:
            await conn.close()

    assert asyncio.run(run()) == ({}, {"sample_1m": mark})
