"""Dependencies shared by the routes, as `Annotated` aliases.

Every route declares who may call it, as the type of its first parameter:

    async def list_signals(principal: AnyRole) -> ...           # every role
    async def create(principal: Engineering, api: Api) -> ...    # engineer, maintenance, admin
    async def healthz(_: Public) -> ...                          # no key needed

`tests/api/test_authorisation.py` walks the app's routes and fails for a route that declares
neither a role guard nor `Public`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any, cast

import asyncpg
from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    UnauthorizedError,
    UnavailableError,
)
from api.keycache import VerifiedKey
from api.keys import ALL_ROLES, Role, key_id_of, matches
from api.state import ApiState

__all__ = [
    "AnyRole",
    "Api",
    "Conn",
    "Engineering",
    "MachinePath",
    "MachineRef",
    "Operations",
    "Planners",
    "Principal",
    "ProgramAuthors",
    "ProgramPushers",
    "Public",
    "PublicRoute",
    "RoleGuard",
    "ShopFloor",
    "authenticate",
    "connection",
    "require_roles",
    "resolve_machine",
]

_bearer = HTTPBearer(auto_error=False, description="An Arbor API key: `Bearer arbor_<id>_<secret>`")


async def _api(request: Request) -> ApiState:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a hop to a worker thread
    # and back on every request (py-spy under 20 clients: run_in_threadpool from here, and the
    # workers' wake-ups, ~10 % of the API process's samples)
    return cast(ApiState, request.state.api)


Api = Annotated[ApiState, Depends(_api)]


@contextlib.asynccontextmanager
async def connection(api: ApiState) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection; the database being down (or a deadline passing) answers 503."""
    try:
        async with api.pool.acquire(timeout=api.settings.api_db_timeout_s) as conn:
            yield conn
    except (OSError, asyncpg.CannotConnectNowError, TimeoutError) as exc:
        raise UnavailableError(
            f"the database is unreachable: {exc}", code="database_unavailable"
        ) from exc


async def _conn(api: Api) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection for the request."""
    async with connection(api) as conn:
        yield conn


Conn = Annotated[asyncpg.Connection, Depends(_conn)]


@dataclass(frozen=True)
class Principal:
    """Who calls: the key's id, name, role and site scope (None = every site)."""

    key_id: str
    name: str
    role: Role
    sites: frozenset[str] | None

    def may_see(self, site: str) -> bool:
        return self.sites is None or site in self.sites

    @property
    def who(self) -> str:
        """How the audit trail and `created_by` columns name this caller."""
        return f"{self.name} ({self.key_id})"


async def authenticate(api: ApiState, key: str, roles: frozenset[Role]) -> Principal:
    """The caller holding `key`, admitted only in `roles`, after one token of its rate limit.

    Raises `UnauthorizedError` (malformed, unknown or revoked key), `RateLimitedError`,
    `ForbiddenError` (role) or `UnavailableError` (database). The WebSocket stream, which cannot
    use the bearer header, calls this directly.
    """
    key_id = key_id_of(key)
    if key_id is None:
        raise UnauthorizedError("the API key is malformed", code="invalid_key")
    verified = api.key_cache.get(key) if api.key_cache is not None else None
    if verified is None:
        verified = await _verify(api, key, key_id)
    wait = api.limiter.acquire(key_id)
    if wait > 0:
        raise RateLimitedError(
            f"rate limit of {api.limiter.rate_per_s:g}/s exceeded for this key",
            retry_after_s=wait,
        )
    principal = Principal(
        key_id=key_id, name=verified.name, role=Role(verified.role), sites=verified.sites
    )
    if principal.role not in roles:
        admitted = ", ".join(sorted(roles))
        raise ForbiddenError(f"role {principal.role} may not do this; admitted: {admitted}")
    return principal


