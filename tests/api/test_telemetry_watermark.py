"""The telemetry route's rollup watermark is read in one statement; a database without ingest's
migration 0003 (no rollup_watermark table) reads raw samples only."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from api.telemetry import _watermark

pytestmark = pytest.mark.services


def test_watermark_with_and_without_the_table(fresh_database: str) -> None:
    mark = datetime(2026, 3, 2, 6, tzinfo=UTC)

    async def run() -> tuple[datetime | None, datetime | None, datetime | None]:
        conn = await asyncpg.connect(fresh_database)
        try:
            absent = await _watermark(conn, "sample_1m")
            await conn.execute(
                "CREATE TABLE rollup_watermark (rollup text PRIMARY KEY, done_until timestamptz)"
            )
            await conn.execute("INSERT INTO rollup_watermark VALUES ('sample_1m', $1)", mark)
            return absent, await _watermark(conn, "sample_1m"), await _watermark(conn, "sample_1h")
        finally:
            await conn.close()

    assert asyncio.run(run()) == (None, mark, None)
