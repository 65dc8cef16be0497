"""The audit trail of every state-changing API call."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import Conn, Operations
from api.errors import AUTHENTICATED

__all__ = ["router"]

router = APIRouter(tags=["audit"], responses=AUTHENTICATED)


class AuditEntry(BaseModel):
    id: int
    at: datetime
    key_id: str | None
    key_name: str | None
    action: str
    site: str | None
    machine: str | None
    detail: dict[str, Any]


@router.get("/audit", response_model=list[AuditEntry])
async def list_audit(
    principal: Operations,
    conn: Conn,
    site: Annotated[str | None, Query(max_length=64)] = None,
    machine: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEntry]:
    """Newest first; filtered by site, machine and action. Site-scoped keys see their sites only."""
    rows = await conn.fetch(
        """SELECT id, at, key_id, key_name, action, site, machine, detail FROM api_audit
            WHERE ($1::text IS NULL OR site = $1) AND ($2::text IS NULL OR machine = $2)
              AND ($3::text IS NULL OR action = $3)
              AND ($4::text[] IS NULL OR site = ANY($4))
            ORDER BY at DESC, id DESC LIMIT $5""",
        site,
        machine,
        action,
        None if principal.sites is None else sorted(principal.sites),
        limit,
    )
    return [AuditEntry(**dict(r)) for r in rows]
