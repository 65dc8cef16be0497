"""The authorisation matrix, generated from the app's own routes: every route x every role.

A route that declares no role guard (nor `Public`) fails `test_every_route_declares_who_may_call`,
and every declared guard is then checked against a live server with one key per role.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.app import ROUTERS, create_app
from api.config import ApiSettings
from api.deps import PublicRoute, RoleGuard
from api.keys import Role
from tests.api.conftest import error_of

pytestmark = pytest.mark.services

# Values for path parameters: well-formed, naming nothing that exists.
_PATH_VALUES = {
    "machine": "nosuch",
    "report_id": "999999",
    "fmt": "png",
    "name": "O9999",
    "version": "1",
    "push_id": "999999",
    "downtime_id": "999999",
    "site": "nosite",
    "annotation_id": "999999",
    "tool": "1",
}


def _guards(dependant: Dependant) -> list[Any]:
    found = [d.call for d in dependant.dependencies if isinstance(d.call, RoleGuard | PublicRoute)]
    for d in dependant.dependencies:
        found += _guards(d)
    return found


def _routes() -> list[tuple[str, str, RoleGuard | PublicRoute]]:
    out = []
    for prefix, router in ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute)
            guards = _guards(route.dependant)
            assert len(guards) == 1, f"{route.path} declares {len(guards)} guards, not 1"
            out.extend((m, prefix + route.path, guards[0]) for m in sorted(route.methods))
    return out


def _value(name: str) -> str:
    # Parameters of routes other modules add get a neutral value by their name's shape.
    return _PATH_VALUES.get(name, "999999" if name.endswith("_id") else "nosuch")


def _url(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: _value(m.group(1)), path)


ROUTES = _routes()
GUARDED = [(m, p, g) for m, p, g in ROUTES if isinstance(g, RoleGuard)]


def test_every_route_declares_who_may_call() -> None:
    # Every operation the app serves comes from ROUTERS, where each route has exactly one guard.
    app = create_app(ApiSettings(database_url="postgresql://unused@127.0.0.1/unused"))
    served = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    assert served == {(m, p) for m, p, _ in ROUTES}
    assert len(GUARDED) >= 15
    public = sorted(p for _, p, g in ROUTES if isinstance(g, PublicRoute))
    assert public == ["/healthz", "/metrics"]
    for name in _PATH_VALUES:
        assert any("{" + name + "}" in p for _, p, _ in ROUTES), f"unused path value {name}"


@pytest.mark.parametrize(
    ("method", "path", "guard"), GUARDED, ids=[f"{m} {p}" for m, p, _ in GUARDED]
)
def test_role_matrix(
    method: str,
    path: str,
    guard: RoleGuard,
    keys: dict[Role, str],
    client_for: Callable[[str | None], httpx.Client],
) -> None:
    url = _url(path)
    anonymous = client_for(None).request(method, url)
    assert anonymous.status_code == 401
    assert error_of(anonymous)["code"] == "unauthorized"
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"
    for role in Role:
        response = client_for(keys[role]).request(method, url)
        if role in guard.roles:
            assert response.status_code not in (401, 403), (role, response.text)
            assert response.status_code < 500, (role, response.text)
        else:
            assert response.status_code == 403, (role, response.text)
            assert error_of(response)["code"] == "forbidden"


def test_public_routes_need_no_key(client_for: Callable[[str | None], httpx.Client]) -> None:
    client = client_for(None)
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/openapi.json").status_code == 200


_LETTERS = {"V": Role.VIEWER, "O": Role.OPERATOR, "E": Role.ENGINEER, "M": Role.MAINTENANCE}
_LETTERS["A"] = Role.ADMIN
_ROW = re.compile(r"^\| (GET|POST|PUT|PATCH|DELETE) \| `([^`]+)`[^|]* \| ([^|]+) \|$", re.M)


def test_docs_route_table_matches_the_code() -> None:
    # docs/api.md documents these modules' routes; other packages' routes (alerts) are in their
    # own docs/*.md with the same table.
    docs = sorted((Path(__file__).parents[2] / "docs").glob("*.md"))
    text = "\n".join(d.read_text() for d in docs)
    documented: dict[tuple[str, str], object] = {}
    for m in _ROW.finditer(text):
        roles = m.group(3).strip()
        documented[(m.group(1), m.group(2))] = (
            "public" if roles == "public" else frozenset(_LETTERS[r] for r in roles.split())
        )
    actual = {
        (method, path): "public" if isinstance(g, PublicRoute) else g.roles
        for method, path, g in ROUTES
    }
    assert documented == actual
