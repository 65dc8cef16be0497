"""The alert lifecycle in the database: open, resolve, escalate, with the history and deliveries.

    (fires) --> open --(ack)--> acknowledged --(clears / by hand)--> resolved
                  \\--(not acknowledged in escalate_after_s)--> escalated (still open)
                  \\--(clears / by hand)--> resolved

One active alert per (rule, machine) is a partial unique index (`alert_active_uniq`), so of two
workers racing to open the same alert one inserts and the other's `ON CONFLICT DO NOTHING` does
nothing. Every transition enqueues its deliveries in the same transaction
(`alert_enqueue_deliveries`), claimed by the caller when it will send them itself.
Acknowledge, assign, comment and manual resolve are done by the API (api/routes/alerts.py) with
the same SQL shape.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import asyncpg

from alerts.rules import Observation, Rule

__all__ = [
    "escalate_due",
    "in_planned_downtime",
    "open_alert",
    "resolve_active",
    "resolve_stale_repeats",
]

log = logging.getLogger(__name__)


async def in_planned_downtime(
    conn: asyncpg.Connection, site: str, machine: str, at: datetime
) -> int | None:
    """The id of a planned-downtime window covering `site:machine` at `at`, if any."""
    value = await conn.fetchval(
        """SELECT id FROM planned_downtime
            WHERE site = $1 AND (machine IS NULL OR machine = $2)
              AND start_ts <= $3 AND end_ts > $3
            ORDER BY id LIMIT 1""",
        site,
        machine,
        at,
    )
    return None if value is None else int(value)


async def _enqueue(
    conn: asyncpg.Connection, alert_id: int, transition: str, worker: str, lease_s: float
) -> list[int]:
    rows = await conn.fetch(
        "SELECT alert_enqueue_deliveries($1, $2, $3, $4) AS id",
        alert_id,
        transition,
        worker,
        lease_s,
    )
    return [int(r["id"]) for r in rows]


async def open_alert(
    conn: asyncpg.Connection,
    rule: Rule,
    site: str,
    machine: str,
    ob: Observation,
    worker: str,
    lease_s: float,
) -> tuple[int | None, list[int]]:
    """Open the rule's alert for the machine unless one is active or a window suppresses it.

    Must run in a transaction. Returns the new alert's id (None when not opened) and the ids of
    the deliveries claimed for `worker`.
    """
    window = await in_planned_downtime(conn, site, machine, ob.ts)
    if window is not None:
        await conn.execute(
            """INSERT INTO alert_history (alert_id, rule_id, site, machine, action, actor, detail)
               VALUES (NULL, $1, $2, $3, 'suppressed', $4, $5)""",
            rule.id,
            site,
            machine,
            f"alerts:{worker}",
            {"planned_downtime": window, "trigger_ts": ob.ts.isoformat(), "value": ob.value},
        )
        log.info("rule %d on %s:%s suppressed by planned downtime %d", rule.id, site, machine,
                 window)  # fmt: skip
        return None, []
    detail: dict[str, Any] = {"rule": rule.name, "kind": rule.kind.value, **ob.detail}
    alert_id = await conn.fetchval(
        """INSERT INTO alert (rule_id, site, machine, severity, title, detail, trigger_ts, value)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (rule_id, site, machine) WHERE state <> 'resolved' DO NOTHING
           RETURNING id""",
        rule.id,
        site,
        machine,
        rule.severity,
        rule.title(site, machine),
        detail,
        ob.ts,
        ob.value,
    )
    if alert_id is None:
        return None, []
    await conn.execute(
        """INSERT INTO alert_history (alert_id, rule_id, site, machine, action, actor, detail)
           VALUES ($1, $2, $3, $4, 'opened', $5, $6)""",
        alert_id,
        rule.id,
        site,
        machine,
        f"alerts:{worker}",
        {"trigger_ts": ob.ts.isoformat(), "value": ob.value},
    )
    log.info("alert %d opened: %s", alert_id, rule.title(site, machine))
    return int(alert_id), await _enqueue(conn, int(alert_id), "opened", worker, lease_s)


async def resolve_active(
    conn: asyncpg.Connection,
    rule_id: int,
    site: str,
    machine: str,
    *,
    actor: str,
    resolution: str,
    detail: dict[str, Any],
    worker: str,
    lease_s: float,
) -> list[int]:
    """Resolve the active alert of (rule, machine), if any; returns the claimed deliveries."""
    alert_id = await conn.fetchval(
        """UPDATE alert SET state = 'resolved', resolved_at = now(), resolved_by = $4,
                  resolution = $5
            WHERE rule_id = $1 AND site = $2 AND machine = $3 AND state <> 'resolved'
            RETURNING id""",
        rule_id,
        site,
        machine,
        actor,
        resolution,
    )
    if alert_id is None:
        return []
    await conn.execute(
        """INSERT INTO alert_history (alert_id, rule_id, site, machine, action, actor, detail)
           VALUES ($1, $2, $3, $4, 'resolved', $5, $6)""",
        alert_id,
        rule_id,
        site,
        machine,
        actor,
        {"resolution": resolution, **detail},
    )
    log.info("alert %d resolved (%s)", alert_id, resolution)
    return await _enqueue(conn, int(alert_id), "resolved", worker, lease_s)


async def escalate_due(conn: asyncpg.Connection, worker: str, lease_s: float) -> list[int]:
    """Escalate open alerts not acknowledged within their rule's `escalate_after_s`.

    One statement marks them (so of two workers only one escalates each alert); alerts of a
    machine in planned downtime wait. Returns the deliveries claimed for `worker`.
    """
    deliveries: list[int] = []
    async with conn.transaction():
        rows = await conn.fetch(
            """UPDATE alert a SET escalation_level = 1, escalated_at = now()
                FROM alert_rule r
               WHERE r.id = a.rule_id AND a.state = 'open' AND a.escalation_level = 0
                 AND r.escalate_after_s IS NOT NULL
                 AND a.opened_at + make_interval(secs => r.escalate_after_s) <= now()
                 AND NOT EXISTS (SELECT 1 FROM planned_downtime d
                                  WHERE d.site = a.site
                                    AND (d.machine IS NULL OR d.machine = a.machine)
                                    AND d.start_ts <= now() AND d.end_ts > now())
               RETURNING a.id, a.rule_id, a.site, a.machine, r.escalate_after_s"""
        )
        for r in rows:
            await conn.execute(
                """INSERT INTO alert_history (alert_id, rule_id, site, machine, action, actor,
                                              detail)
                   VALUES ($1, $2, $3, $4, 'escalated', $5, $6)""",
                r["id"],
                r["rule_id"],
                r["site"],
                r["machine"],
                f"alerts:{worker}",
                {"level": 1, "after_s": r["escalate_after_s"]},
            )
            log.info("alert %d escalated", r["id"])
            deliveries += await _enqueue(conn, int(r["id"]), "escalated", worker, lease_s)
    return deliveries


async def resolve_stale_repeats(conn: asyncpg.Connection, worker: str, lease_s: float) -> list[int]:
    """Resolve repeat-count alerts whose rule saw no occurrence for a whole repeat window."""
    deliveries: list[int] = []
    async with conn.transaction():
        rows = await conn.fetch(
            """SELECT a.rule_id, a.site, a.machine FROM alert a
                 JOIN alert_rule r ON r.id = a.rule_id
                 JOIN alert_rule_state s
                   ON s.rule_id = a.rule_id AND s.site = a.site AND s.machine = a.machine
                WHERE a.state <> 'resolved' AND r.repeat_count > 1 AND r.auto_resolve
                  AND NOT s.satisfied
                  AND coalesce(s.occurrences[array_upper(s.occurrences, 1)], a.trigger_ts)
                      < now() - make_interval(secs => r.repeat_window_s)
                FOR UPDATE OF a SKIP LOCKED"""
        )
        for r in rows:
            deliveries += await resolve_active(
                conn,
                r["rule_id"],
                r["site"],
                r["machine"],
                actor=f"alerts:{worker}",
                resolution="auto",
                detail={"reason": "no occurrence within the repeat window"},
                worker=worker,
                lease_s=lease_s,
            )
    return deliveries
