"""Evaluation: live messages and stored data -> observations -> rule state -> lifecycle.

Live (threshold, condition): a batch of messages from the shared subscription is decoded, every
enabled rule in scope turns it into observations per (rule, machine), and each group is folded
into the shared `alert_rule_state` row under its lock (`rules.advance`), opening or resolving
the alert in the same transaction. Groups with only false observations whose state is idle skip
the lock (the common case: a machine running normally costs one read per batch).

Stored data (silence, tool_life, accuracy, utilisation): queried every tick, one observation per
machine at the database's `now()`, folded the same way.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from alerts import lifecycle
from alerts.errors import RuleError
from alerts.rules import (
    LIVE_KINDS,
    AccuracyParams,
    Kind,
    Observation,
    Outcome,
    Rule,
    RunState,
    SilenceParams,
    ToolLifeParams,
    UtilisationParams,
    advance,
    condition_observation,
    parse_rule,
    telemetry_observation,
)
from protocol import (
    Channel,
    ConditionEvent,
    Event,
    ProtocolError,
    Telemetry,
    ValueEvent,
    decode,
    parse_topic,
)

__all__ = ["Evaluator", "Key"]

log = logging.getLogger(__name__)

Key = tuple[int, str, str]  # (rule id, site, machine)


@dataclass
class Stats:
    messages: int = 0
    bad_messages: int = 0
    observations: int = 0
    locked_groups: int = 0
    fired: int = 0
    cleared: int = 0


class Evaluator:
    """Holds the enabled rules (refreshed from the database) and applies observations."""

    def __init__(self, pool: asyncpg.Pool, worker: str, lease_s: float) -> None:
        self.pool = pool
        self.worker = worker
        self.lease_s = lease_s
        self.rules: list[Rule] = []
        self.groups: dict[str, frozenset[str]] = {}
        self.stats = Stats()
        self._bad_rules: set[int] = set()

    # --- rules -----------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Reload enabled rules and machine groups; a malformed rule is skipped and logged once."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("SELECT * FROM alert_rule WHERE enabled ORDER BY id")
            group_rows = await conn.fetch(
                "SELECT group_name, site, machine FROM alert_machine_group"
            )
        rules = []
        for row in rows:
            try:
                rules.append(parse_rule(dict(row)))
            except RuleError as exc:
                if row["id"] not in self._bad_rules:
                    log.error("skipping %s", exc)
                    self._bad_rules.add(row["id"])
        groups: dict[str, set[str]] = defaultdict(set)
        for g in group_rows:
            groups[g["group_name"]].add(f"{g['site']}:{g['machine']}")
        self.rules = rules
        self.groups = {k: frozenset(v) for k, v in groups.items()}

    def _live_rules(self, site: str, machine: str) -> list[Rule]:
        return [
            r for r in self.rules if r.kind in LIVE_KINDS and r.in_scope(site, machine, self.groups)
        ]

    # --- live stream -------------------------------------------------------------------------

    def observe(self, messages: Iterable[tuple[str, bytes]]) -> dict[Key, list[Observation]]:
        """Observations per (rule, machine) of a batch of (topic, payload); counts bad ones."""
        out: dict[Key, list[Observation]] = defaultdict(list)
        for topic_text, payload in messages:
            self.stats.messages += 1
            try:
                topic = parse_topic(topic_text)
                if topic.channel not in (Channel.TELEMETRY, Channel.EVENT):
                    continue
                message = decode(topic, payload)
            except ProtocolError as exc:
                self.stats.bad_messages += 1
                log.warning("undecodable message on %s: %s", topic_text, exc)
                continue
            assert topic.machine is not None
            rules = self._live_rules(topic.site, topic.machine)
            if not rules or getattr(message, "historical", False):
                continue  # replays from an edge buffer are history, not news
            for rule in rules:
                key = (rule.id, topic.site, topic.machine)
                out[key].extend(_observations(rule, message))
        for key in [k for k, v in out.items() if not v]:
            del out[key]
        self.stats.observations += sum(len(v) for v in out.values())
        return out

    async def apply(self, observed: Mapping[Key, list[Observation]]) -> list[int]:
        """Fold observations into the shared state; returns the deliveries claimed for sending."""
        if not observed:
            return []
        rules = {r.id: r for r in self.rules}
        idle_false = [k for k, obs in observed.items() if not any(o.true for o in obs)]
        busy: set[Key] = set()
        if idle_false:
            rows = await self.pool.fetch(
                """SELECT s.rule_id, s.site, s.machine FROM alert_rule_state s
                     JOIN unnest($1::bigint[], $2::text[], $3::text[]) AS k(rule_id, site, machine)
                       USING (rule_id, site, machine)
                    WHERE s.true_since IS NOT NULL OR s.satisfied""",
                [k[0] for k in idle_false],
                [k[1] for k in idle_false],
                [k[2] for k in idle_false],
            )
            busy = {(r["rule_id"], r["site"], r["machine"]) for r in rows}
        deliveries: list[int] = []
        # A fixed lock order: two workers locking several rows never deadlock.
        for key in sorted(observed):
            obs = observed[key]
            rule = rules.get(key[0])
            if rule is None or (key not in busy and not any(o.true for o in obs)):
                continue
            deliveries += await self._fold(rule, key, obs)
        return deliveries

    async def _fold(self, rule: Rule, key: Key, obs: list[Observation]) -> list[int]:
        _, site, machine = key
        self.stats.locked_groups += 1
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO alert_rule_state (rule_id, site, machine) VALUES ($1, $2, $3)
                   ON CONFLICT DO NOTHING""",
                *key,
            )
            row = await conn.fetchrow(
                """SELECT true_since, last_true, last_false, satisfied, occurrences, last_value
                     FROM alert_rule_state WHERE rule_id = $1 AND site = $2 AND machine = $3
                      FOR UPDATE""",
                *key,
            )
            assert row is not None
            state = RunState(
                row["true_since"],
                row["last_true"],
                row["last_false"],
                row["satisfied"],
                tuple(row["occurrences"]),
                row["last_value"],
            )
            outcome = advance(rule, state, obs)
            s = outcome.state
            await conn.execute(
                """UPDATE alert_rule_state SET true_since = $4, last_true = $5, last_false = $6,
                          satisfied = $7, occurrences = $8, last_value = $9, updated_at = now()
                    WHERE rule_id = $1 AND site = $2 AND machine = $3""",
                *key,
                s.true_since,
                s.last_true,
                s.last_false,
                s.satisfied,
                list(s.occurrences),
                s.last_value,
            )
            return await self._transition(conn, rule, site, machine, outcome)

    async def _transition(
        self, conn: asyncpg.Connection, rule: Rule, site: str, machine: str, outcome: Outcome
    ) -> list[int]:
        if outcome.fired is not None:
            self.stats.fired += 1
            _, deliveries = await lifecycle.open_alert(
                conn, rule, site, machine, outcome.fired, self.worker, self.lease_s
            )
            return deliveries
        if outcome.cleared is not None and rule.auto_resolve and rule.repeat_count == 1:
            self.stats.cleared += 1
            ob = outcome.cleared
            return await lifecycle.resolve_active(
                conn,
                rule.id,
                site,
                machine,
                actor=f"alerts:{self.worker}",
                resolution="auto",
                detail={"cleared_ts": ob.ts.isoformat(), "value": ob.value},
                worker=self.worker,
                lease_s=self.lease_s,
            )
        return []

    # --- stored data -------------------------------------------------------------------------

    async def tick(self, *, slow: bool) -> list[int]:
        """Evaluate the stored-data rules (silence always; the others when `slow`), escalate."""
        observed: dict[Key, list[Observation]] = {}
        async with self.pool.acquire() as conn:
            now: datetime = await conn.fetchval("SELECT now()")
            for rule in self.rules:
                if rule.kind in LIVE_KINDS or (rule.kind is not Kind.SILENCE and not slow):
                    continue
                for site, machine, ob in await _stored_observations(conn, rule, now):
                    if rule.in_scope(site, machine, self.groups):
                        observed[(rule.id, site, machine)] = [ob]
        deliveries = await self.apply(observed)
        async with self.pool.acquire() as conn:
            deliveries += await lifecycle.escalate_due(conn, self.worker, self.lease_s)
            deliveries += await lifecycle.resolve_stale_repeats(conn, self.worker, self.lease_s)
        return deliveries