async def _verify(api: ApiState, key: str, key_id: str) -> VerifiedKey:
    """`key` checked against `api_key` (remembered in `api.key_cache` when valid)."""
    read_at = api.key_cache.now() if api.key_cache is not None else 0.0
    try:
        row = await asyncio.wait_for(
            api.pool.fetchrow(
                "SELECT name, role, sites, key_hash, revoked_at FROM api_key WHERE id = $1",
                key_id,
            ),
            api.settings.api_db_timeout_s,
        )
    except (OSError, asyncpg.CannotConnectNowError, TimeoutError) as exc:
        raise UnavailableError(
            f"the database is unreachable: {exc}", code="database_unavailable"
        ) from exc
    if row is None or not matches(key, row["key_hash"]):
        raise UnauthorizedError("unknown API key", code="invalid_key")
    if row["revoked_at"] is not None:
        raise UnauthorizedError("this API key was revoked", code="revoked_key")
    verified = VerifiedKey(
        key_id=key_id,
        name=row["name"],
        role=row["role"],
        sites=None if row["sites"] is None else frozenset(row["sites"]),
    )
    if api.key_cache is not None:
        api.key_cache.put(key, verified, read_at)
    return verified


class RoleGuard:
    """Authenticate the bearer key, apply its rate limit, and admit only `roles`."""

    def __init__(self, roles: frozenset[Role]) -> None:
        if not roles:
            raise ValueError("a route must admit at least one role")
        self.roles = roles

    async def __call__(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None:
            raise UnauthorizedError("an API key is required: Authorization: Bearer <key>")
        return await authenticate(await _api(request), credentials.credentials, self.roles)


class PublicRoute:
    """Marks a route that needs no key (health probes, metrics scrapes, the OpenAPI document)."""

    async def __call__(self) -> None:
        return None


def require_roles(*roles: Role) -> Any:
    """`Depends` on a guard admitting `roles`; use in `Annotated[Principal, require_roles(...)]`."""
    return Depends(RoleGuard(frozenset(roles)))


# The role sets the routes use; docs/api.md lists them per route.
AnyRole = Annotated[Principal, require_roles(*ALL_ROLES)]
Engineering = Annotated[Principal, require_roles(Role.ENGINEER, Role.MAINTENANCE, Role.ADMIN)]
Operations = Annotated[Principal, require_roles(Role.ENGINEER, Role.MAINTENANCE, Role.ADMIN)]
ShopFloor = Annotated[
    Principal, require_roles(Role.OPERATOR, Role.ENGINEER, Role.MAINTENANCE, Role.ADMIN)
]
Planners = Annotated[Principal, require_roles(Role.ENGINEER, Role.ADMIN)]
ProgramAuthors = Annotated[Principal, require_roles(Role.ENGINEER, Role.ADMIN)]
ProgramPushers = Annotated[Principal, require_roles(Role.OPERATOR, Role.ENGINEER, Role.ADMIN)]
Public = Annotated[None, Depends(PublicRoute())]


@dataclass(frozen=True)
class MachineRef:
    site: str
    machine: str
    #: the registry's id when the lookup read it (resolve_machine), saving a second query
    id: int | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.site}:{self.machine}"


async def resolve_machine(conn: asyncpg.Connection, principal: Principal, ref: str) -> MachineRef:
    """`site:machine`, or a bare machine id when it is unique among the sites the key may see."""
    site, sep, machine = ref.partition(":")
    if sep:
        rows = await conn.fetch(
            "SELECT id, site, machine FROM machine WHERE site = $1 AND machine = $2", site, machine
        )
    else:
        machine = site
        rows = await conn.fetch("SELECT id, site, machine FROM machine WHERE machine = $1", machine)
        visible = [r for r in rows if principal.may_see(r["site"])]
        if len(visible) > 1:
            sites = ", ".join(sorted(r["site"] for r in visible))
            raise ConflictError(
                f"machine {machine!r} exists in several sites ({sites}); use site:machine",
                code="ambiguous_machine",
                field="machine",
            )
        rows = visible or rows
    if not rows:
        raise NotFoundError(f"no machine {ref!r}", code="machine_not_found", field="machine")
    found = MachineRef(rows[0]["site"], rows[0]["machine"], rows[0]["id"])
    if not principal.may_see(found.site):
        raise ForbiddenError(
            f"this key is not scoped to site {found.site!r}", code="site_forbidden"
        )
    return found


_ID = r"[a-z0-9][a-z0-9_-]{0,63}"
MachinePath = Annotated[
    str,
    Path(
        pattern=rf"^{_ID}(:{_ID})?$",
        description="`site:machine`, or the machine id alone when no other site has it",
        examples=["plant1:m01", "m01"],
    ),
]
