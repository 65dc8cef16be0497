"""`GET /api/v1/me`: who the calling key is and what it may do (for the dashboard's sign-in).

Every role may call it. The answer holds nothing a key's holder does not already know or could
not learn by trying: the key's id (the public part of the key), name, role, site scope, when it
was made, and the API routes its role admits, read from the app's own role guards (so the UI
shows exactly what the API will accept, and cannot drift from it).
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from api.deps import AnyRole, Conn, RoleGuard
from api.errors import AUTHENTICATED
from api.keys import Role

__all__ = ["MePublic", "router"]

router = APIRouter(tags=["keys"], responses=AUTHENTICATED)


class MePublic(BaseModel):
    id: str = Field(description="the key's id (the public part of `arbor_<id>_<secret>`)")
    name: str
    role: Role
    sites: list[str] | None = Field(description="the sites the key may see; null = every site")
    created_at: datetime | None
    routes: list[str] = Field(
        description="`METHOD /path` of every API route the role admits (path templates)"
    )


def _guards(dependant: Dependant) -> list[Any]:
    found: list[Any] = [d.call for d in dependant.dependencies if isinstance(d.call, RoleGuard)]
    for d in dependant.dependencies:
        found += _guards(d)
    return found


@functools.cache
def _admitted(role: Role) -> tuple[str, ...]:
    from api.app import ROUTERS  # here: api.app imports this module

    out = set()
    for prefix, router in ROUTERS:
        for route in router.routes:
            if not isinstance(route, APIRoute):
                continue
            guards = _guards(route.dependant)
            if guards and all(role in g.roles for g in guards):
                out |= {f"{m} {prefix}{route.path}" for m in route.methods or ()}
    return tuple(sorted(out))


@router.get("/me", response_model=MePublic)
async def me(principal: AnyRole, conn: Conn) -> MePublic:
    """The calling key: id, name, role, site scope, creation time, and the routes it may call."""
    created = await conn.fetchval("SELECT created_at FROM api_key WHERE id = $1", principal.key_id)
    return MePublic(
        id=principal.key_id,
        name=principal.name,
        role=principal.role,
        sites=None if principal.sites is None else sorted(principal.sites),
        created_at=created,
        routes=list(_admitted(principal.role)),
    )
