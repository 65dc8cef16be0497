"""Oversized uploads: refused with 413 before the body is read or parsed, server unharmed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from api.config import ApiSettings
from api.keys import Role
from tests.api.conftest import error_of

pytestmark = pytest.mark.services

LIMIT = 100_000


@pytest.fixture(scope="module")
def api_settings(api_database: str, mqtt_settings: Any) -> ApiSettings:
    return ApiSettings(
        database_url=api_database,
        mqtt_url="",
        api_rate_per_s=10_000,
        api_rate_burst=10_000,
        api_max_program_bytes=1024,
        api_max_body_bytes=LIMIT,
    )


def _program(size: int) -> dict[str, Any]:
    return {"name": "O1000", "content": "G0 X0\n" * (size // 6), "encoding": "utf-8"}


def test_a_declared_oversized_body_is_refused_with_413_and_the_limit(
    client_for: Callable[[str | None], httpx.Client], keys: dict[Role, str]
) -> None:
    c = client_for(keys[Role.ADMIN])
    t0 = time.monotonic()
    r = c.post("/api/v1/programs", json=_program(5_000_000))
    assert r.status_code == 413, r.text
    err = error_of(r)
    assert err["code"] == "payload_too_large"
    assert str(LIMIT) in err["message"]
    assert time.monotonic() - t0 < 20


def test_a_chunked_oversized_body_is_cut_off_with_413(
    client_for: Callable[[str | None], httpx.Client], keys: dict[Role, str]
) -> None:
    c = client_for(keys[Role.ADMIN])
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"name": "O1001", "encoding": "utf-8", "content": "'
        for _ in range(400):  # 400 x 10 kB: four times the limit, no Content-Length
            sent += 10_000
            yield b"G" * 10_000
        yield b'"}'

    r = c.post("/api/v1/programs", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert error_of(r)["code"] == "payload_too_large"


def test_bodies_under_the_limit_still_work_after_refusals(
    client_for: Callable[[str | None], httpx.Client], keys: dict[Role, str]
) -> None:
    c = client_for(keys[Role.ADMIN])
    too_big_program = c.post("/api/v1/programs", json=_program(2048))  # body fits, program not
    assert too_big_program.status_code == 413
    assert error_of(too_big_program)["field"] == "content"
    ok = c.post("/api/v1/programs", json=_program(600))
    assert ok.status_code == 201, ok.text
    assert c.get("/api/v1/programs").status_code == 200


def test_settings_refuse_a_body_limit_that_cannot_hold_a_program() -> None:
    with pytest.raises(ValueError, match="api_max_body_bytes"):
        ApiSettings(
            database_url="postgresql://u:p@127.0.0.1/db",
            api_max_program_bytes=1_000_000,
            api_max_body_bytes=1_000_000,
        )
