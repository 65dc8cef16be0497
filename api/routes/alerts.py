"""Alerts: rules CRUD, alerts with their lifecycle (ack, assign, comment, resolve), subscriptions,
machine groups and the delivery log. The alerts service (`arbor alerts`) evaluates the rules and
sends the notifications; this module only reads and writes the tables of migration 0200
(docs/alerts.md). A transition made here enqueues its deliveries with the database function
`alert_enqueue_deliveries`, and an alerts worker sends them within its poll interval.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from api import audit
from api.deps import AnyRole, Conn, Engineering, Principal, require_roles
from api.errors import AUTHENTICATED, ConflictError, NotFoundError, error_responses
from api.keys import Role

__all__ = ["router"]

router = APIRouter(tags=["alerts"], responses=AUTHENTICATED)

#: Who handles alerts on the floor: acknowledge and comment.
Responders = Annotated[
    Principal, require_roles(Role.OPERATOR, Role.ENGINEER, Role.MAINTENANCE, Role.ADMIN)
]

_ID = r"^[a-z0-9][a-z0-9_-]{0,63}$"
Id = Annotated[str, Field(pattern=_ID)]
Severity = Literal["info", "warning", "critical"]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
AlertId = Annotated[int, Path(ge=1, le=2**63 - 1)]
RuleId = Annotated[int, Path(ge=1, le=2**63 - 1)]
SubscriptionId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Text = Annotated[str, Field(min_length=1, max_length=2000)]


# --- rule params, one model per kind (the alerts worker checks them again when it loads) -------


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ThresholdParams(_Params):
    signal: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", examples=["spindle_load"])]
    op: Literal[">", ">=", "<", "<=", "==", "!="]
    value: Annotated[float, Field(allow_inf_nan=False)]
    for_s: Seconds = 0.0


class ConditionParams(_Params):
    code: Annotated[str, Field(max_length=64)] = "*"
    component: Annotated[str, Field(max_length=64)] = "*"
    levels: list[Literal["WARNING", "FAULT"]] = Field(default=["FAULT"], min_length=1)
    for_s: Seconds = 0.0


class SilenceParams(_Params):
    silent_s: PositiveSeconds


class ToolLifeParams(_Params):
    limit_s: PositiveSeconds
    warning_s: PositiveSeconds | None = None


class AccuracyParams(_Params):
    kind: Literal["iso230-2", "circle", "s-piece"] | None = None


class UtilisationParams(_Params):
    target: Annotated[float, Field(gt=0, le=1)]
    window_s: PositiveSeconds = 8 * 3600.0


RuleKind = Literal["threshold", "condition", "silence", "tool_life", "accuracy", "utilisation"]
_PARAMS: dict[str, type[_Params]] = {
    "threshold": ThresholdParams,
    "condition": ConditionParams,
    "silence": SilenceParams,
    "tool_life": ToolLifeParams,
    "accuracy": AccuracyParams,
    "utilisation": UtilisationParams,
}


class RuleCreate(BaseModel):
    """A rule; `params` depend on `kind` (docs/alerts.md lists them)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200, examples=["spindle overload"])]
    kind: RuleKind
    params: dict[str, Any] = Field(
        default_factory=dict,
        examples=[{"signal": "spindle_load", "op": ">", "value": 120, "for_s": 2}],
    )
    severity: Severity = "warning"
    site: Id | None = Field(default=None, description="Only this site (None: every site)")
    machines: list[Id] | None = Field(default=None, description="Only these machine ids")
    machine_group: Id | None = Field(default=None, description="Only machines of this group")
    repeat_count: Annotated[int, Field(ge=1, le=1000)] = 1
    repeat_window_s: PositiveSeconds | None = None
    escalate_after_s: PositiveSeconds | None = None
    auto_resolve: bool = True
    enabled: bool = True

    @model_validator(mode="after")
    def _check(self) -> RuleCreate:
        try:
            self.params = _PARAMS[self.kind].model_validate(self.params).model_dump()
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"params.{where}: {first['msg']}") from None
        if self.repeat_count > 1 and self.repeat_window_s is None:
            raise ValueError("repeat_count > 1 needs repeat_window_s")
        return self


