"""One alerts worker: the live stream, stored-data ticks, and delivery, as named tasks.

    paho thread --inbox (drop oldest)--> _receive_loop --evaluate, commit, ack--+
                                          _tick_loop (stored rules, escalation) -+--> queue (block)
                                          _claim_loop (pending, retries, leases) +        |
                                                                        _send_loop x N <--+

Several workers (processes or hosts) share the load through the MQTT shared subscription and
the database: rule state rows are locked, one active alert per (rule, machine) is a unique index,
and each delivery row is claimed by one worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass

import asyncpg
import httpx
import orjson

from alerts.config import AlertsSettings
from alerts.delivery import Dispatcher
from alerts.evaluator import Evaluator
from alerts.mqtt import MqttLink

__all__ = ["Worker", "create_pool"]

log = logging.getLogger(__name__)

_SENDERS = 4


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def create_pool(settings: AlertsSettings) -> asyncpg.Pool:
    """The worker's connection pool (JSON columns as Python objects, deadlines on every call)."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=1,
        max_size=6,
        command_timeout=settings.db_timeout_s,
        timeout=settings.db_timeout_s,
        init=_init_connection,
    )
    return pool


@dataclass
class Health:
    received: int = 0
    evaluated_batches: int = 0
    loop_errors: int = 0


class Worker:
    """Runs until `stop` is set (or it is cancelled); one bad message or rule never stops it."""

    def __init__(self, settings: AlertsSettings) -> None:
        self.settings = settings
        self.health = Health()
        self.ready = asyncio.Event()
        self.evaluator: Evaluator | None = None
        self.dispatcher: Dispatcher | None = None
        self.link: MqttLink | None = None

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        s = self.settings
        pool = await create_pool(s)
        link = MqttLink(s, asyncio.get_running_loop())
        self.link = link
        outbox: asyncio.Queue[int] = asyncio.Queue(maxsize=1_000)  # overflow policy: block
        try:
            async with httpx.AsyncClient(timeout=s.webhook_timeout_s) as http:
                self.evaluator = Evaluator(pool, s.worker_id, s.delivery_lease_s)
                self.dispatcher = Dispatcher(s, pool, http, link)
                await self.evaluator.refresh()
                link.start()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(link.connected.wait(), s.mqtt_timeout_s)
                async with asyncio.TaskGroup() as tg:
                    tasks = [
                        tg.create_task(self._receive_loop(link, outbox), name="receive_loop"),
                        tg.create_task(self._rules_loop(), name="rules_loop"),
                        tg.create_task(self._tick_loop(outbox), name="tick_loop"),
                        tg.create_task(self._claim_loop(outbox), name="claim_loop"),
                    ]
                    tasks += [
                        tg.create_task(self._send_loop(outbox), name=f"send_loop_{i}")
                        for i in range(_SENDERS)
                    ]
                    self.ready.set()
                    await stop.wait()
                    for t in tasks:
                        t.cancel()
        finally:
            link.stop()
            await pool.close()

    async def _receive_loop(self, link: MqttLink, outbox: asyncio.Queue[int]) -> None:
        assert self.evaluator is not None
        while True:
            await link.ready.wait()
            link.ready.clear()
            while batch := link.take(self.settings.batch_max):
                self.health.received += len(batch)
                try:
                    observed = self.evaluator.observe((m.topic, m.payload) for m in batch)
                    deliveries = await self.evaluator.apply(observed)
                except (asyncpg.PostgresError, OSError, TimeoutError):
                    # Not acked: the broker redelivers after a reconnect; keep going meanwhile.
                    self.health.loop_errors += 1
                    log.exception("evaluating a batch of %d messages failed", len(batch))
                    await asyncio.sleep(1.0)
                    continue
                link.ack(batch)
                self.health.evaluated_batches += 1
                for d in deliveries:
                    await outbox.put(d)

    async def _rules_loop(self) -> None:
        assert self.evaluator is not None
        while True:
            await asyncio.sleep(self.settings.rules_refresh_s)
            try:
                await self.evaluator.refresh()
            except Exception:  # the loop's top: log and keep the rules we have
                self.health.loop_errors += 1
                log.exception("reloading the rules failed")

    async def _tick_loop(self, outbox: asyncio.Queue[int]) -> None:
        assert self.evaluator is not None
        loop = asyncio.get_running_loop()
        next_slow = loop.time()
        while True:
            # Jitter so that N workers do not tick in lock-step.
            await asyncio.sleep(self.settings.tick_s * random.uniform(0.8, 1.2))
            slow = loop.time() >= next_slow
            if slow:
                next_slow = loop.time() + self.settings.slow_tick_s
            try:
                for d in await self.evaluator.tick(slow=slow):
                    await outbox.put(d)
            except Exception:  # the loop's top
                self.health.loop_errors += 1
                log.exception("the stored-data tick failed")

    async def _claim_loop(self, outbox: asyncio.Queue[int]) -> None:
        assert self.dispatcher is not None
        while True:
            await asyncio.sleep(self.settings.delivery_poll_s)
            try:
                for d in await self.dispatcher.claim_due():
                    await outbox.put(d)
            except Exception:  # the loop's top
                self.health.loop_errors += 1
                log.exception("claiming due deliveries failed")

    async def _send_loop(self, outbox: asyncio.Queue[int]) -> None:
        assert self.dispatcher is not None
        while True:
            delivery = await outbox.get()
            try:
                await self.dispatcher.send([delivery])
            except Exception:  # the loop's top: the lease brings the row back later
                self.health.loop_errors += 1
                log.exception("sending delivery %d failed", delivery)