def _observations(rule: Rule, message: Any) -> list[Observation]:
    out: list[Observation] = []
    if isinstance(message, Telemetry):
        if rule.kind is Kind.THRESHOLD:
            for sample in message.samples:
                ob = telemetry_observation(rule, sample.ts, sample.values)
                if ob is not None:
                    out.append(ob)
    elif isinstance(message, Event):
        for item in message.events:
            ob = None
            if isinstance(item, ConditionEvent) and rule.kind is Kind.CONDITION:
                c = item.condition
                ob = condition_observation(rule, item.ts, c.component, c.level, c.code, c.text)
            elif isinstance(item, ValueEvent) and rule.kind is Kind.THRESHOLD:
                ob = telemetry_observation(rule, item.ts, {item.signal: item.value})
            if ob is not None:
                out.append(ob)
    return out


async def _stored_observations(
    conn: asyncpg.Connection, rule: Rule, now: datetime
) -> list[tuple[str, str, Observation]]:
    """One observation per machine for a stored-data rule (machines the rule can see)."""
    p = rule.params
    site = rule.site
    out: list[tuple[str, str, Observation]] = []
    if isinstance(p, SilenceParams):
        rows = await conn.fetch(
            """SELECT site, machine, coalesce(last_seen, first_seen) AS seen, status FROM machine
                WHERE $1::text IS NULL OR site = $1""",
            site,
        )
        for r in rows:
            if r["seen"] is None:
                continue
            silent = (now - r["seen"]).total_seconds()
            detail = {"last_seen": r["seen"].isoformat(), "status": r["status"]}
            out.append(
                (r["site"], r["machine"], Observation(now, silent > p.silent_s, silent, detail))
            )
    elif isinstance(p, ToolLifeParams):
        rows = await conn.fetch(
            """SELECT m.site, m.machine, t.tool_number, t.mounted_at FROM machine m
                 CROSS JOIN LATERAL (SELECT tool_number, mounted_at FROM tool_life
                                      WHERE machine_id = m.id ORDER BY mounted_at DESC LIMIT 1) t
                WHERE ($1::text IS NULL OR m.site = $1)""",
            site,
        )
        limit = p.warning_s if p.warning_s is not None else p.limit_s
        for r in rows:
            mounted = (now - r["mounted_at"]).total_seconds()
            level = "limit" if mounted > p.limit_s else "warning" if mounted > limit else "ok"
            detail = {"tool_number": r["tool_number"], "level": level}
            out.append(
                (r["site"], r["machine"], Observation(now, mounted > limit, mounted, detail))
            )
    elif isinstance(p, AccuracyParams):
        rows = await conn.fetch(
            """SELECT DISTINCT ON (site, machine) site, machine, id, kind, passed, created_at
                 FROM accuracy_report
                WHERE ($1::text IS NULL OR site = $1) AND ($2::text IS NULL OR kind = $2)
                  AND passed IS NOT NULL
                ORDER BY site, machine, created_at DESC, id DESC""",
            site,
            p.kind,
        )
        for r in rows:
            detail = {"report_id": r["id"], "report_kind": r["kind"]}
            ob = Observation(r["created_at"], not r["passed"], None, detail)
            out.append((r["site"], r["machine"], ob))
    elif isinstance(p, UtilisationParams):
        rows = await conn.fetch(
            """SELECT m.site, m.machine,
                      coalesce(sum(extract(epoch FROM least(coalesce(i.end_ts, $2), $2)
                                   - greatest(i.start_ts, $2 - make_interval(secs => $3))))
                               FILTER (WHERE i.value = 'ACTIVE'), 0) AS active_s,
                      min(i.start_ts) AS first_ts
                 FROM machine m
                 JOIN state_interval i ON i.machine_id = m.id AND i.signal = 'execution'
                WHERE ($1::text IS NULL OR m.site = $1)
                  AND coalesce(i.end_ts, $2) > $2 - make_interval(secs => $3)
                GROUP BY m.site, m.machine""",
            site,
            now,
            p.window_s,
        )
        for r in rows:
            share = float(r["active_s"]) / p.window_s
            detail = {"window_s": p.window_s, "target": p.target}
            out.append((r["site"], r["machine"], Observation(now, share < p.target, share, detail)))
    return out