class RulePublic(RuleCreate):
    id: int
    created_at: datetime
    created_by: str
    updated_at: datetime


class AlertPublic(BaseModel):
    id: int
    rule_id: int
    rule_name: str
    site: str
    machine: str
    severity: str
    state: Literal["open", "acknowledged", "resolved"]
    title: str
    detail: dict[str, Any]
    trigger_ts: datetime = Field(description="Source time of the sample that fired the alert")
    value: float | None
    opened_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    ack_comment: str | None
    assigned_to: str | None
    escalation_level: int
    escalated_at: datetime | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None


class HistoryEntry(BaseModel):
    at: datetime
    action: str
    actor: str
    detail: dict[str, Any]


class AlertDetail(AlertPublic):
    history: list[HistoryEntry]


class AckBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: Annotated[str, Field(max_length=2000)] | None = None


class AssignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assignee: Annotated[str, Field(min_length=1, max_length=200, examples=["li.wei"])]


class CommentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: Text


class SubscriptionCreate(BaseModel):
    """Who is told what: a webhook URL or an e-mail address, filtered by severity and site."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)]
    person: Annotated[str, Field(max_length=200)] | None = None
    team: Annotated[str, Field(max_length=200)] | None = None
    channel: Literal["webhook", "email"]
    target: Annotated[str, Field(min_length=3, max_length=2000)] = Field(
        description="http(s) URL for webhook, address for email"
    )
    secret: Annotated[str, Field(min_length=16, max_length=200)] | None = Field(
        default=None, description="Webhook HMAC-SHA256 key (write-only; never returned)"
    )
    min_severity: Severity = "info"
    sites: list[Id] | None = None
    events: list[Literal["opened", "acknowledged", "escalated", "resolved"]] = Field(
        default=["opened", "acknowledged", "escalated", "resolved"], min_length=1
    )
    enabled: bool = True

    @model_validator(mode="after")
    def _check(self) -> SubscriptionCreate:
        if self.channel == "webhook":
            if not self.target.startswith(("http://", "https://")):
                raise ValueError("target: a webhook target must be an http(s) URL")
            if self.secret is None:
                raise ValueError("secret: a webhook needs a secret to sign with")
        elif "@" not in self.target or self.secret is not None:
            raise ValueError("target: an e-mail subscription needs an address and no secret")
        return self


class SubscriptionPublic(BaseModel):
    id: int
    name: str
    person: str | None
    team: str | None
    channel: str
    target: str
    has_secret: bool
    min_severity: str
    sites: list[str] | None
    events: list[str]
    enabled: bool
    created_at: datetime
    created_by: str


class DeliveryAttempt(BaseModel):
    at: datetime
    worker: str
    ok: bool
    response_status: int | None
    error: str | None
    duration_ms: float


class DeliveryPublic(BaseModel):
    id: int
    alert_id: int
    transition: str
    subscriber: str
    subscription_id: int | None
    channel: str
    status: str
    attempts: int
    created_at: datetime
    delivered_at: datetime | None
    next_attempt_at: datetime
    last_error: str | None
    response_status: int | None
    latency_s: float | None = Field(description="Delivery time minus the trigger's source time")
    log: list[DeliveryAttempt] = Field(default_factory=list)


_MEMBER = r"^[a-z0-9][a-z0-9_-]{0,63}:[a-z0-9][a-z0-9_-]{0,63}$"


class MachineGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    machines: list[
        Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}:[a-z0-9][a-z0-9_-]{0,63}$")]
    ] = Field(description="`site:machine` members", max_length=10_000)


# --- helpers -----------------------------------------------------------------------------------

_ALERT_SELECT = (
    """SELECT a.*, r.name AS rule_name FROM alert a JOIN alert_rule r ON r.id = a.rule_id"""
)


def _sites(principal: Principal) -> list[str] | None:
    return None if principal.sites is None else sorted(principal.sites)


async def _alert(conn: asyncpg.Connection, principal: Principal, alert_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(f"{_ALERT_SELECT} WHERE a.id = $1", alert_id)
    if row is None or not principal.may_see(row["site"]):
        raise NotFoundError(f"no alert {alert_id}", code="alert_not_found")
    return row


async def _history(conn: asyncpg.Connection, alert_id: int) -> list[HistoryEntry]:
    rows = await conn.fetch(
        "SELECT at, action, actor, detail FROM alert_history WHERE alert_id = $1 ORDER BY at, id",
        alert_id,
    )
    return [HistoryEntry(**dict(r)) for r in rows]


def _public(row: asyncpg.Record) -> AlertPublic:
    return AlertPublic(**{k: row[k] for k in AlertPublic.model_fields})


async def _transition(
    conn: asyncpg.Connection,
    principal: Principal,
    row: asyncpg.Record,
    action: str,
    detail: dict[str, Any],
    deliver: str | None,
) -> AlertDetail:
    """History, audit and deliveries of a transition made in the caller's transaction."""
    await conn.execute(
        """INSERT INTO alert_history (alert_id, rule_id, site, machine, action, actor, detail)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        row["id"],
        row["rule_id"],
        row["site"],
        row["machine"],
        action,
        principal.who,
        detail,
    )
    if deliver is not None:
        await conn.execute("SELECT alert_enqueue_deliveries($1, $2)", row["id"], deliver)
    await audit.record(conn, principal, f"alert.{action}", None, {"alert_id": row["id"], **detail})
    fresh = await conn.fetchrow(f"{_ALERT_SELECT} WHERE a.id = $1", row["id"])
    assert fresh is not None
    return AlertDetail(**_public(fresh).model_dump(), history=await _history(conn, row["id"]))


# --- alerts ------------------------------------------------------------------------------------


@router.get("/alerts", response_model=list[AlertPublic])
async def list_alerts(
    principal: AnyRole,
    conn: Conn,
    state: Annotated[Literal["open", "acknowledged", "resolved", "active"] | None, Query()] = None,
    site: Annotated[str | None, Query(max_length=64)] = None,
    machine: Annotated[str | None, Query(max_length=64)] = None,
    severity: Annotated[Severity | None, Query()] = None,
    rule_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    assigned_to: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[datetime | None, Query(description="opened at or after")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AlertPublic]:
    """Newest first. `state=active` is open or acknowledged. Site-scoped keys see their sites."""
    rows = await conn.fetch(
        f"""{_ALERT_SELECT}
            WHERE ($1::text IS NULL OR a.state = $1
                   OR ($1 = 'active' AND a.state IN ('open', 'acknowledged')))
              AND ($2::text IS NULL OR a.site = $2) AND ($3::text IS NULL OR a.machine = $3)
              AND ($4::text IS NULL OR a.severity = $4) AND ($5::bigint IS NULL OR a.rule_id = $5)
              AND ($6::text IS NULL OR a.assigned_to = $6)
              AND ($7::timestamptz IS NULL OR a.opened_at >= $7)
              AND ($8::text[] IS NULL OR a.site = ANY($8))
            ORDER BY a.opened_at DESC, a.id DESC LIMIT $9""",
        state,
        site,
        machine,
        severity,
        rule_id,
        assigned_to,
        since,
        _sites(principal),
        limit,
    )
    return [_public(r) for r in rows]


@router.get("/alerts/{alert_id}", response_model=AlertDetail, responses=error_responses(404))
async def get_alert(principal: AnyRole, conn: Conn, alert_id: AlertId) -> AlertDetail:
    """One alert with its full history."""
    row = await _alert(conn, principal, alert_id)
    return AlertDetail(**_public(row).model_dump(), history=await _history(conn, alert_id))


@router.post(
    "/alerts/{alert_id}/ack", response_model=AlertDetail, responses=error_responses(404, 409)
)
async def acknowledge(
    principal: Responders, conn: Conn, alert_id: AlertId, body: AckBody
) -> AlertDetail:
    """open -> acknowledged (who, when, comment); stops escalation. 409 unless open."""
    async with conn.transaction():
        row = await _alert(conn, principal, alert_id)
        updated = await conn.fetchrow(
            """UPDATE alert SET state = 'acknowledged', acknowledged_at = now(),
                      acknowledged_by = $2, ack_comment = $3
                WHERE id = $1 AND state = 'open' RETURNING id""",
            alert_id,
            principal.who,
            body.comment,
        )
        if updated is None:
            raise ConflictError(f"alert {alert_id} is {row['state']}", code="alert_not_open")
        return await _transition(
            conn, principal, row, "acknowledged", {"comment": body.comment}, "acknowledged"
        )


@router.post(
    "/alerts/{alert_id}/assign", response_model=AlertDetail, responses=error_responses(404, 409)
)
async def assign(
    principal: Engineering, conn: Conn, alert_id: AlertId, body: AssignBody
) -> AlertDetail:
    """Assign an active alert to a person. 409 when it is resolved."""
    async with conn.transaction():
        row = await _alert(conn, principal, alert_id)
        updated = await conn.fetchrow(
            "UPDATE alert SET assigned_to = $2 WHERE id = $1 AND state <> 'resolved' RETURNING id",
            alert_id,
            body.assignee,
        )
        if updated is None:
            raise ConflictError(f"alert {alert_id} is resolved", code="alert_resolved")
        return await _transition(
            conn, principal, row, "assigned", {"assignee": body.assignee}, None
        )


@router.post(
    "/alerts/{alert_id}/comment", response_model=AlertDetail, responses=error_responses(404)
)
async def comment(
    principal: Responders, conn: Conn, alert_id: AlertId, body: CommentBody
) -> AlertDetail:
    """Add a comment to the alert's history (any state)."""
    async with conn.transaction():
        row = await _alert(conn, principal, alert_id)
        return await _transition(conn, principal, row, "commented", {"comment": body.comment}, None)


@router.post(
    "/alerts/{alert_id}/resolve", response_model=AlertDetail, responses=error_responses(404, 409)
)
async def resolve(
    principal: Engineering, conn: Conn, alert_id: AlertId, body: AckBody
) -> AlertDetail:
    """Resolve by hand. 409 when already resolved."""
    async with conn.transaction():
        row = await _alert(conn, principal, alert_id)
        updated = await conn.fetchrow(
            """UPDATE alert SET state = 'resolved', resolved_at = now(), resolved_by = $2,
                      resolution = 'manual'
                WHERE id = $1 AND state <> 'resolved' RETURNING id""",
            alert_id,
            principal.who,
        )
        if updated is None:
            raise ConflictError(f"alert {alert_id} is resolved already", code="alert_resolved")
        return await _transition(
            conn, principal, row, "resolved", {"resolution": "manual", "comment": body.comment},
            "resolved",
        )  # fmt: skip


# --- deliveries --------------------------------------------------------------------------------

_DELIVERY_SELECT = """
SELECT d.id, d.alert_id, d.transition, d.subscriber, d.subscription_id, d.channel, d.status,
       d.attempts, d.created_at, d.delivered_at, d.next_attempt_at, d.last_error,
       d.response_status, extract(epoch FROM d.delivered_at - a.trigger_ts) AS latency_s
FROM alert_delivery d JOIN alert a ON a.id = d.alert_id"""


async def _attempts(conn: asyncpg.Connection, ids: list[int]) -> dict[int, list[DeliveryAttempt]]:
    rows = await conn.fetch(
        """SELECT delivery_id, at, worker, ok, response_status, error, duration_ms
             FROM alert_delivery_attempt WHERE delivery_id = ANY($1::bigint[]) ORDER BY at, id""",
        ids,
    )
    out: dict[int, list[DeliveryAttempt]] = {}
    for r in rows:
        out.setdefault(r["delivery_id"], []).append(
            DeliveryAttempt(**{k: r[k] for k in DeliveryAttempt.model_fields})
        )
    return out


@router.get("/alert-deliveries", response_model=list[DeliveryPublic])
async def list_deliveries(
    principal: Engineering,
    conn: Conn,
    alert_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    status: Annotated[Literal["pending", "sending", "delivered", "failed"] | None, Query()] = None,
    channel: Annotated[Literal["webhook", "email", "mqtt"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeliveryPublic]:
    """The delivery log, newest first, with every attempt."""
    rows = await conn.fetch(
        f"""{_DELIVERY_SELECT}
            WHERE ($1::bigint IS NULL OR d.alert_id = $1) AND ($2::text IS NULL OR d.status = $2)
              AND ($3::text IS NULL OR d.channel = $3) AND ($4::text[] IS NULL OR a.site = ANY($4))
            ORDER BY d.id DESC LIMIT $5""",
        alert_id,
        status,
        channel,
        _sites(principal),
        limit,
    )
    attempts = await _attempts(conn, [r["id"] for r in rows])
    return [DeliveryPublic(**dict(r), log=attempts.get(r["id"], [])) for r in rows]


# --- rules -------------------------------------------------------------------------------------

_RULE_COLUMNS = list(RuleCreate.model_fields)
# Column names come from our own model, never from a request.
_RULE_INSERT = f"""INSERT INTO alert_rule ({", ".join(_RULE_COLUMNS)}, created_by)
    VALUES ({", ".join(f"${i + 1}" for i in range(len(_RULE_COLUMNS) + 1))}) RETURNING *"""  # noqa: S608
_RULE_UPDATE = (
    "UPDATE alert_rule SET "  # noqa: S608
    + ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(_RULE_COLUMNS))
    + ", updated_at = now() WHERE id = $1 RETURNING *"
)


def _rule(row: asyncpg.Record) -> RulePublic:
    return RulePublic.model_construct(**dict(row))


@router.get("/alert-rules", response_model=list[RulePublic])
async def list_rules(principal: AnyRole, conn: Conn) -> list[RulePublic]:
    """Every rule (site-scoped keys: the rules of their sites and the unscoped ones)."""
    rows = await conn.fetch(
        "SELECT * FROM alert_rule WHERE $1::text[] IS NULL OR site IS NULL OR site = ANY($1) "
        "ORDER BY id",
        _sites(principal),
    )
    return [_rule(r) for r in rows]


@router.post(
    "/alert-rules", response_model=RulePublic, status_code=201, responses=error_responses(404)
)
async def create_rule(principal: Engineering, conn: Conn, body: RuleCreate) -> RulePublic:
    """Create a rule; workers pick it up within their refresh interval (2 s by default)."""
    if body.site is not None and not principal.may_see(body.site):
        raise NotFoundError(f"no site {body.site!r}", code="site_not_found", field="site")
    values = body.model_dump()
    async with conn.transaction():
        row = await conn.fetchrow(
            _RULE_INSERT,
            *(values[c] for c in _RULE_COLUMNS),
            principal.who,
        )
        assert row is not None
        await audit.record(conn, principal, "alert_rule.create", None, {"rule_id": row["id"]})
    return _rule(row)


async def _rule_row(conn: asyncpg.Connection, principal: Principal, rule_id: int) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM alert_rule WHERE id = $1", rule_id)
    if row is None or (row["site"] is not None and not principal.may_see(row["site"])):
        raise NotFoundError(f"no alert rule {rule_id}", code="rule_not_found")
    return row


@router.get("/alert-rules/{rule_id}", response_model=RulePublic, responses=error_responses(404))
async def get_rule(principal: AnyRole, conn: Conn, rule_id: RuleId) -> RulePublic:
    return _rule(await _rule_row(conn, principal, rule_id))


@router.put("/alert-rules/{rule_id}", response_model=RulePublic, responses=error_responses(404))
async def replace_rule(
    principal: Engineering, conn: Conn, rule_id: RuleId, body: RuleCreate
) -> RulePublic:
    """Replace a rule. Its active alerts stay; its evaluation state starts afresh."""
    values = body.model_dump()
    async with conn.transaction():
        await _rule_row(conn, principal, rule_id)
        row = await conn.fetchrow(
            _RULE_UPDATE,
            rule_id,
            *(values[c] for c in _RULE_COLUMNS),
        )
        assert row is not None
        await conn.execute("DELETE FROM alert_rule_state WHERE rule_id = $1", rule_id)
        await audit.record(conn, principal, "alert_rule.replace", None, {"rule_id": rule_id})
    return _rule(row)


@router.delete("/alert-rules/{rule_id}", status_code=204, responses=error_responses(404))
async def delete_rule(principal: Engineering, conn: Conn, rule_id: RuleId) -> Response:
    """Delete a rule with its alerts and their history (disable it to keep them)."""
    async with conn.transaction():
        await _rule_row(conn, principal, rule_id)
        await conn.execute("DELETE FROM alert_rule WHERE id = $1", rule_id)
        await audit.record(conn, principal, "alert_rule.delete", None, {"rule_id": rule_id})
    return Response(status_code=204)


# --- subscriptions -----------------------------------------------------------------------------

_SUB_SELECT = """SELECT id, name, person, team, channel, target, secret IS NOT NULL AS has_secret,
    min_severity, sites, events, enabled, created_at, created_by FROM alert_subscription"""


@router.get("/alert-subscriptions", response_model=list[SubscriptionPublic])
async def list_subscriptions(principal: Engineering, conn: Conn) -> list[SubscriptionPublic]:
    """Every subscription; secrets are never returned."""
    rows = await conn.fetch(f"{_SUB_SELECT} ORDER BY id")
    return [SubscriptionPublic(**dict(r)) for r in rows]


@router.post("/alert-subscriptions", response_model=SubscriptionPublic, status_code=201)
async def create_subscription(
    principal: Engineering, conn: Conn, body: SubscriptionCreate
) -> SubscriptionPublic:
    async with conn.transaction():
        new_id = await conn.fetchval(
            """INSERT INTO alert_subscription (name, person, team, channel, target, secret,
                   min_severity, sites, events, enabled, created_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id""",
            body.name,
            body.person,
            body.team,
            body.channel,
            body.target,
            body.secret,
            body.min_severity,
            body.sites,
            body.events,
            body.enabled,
            principal.who,
        )
        await audit.record(
            conn, principal, "alert_subscription.create", None, {"subscription_id": new_id}
        )
        row = await conn.fetchrow(f"{_SUB_SELECT} WHERE id = $1", new_id)
    assert row is not None
    return SubscriptionPublic(**dict(row))


@router.delete(
    "/alert-subscriptions/{subscription_id}", status_code=204, responses=error_responses(404)
)
async def delete_subscription(
    principal: Engineering, conn: Conn, subscription_id: SubscriptionId
) -> Response:
    async with conn.transaction():
        done = await conn.fetchval(
            "DELETE FROM alert_subscription WHERE id = $1 RETURNING id", subscription_id
        )
        if done is None:
            raise NotFoundError(f"no subscription {subscription_id}", code="subscription_not_found")
        await audit.record(
            conn, principal, "alert_subscription.delete", None, {"subscription_id": subscription_id}
        )
    return Response(status_code=204)


# --- machine groups (rule scope) ----------------------------------------------------------------

GroupName = Annotated[str, Path(pattern=_ID)]


@router.get("/alert-machine-groups", response_model=dict[str, list[str]])
async def list_groups(principal: AnyRole, conn: Conn) -> dict[str, list[str]]:
    """Group name -> its `site:machine` members."""
    rows = await conn.fetch(
        "SELECT group_name, site, machine FROM alert_machine_group ORDER BY 1, 2, 3"
    )
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["group_name"], []).append(f"{r['site']}:{r['machine']}")
    return out


@router.put("/alert-machine-groups/{group_name}", response_model=MachineGroup)
async def replace_group(
    principal: Engineering, conn: Conn, group_name: GroupName, body: MachineGroup
) -> MachineGroup:
    """Replace a group's members (an empty list deletes the group)."""
    pairs = sorted({tuple(m.split(":", 1)) for m in body.machines})
    async with conn.transaction():
        await conn.execute("DELETE FROM alert_machine_group WHERE group_name = $1", group_name)
        await conn.executemany(
            "INSERT INTO alert_machine_group (group_name, site, machine) VALUES ($1, $2, $3)",
            [(group_name, s, m) for s, m in pairs],
        )
        await audit.record(
            conn, principal, "alert_machine_group.replace", None,
            {"group": group_name, "members": len(pairs)},
        )  # fmt: skip
    return MachineGroup(machines=[f"{s}:{m}" for s, m in pairs])
