"""Operations and the catalogue: /healthz, /metrics, database health, /api/v1/signals, OpenAPI."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import psycopg
import pytest

from api.keys import Role
from protocol import catalogue_as_dict
from tests.api.conftest import error_of

pytestmark = pytest.mark.services


def test_healthz_reports_database_and_broker(
    client_for: Callable[[str | None], httpx.Client],
) -> None:
    client = client_for(None)
    # The broker link is made in the background (the API starts without the broker): on a
    # loaded machine the CONNACK can take longer than the lifespan's 3 s wait. Poll for it.
    deadline = time.monotonic() + 60
    response = client.get("/healthz")
    while response.status_code == 503 and time.monotonic() < deadline:
        assert response.json()["database"]["ok"] is True, response.text
        time.sleep(0.2)
        response = client.get("/healthz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True
    assert body["database"] == {"ok": True, "detail": "reachable"}
    assert body["broker"]["ok"] is True and body["broker"]["detail"].startswith("connected")


def test_metrics_count_requests_by_route_template(
    keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client]
) -> None:
    viewer = client_for(keys[Role.VIEWER])
    viewer.get("/api/v1/machines/nosuch/accuracy")
    response = client_for(None).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        'arbor_api_requests_total{method="GET",route="/api/v1/machines/{machine}/accuracy",'
        'status="404"}' in text
    )
    assert "nosuch" not in text  # raw paths never become labels
    assert "arbor_api_request_seconds_bucket" in text


def test_database_health(
    keys: dict[Role, str],
    client_for: Callable[[str | None], httpx.Client],
    api_database: str,
) -> None:
    response = client_for(keys[Role.MAINTENANCE]).get("/api/v1/health/database")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["database_bytes"] > 1_000_000
    assert body["timescaledb"]["license"] in ("apache", "timescale")
    assert body["schema_version"] >= 100
    tables = {h["name"]: h for h in body["hypertables"]}
    assert "dead_letter" in tables and tables["dead_letter"]["chunks"] >= 0
    assert all(h["total_bytes"] is None or h["total_bytes"] >= 0 for h in tables.values())
    assert isinstance(body["jobs"], list)
    assert body["ingest_lag_s"] is None  # nothing ingested in this database
    keep = {r["hypertable"]: r["keep"] for r in body["retention"]}
    assert keep["sample"] == "90 days" and keep["sample_5m"] == "1 year"
    if body["timescaledb"]["license"] == "apache":
        # No ingest job has run on this database: no rollup is anywhere yet, nothing to redo.
        assert body["rollups"] == [] and body["rollup_late_notes"] == 0
        # What the job leaves: a watermark 3 minutes back, a late sample still to redo.
        with psycopg.connect(api_database, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO rollup_watermark VALUES ('sample_1m', now() - interval '3 minutes')"
            )
            conn.execute("INSERT INTO rollup_dirty (machine_id, lo, hi) VALUES (1, now(), now())")
        try:
            body = client_for(keys[Role.MAINTENANCE]).get("/api/v1/health/database").json()
        finally:
            with psycopg.connect(api_database, autocommit=True) as conn:
                conn.execute("DELETE FROM rollup_watermark")
                conn.execute("DELETE FROM rollup_dirty")
        [rollup] = body["rollups"]
        assert rollup["name"] == "sample_1m" and 179 < rollup["behind_s"] < 240
        assert body["rollup_late_notes"] == 1
    forbidden = client_for(keys[Role.VIEWER]).get("/api/v1/health/database")
    assert forbidden.status_code == 403


def test_signal_catalogue_is_the_protocol_one(
    keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client]
) -> None:
    response = client_for(keys[Role.VIEWER]).get("/api/v1/signals")
    assert response.status_code == 200
    assert response.json() == catalogue_as_dict()


def test_openapi_documents_bearer_auth_and_the_error_shape(
    client_for: Callable[[str | None], httpx.Client],
) -> None:
    schema = client_for(None).get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    signals = schema["paths"]["/api/v1/signals"]["get"]
    assert signals["security"] == [{"HTTPBearer": []}]
    assert {"401", "403", "429"} <= set(signals["responses"])
    assert "security" not in schema["paths"]["/healthz"]["get"]
    assert client_for(None).get("/docs").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/api/v1/nothing-here", 404, "not_found"),
        ("DELETE", "/api/v1/signals", 405, "method_not_allowed"),
    ],
)
def test_framework_errors_have_the_one_shape(
    keys: dict[Role, str],
    client_for: Callable[[str | None], httpx.Client],
    method: str,
    path: str,
    status: int,
    code: str,
) -> None:
    response = client_for(keys[Role.ADMIN]).request(method, path)
    assert response.status_code == status
    assert error_of(response)["code"] == code


def test_malformed_json_is_a_validation_error(
    keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client]
) -> None:
    response = client_for(keys[Role.ENGINEER]).post(
        "/api/v1/programs", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert error_of(response)["code"] == "validation_error"


def test_text_the_database_cannot_store_is_invalid_input(
    keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client]
) -> None:
    engineer = client_for(keys[Role.ENGINEER])
    nul = engineer.post(
        "/api/v1/programs", json={"name": "O77", "content": "x", "comment": "a\u0000b"}
    )
    assert nul.status_code == 422 and error_of(nul)["code"] == "invalid_input"
    assert engineer.get("/api/v1/programs/O77").status_code == 404  # nothing half-stored
