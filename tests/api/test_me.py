"""`GET /api/v1/me`: the calling key's name, role, site scope and the routes its role admits."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from api.keys import Role
from tests.api.conftest import error_of, make_key

pytestmark = pytest.mark.services


def test_every_role_learns_who_it_is(
    keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client]
) -> None:
    for role in Role:
        me = client_for(keys[role]).get("/api/v1/me")
        assert me.status_code == 200, me.text
        body = me.json()
        assert set(body) == {"id", "name", "role", "sites", "created_at", "routes"}
        assert (body["role"], body["name"], body["sites"]) == (role, f"test {role}", None)
        assert keys[role].startswith(f"arbor_{body['id']}_")
        assert body["created_at"]
        assert "GET /api/v1/me" in body["routes"] and "GET /api/v1/machines" in body["routes"]


def test_routes_are_what_the_api_then_accepts(
    keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client]
) -> None:
    routes = {role: set(client_for(keys[role]).get("/api/v1/me").json()["routes"]) for role in Role}
    ack, push = "POST /api/v1/alerts/{alert_id}/ack", "POST /api/v1/programs"
    assert ack not in routes[Role.VIEWER] and ack in routes[Role.OPERATOR]
    assert push in routes[Role.ENGINEER] and push not in routes[Role.MAINTENANCE]
    assert "GET /api/v1/audit" in routes[Role.MAINTENANCE] - routes[Role.OPERATOR]
    assert routes[Role.VIEWER] < routes[Role.ADMIN]
    # What /me says a viewer may not do, the API refuses with 403; what it may, it does not.
    viewer = client_for(keys[Role.VIEWER])
    assert viewer.post("/api/v1/programs", json={}).status_code == 403
    assert viewer.get("/api/v1/audit").status_code == 403
    assert client_for(keys[Role.MAINTENANCE]).get("/api/v1/audit").status_code == 200


def test_site_scope_and_refusals(
    api_database: str, client_for: Callable[[str | None], httpx.Client]
) -> None:
    scoped = make_key(api_database, Role.VIEWER, "line 2 tablet", sites=["plant2", "plant1"])
    body = client_for(scoped).get("/api/v1/me").json()
    assert (body["name"], body["sites"]) == ("line 2 tablet", ["plant1", "plant2"])
    anonymous = client_for(None).get("/api/v1/me")
    assert anonymous.status_code == 401 and error_of(anonymous)["code"] == "unauthorized"
    bad = client_for("arbor_nosuchkey000_" + "x" * 43).get("/api/v1/me")
    assert bad.status_code == 401 and error_of(bad)["code"] == "invalid_key"
