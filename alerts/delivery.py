"""Delivery: the outbox in `alert_delivery`, claimed with a lease, sent, logged, retried.

Each transition's deliveries are rows keyed by (alert, transition, subscriber); the unique key
makes a transition reach a subscriber once however many workers evaluate it. A row is sent by
the worker that claimed it: at insert (the worker that opened the alert sends at once, no poll
in the way) or later by any worker's `claim_due()` (`FOR UPDATE SKIP LOCKED`), for pending rows
(API transitions, retries) and for rows whose claimer died (lease expired). Every attempt is
logged in `alert_delivery_attempt`. A failure is retried with jittered, capped exponential
backoff up to `delivery_max_attempts`, then the row is `failed`.

Guarantee: at least once per (alert, transition, subscriber); a duplicate needs a worker to die
between sending and recording, and then the retry carries the same `X-Arbor-Delivery` id.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson

from alerts.config import AlertsSettings
from alerts.errors import DeliveryError
from alerts.notifiers import email, webhook
from alerts.notifiers import mqtt as mqtt_notifier
from alerts.notifiers.mqtt import Publisher

__all__ = ["Dispatcher", "alert_payload"]

log = logging.getLogger(__name__)

_LOAD = """
SELECT d.id, d.transition, d.channel, d.attempts, d.subscription_id,
       s.target, s.secret, s.name AS subscription_name,
       a.id AS alert_id, a.rule_id, r.name AS rule_name, r.kind AS rule_kind, a.site, a.machine,
       a.severity, a.state, a.title, a.detail, a.trigger_ts, a.value, a.opened_at,
       a.acknowledged_at, a.acknowledged_by, a.ack_comment, a.assigned_to, a.escalation_level,
       a.escalated_at, a.resolved_at, a.resolved_by, a.resolution
