"""The audit trail: one row per state-changing call, written in the caller's transaction."""

from __future__ import annotations

from typing import Any

import asyncpg

from api.deps import MachineRef, Principal

__all__ = ["record"]


async def record(
    conn: asyncpg.Connection,
    principal: Principal,
    action: str,
    machine: MachineRef | None = None,
    detail: dict[str, Any] | None = None,
    *,
    site: str | None = None,
) -> None:
    """Append `action` by `principal` (on `machine` or a whole `site`, with `detail`)."""
    await conn.execute(
        "INSERT INTO api_audit (key_id, key_name, action, site, machine, detail) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        principal.key_id,
        principal.name,
        action,
        site if machine is None else machine.site,
        None if machine is None else machine.machine,
        detail or {},
    )