FROM alert_delivery d
JOIN alert a ON a.id = d.alert_id
JOIN alert_rule r ON r.id = a.rule_id
LEFT JOIN alert_subscription s ON s.id = d.subscription_id
WHERE d.id = ANY($1::bigint[]) AND d.status = 'sending' AND d.claimed_by = $2
ORDER BY d.id
"""

_ALERT_FIELDS = (
    "rule_id", "rule_name", "rule_kind", "site", "machine", "severity", "state", "title", "detail",
    "trigger_ts", "value", "opened_at", "acknowledged_at", "acknowledged_by", "ack_comment",
    "assigned_to", "escalation_level", "escalated_at", "resolved_at", "resolved_by", "resolution",
)  # fmt: skip


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def alert_payload(row: asyncpg.Record | dict[str, Any], sent_at: datetime) -> dict[str, Any]:
    """The JSON document every channel carries (docs/alerts.md shows an example)."""
    alert = {"id": row["alert_id"]} | {k: _iso(row[k]) for k in _ALERT_FIELDS}
    return {
        "v": 1,
        "event": f"alert.{str(row['transition']).split(':')[0]}",
        "delivery_id": row["id"],
        "sent_at": sent_at.isoformat(),
        "alert": alert,
    }


def _email_text(payload: dict[str, Any], link_base: str) -> tuple[str, str]:
    a = payload["alert"]
    what = payload["event"].removeprefix("alert.")
    subject = f"[Arbor {a['severity'].upper()}] {what}: {a['title']}"
    lines = [
        f"{a['title']} ({a['severity']}) was {what}.",
        "",
        f"Machine:   {a['site']}:{a['machine']}",
        f"Rule:      {a['rule_name']} ({a['rule_kind']})",
        f"Triggered: {a['trigger_ts']} (value {a['value']})",
        f"State:     {a['state']}",
    ]
    if a["acknowledged_by"]:
        lines.append(f"Acknowledged by {a['acknowledged_by']} at {a['acknowledged_at']}")
    if a["assigned_to"]:
        lines.append(f"Assigned to {a['assigned_to']}")
    if a["resolved_at"]:
        lines.append(f"Resolved at {a['resolved_at']} by {a['resolved_by']} ({a['resolution']})")
    if link_base:
        lines += ["", f"{link_base.rstrip('/')}/{a['id']}"]
    return subject, "\n".join(lines) + "\n"


class Dispatcher:
    """Sends claimed deliveries through the notifiers and records the outcome."""

    def __init__(
        self,
        settings: AlertsSettings,
        pool: asyncpg.Pool,
        http: httpx.AsyncClient,
        mqtt_link: Publisher | None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.http = http
        self.mqtt_link = mqtt_link
        self.smtp = email.SmtpServer(
            settings.smtp_host,
            settings.smtp_port,
            sender=settings.smtp_from,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value(),
            starttls=settings.smtp_starttls,
            timeout_s=settings.smtp_timeout_s,
        )
        self.delivered = 0
        self.failed_attempts = 0

    @property
    def worker(self) -> str:
        return self.settings.worker_id

    def backoff_s(self, attempts: int) -> float:
        """Jittered exponential backoff after `attempts` failures, capped at `backoff_max_s`."""
        base = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (attempts - 1))
        return float(base * random.uniform(0.5, 1.0))

    async def claim_due(self, limit: int = 50) -> list[int]:
        """Claim pending rows that are due, and rows whose claimer's lease ran out."""
        rows = await self.pool.fetch(
            """UPDATE alert_delivery SET status = 'sending', claimed_by = $1,
                      lease_until = now() + make_interval(secs => $2)
                WHERE id IN (SELECT id FROM alert_delivery
                              WHERE (status = 'pending' AND next_attempt_at <= now())
                                 OR (status = 'sending' AND lease_until < now())
                              ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
                RETURNING id""",
            self.worker,
            self.settings.delivery_lease_s,
            limit,
            timeout=self.settings.db_timeout_s,
        )
        return [int(r["id"]) for r in rows]

    async def send(self, ids: list[int]) -> None:
        """Send the claimed deliveries `ids` one after another (each with its own deadline)."""
        if not ids:
            return
        rows = await self.pool.fetch(_LOAD, ids, self.worker, timeout=self.settings.db_timeout_s)
        for row in rows:
            await self._send_one(row)

    async def _send_one(self, row: asyncpg.Record) -> None:
        payload = alert_payload(row, datetime.now(UTC))
        body = orjson.dumps(payload)
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            status = await self._dispatch(row, payload, body)
        except DeliveryError as exc:
            error, status = str(exc), exc.status
        duration_ms = (time.monotonic() - started) * 1000
        await self._record(row, ok=error is None, status=status, error=error, ms=duration_ms)

    async def _dispatch(
        self, row: asyncpg.Record, payload: dict[str, Any], body: bytes
    ) -> int | None:
        channel = row["channel"]
        if channel == "mqtt":
            if self.mqtt_link is None:
                raise DeliveryError("this worker has no MQTT link")
            await mqtt_notifier.publish(
                self.mqtt_link, row["site"], body, self.settings.mqtt_timeout_s
            )
            return None
        if row["subscription_id"] is None:
            raise DeliveryError("the subscription was deleted")
        if channel == "webhook":
            return await webhook.post(
                self.http,
                row["target"],
                body,
                secret=row["secret"],
                event=payload["event"],
                delivery_id=row["id"],
                timeout_s=self.settings.webhook_timeout_s,
            )
        if channel == "email":
            subject, text = _email_text(payload, self.settings.link_base)
            await email.send(self.smtp, row["target"], subject, text)
            return None
        raise DeliveryError(f"unknown channel {channel!r}")

    async def _record(
        self, row: asyncpg.Record, *, ok: bool, status: int | None, error: str | None, ms: float
    ) -> None:
        attempts = int(row["attempts"]) + 1
        if ok:
            self.delivered += 1
            new_status, next_in = "delivered", 0.0
        else:
            self.failed_attempts += 1
            final = attempts >= self.settings.delivery_max_attempts
            new_status, next_in = (
                ("failed", 0.0) if final else ("pending", self.backoff_s(attempts))
            )
            log.warning("delivery %d (%s, alert %d) attempt %d failed: %s", row["id"],
                        row["channel"], row["alert_id"], attempts, error)  # fmt: skip
        async with (
            self.pool.acquire(timeout=self.settings.db_timeout_s) as conn,
            conn.transaction(),
        ):
            await conn.execute(
                """UPDATE alert_delivery SET status = $2, attempts = $3, response_status = $4,
                          last_error = $5, lease_until = NULL,
                          delivered_at = CASE WHEN $2 = 'delivered' THEN now() END,
                          next_attempt_at = now() + make_interval(secs => $6)
                    WHERE id = $1 AND claimed_by = $7""",
                row["id"],
                new_status,
                attempts,
                status,
                error,
                next_in,
                self.worker,
            )
            await conn.execute(
                """INSERT INTO alert_delivery_attempt
                       (delivery_id, worker, ok, response_status, error, duration_ms)
                   VALUES ($1, $2, $3, $4, $5, $6)""",
                row["id"],
                self.worker,
                ok,
                status,
                error,
                ms,
            )
