"""One ingest worker: subscriber -> batcher/decoder -> writer -> acks, plus the job loop.

    paho thread --deque--> _batch_loop --(to_thread: decode)--> queue(2) --> _write_loop --> ack
                                                                               |
                                                          one transaction per batch, retried
                                                          until it commits; acks only after

The queue between decode and write holds at most two batches, so decoding batch N+1 overlaps
writing batch N and nothing else buffers: when the database is slow or down the unacked messages
pile up to Receive Maximum and the broker stops sending (backpressure at the broker).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
from prometheus_client import start_http_server

from ingest.config import IngestSettings
from ingest.copybinary import SampleEncodeError
from ingest.decode import Decoder
from ingest.jobs import run_upkeep_jobs, run_watch_jobs
from ingest.metrics import IngestMetrics
from ingest.records import Accepted, DeadLetter, DecodedBatch, Raw
from ingest.sparkplug import SKIP_REASONS
from ingest.subscriber import Subscriber
from ingest.writer import BatchWriter, WriteStats

__all__ = ["Worker"]

log = logging.getLogger(__name__)

# Server errors that mean "this batch is bad", not "the database is unavailable": retrying the
# same batch would fail forever, so its messages are written one by one instead.
_DATA_ERROR_CLASSES = ("22", "23", "42")


# What a dying or restarting server makes asyncpg raise (logged without a traceback). Anything
# else is retried too, but logged with its traceback: it may be a bug of ours.
_KNOWN_DB_FAILURES = (
    asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError,
    TimeoutError,
)  # fmt: skip


def _is_data_error(exc: BaseException) -> bool:
    """True if the rows themselves were refused: by the server (SQLSTATE classes 22/23/42) or in
    encoding them (``asyncpg.DataError``, ``SampleEncodeError``). Everything else a commit can
    raise (connection lost, ``InternalClientError: cannot switch to state ...`` after the server
    died mid-operation, protocol errors, timeouts, a server starting up) is about the connection,
    not the data."""
    if isinstance(exc, asyncpg.DataError | SampleEncodeError):
        return True
    state = getattr(exc, "sqlstate", None)
    return isinstance(exc, asyncpg.PostgresError) and str(state)[:2] in _DATA_ERROR_CLASSES


class Worker:
    """Runs until ``stop`` is set (or it is cancelled); never dies of a payload."""

    def __init__(self, settings: IngestSettings, metrics: IngestMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or IngestMetrics()
        self.decoder = Decoder(settings)
        self._conn: asyncpg.Connection | None = None
        self._writer: BatchWriter | None = None
        self._rollups = True
        self._last_rebirth: dict[tuple[str, str], float] = {}

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        server = None
        if self.settings.metrics_port:
            port = self.settings.metrics_port + self.settings.worker_index
            server, _thread = start_http_server(port, "127.0.0.1", registry=self.metrics.registry)
        sub = Subscriber(self.settings, loop)
        self._sub = sub
        self.metrics.subscribed.set_function(lambda: 1.0 if sub.subscribed else 0.0)
        self.metrics.anchor_recovering.set_function(lambda: 1.0 if sub.recovering else 0.0)
        self.metrics.anchor_skipped.set_function(lambda: float(sub.anchor_skipped))
        skipped = self.decoder.sparkplug.skipped
        for reason in SKIP_REASONS:
            self.metrics.sparkplug_skipped.labels(reason).set_function(
                functools.partial(_count_of, skipped, reason)
            )
        decoded: asyncio.Queue[DecodedBatch] = asyncio.Queue(maxsize=2)
        await self._connect_db()
        sub.start()
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self._batch_loop(sub, decoded), name="batch_loop"),
                    tg.create_task(self._write_loop(sub, decoded), name="write_loop"),
                    tg.create_task(self._jobs_loop(self._watch_jobs), name="watch_jobs"),
                    tg.create_task(self._jobs_loop(self._upkeep_jobs), name="upkeep_jobs"),
                ]
                await stop.wait()
                # Stop taking messages; let the batch in hand commit and be acked.
                for task in (tasks[0], *tasks[2:]):
                    task.cancel()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(decoded.join(), 30)
                tasks[1].cancel()
        finally:
            sub.stop()
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._conn.close(), 5)
            if server is not None:
                server.shutdown()

    # --- database connection -----------------------------------------------------------------

    async def _connect_db(self) -> asyncpg.Connection:
        """A new connection, retried with jittered, capped backoff until the database answers.
        Any failure is retried (refused, reset, "starting up", asyncpg internal errors while the
        server dies under us): a worker waits for its database, it never exits for it."""
        delay = 0.2
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(
                    self.settings.database_url, timeout=10,
                    command_timeout=self.settings.db_timeout_s,
                )  # fmt: skip
                lic = None
                if self._writer is None:
                    lic = await conn.fetchval(
                        "SELECT coalesce(current_setting('timescaledb.license', true), 'apache')"
                    )
            except Exception as exc:  # noqa: BLE001 - see the docstring
                if conn is not None:
                    conn.terminate()
                log.warning("database unavailable (%r); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)
                continue
            self._conn = conn
            if self._writer is None:
                self._rollups = lic != "timescale"
                self._writer = BatchWriter(conn, note_late=self._rollups)
            else:
                self._writer._conn = conn  # keep the machine-id cache
            return conn

    # --- loops -------------------------------------------------------------------------------

    async def _batch_loop(self, sub: Subscriber, out: asyncio.Queue[DecodedBatch]) -> None:
        max_n = self.settings.batch_max_messages
        max_age = self.settings.batch_max_age_s
        inbox = sub.inbox
        while True:
            batch: list[Raw] = []
            while not inbox:
                sub.wake_at = 1  # before looking at the inbox (Subscriber.wake_at)
                sub.ready.clear()
                if inbox:
                    break
                await sub.ready.wait()
            deadline = time.monotonic() + max_age
            while True:
                while inbox and len(batch) < max_n:
                    batch.append(inbox.popleft())
                remaining = deadline - time.monotonic()
                if len(batch) >= max_n or remaining <= 0:
                    break
                # Woken when the batch could be filled, or by the deadline: not per message.
                sub.wake_at = max_n - len(batch)
                sub.ready.clear()
                if len(inbox) >= sub.wake_at:
                    continue
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(sub.ready.wait(), remaining)
            self.metrics.pending.set(len(inbox) + len(batch))
            result = await asyncio.to_thread(self.decoder.decode, batch)
            self._request_rebirths(result.rebirths)
            await out.put(result)

    async def _write_loop(self, sub: Subscriber, inq: asyncio.Queue[DecodedBatch]) -> None:
        while True:
            batch = await inq.get()
            try:
                stats = await self._commit(batch)
                acked = sub.ack(batch.acks)
                self._account(batch, stats, acked)
            finally:
                inq.task_done()

    async def _commit(self, batch: DecodedBatch) -> WriteStats:
        """Commit ``batch``; returns only once it is committed (nothing is acked before).

        A data error (the rows refused) switches to writing message by message
        (:meth:`_isolate`). Every other failure, whatever asyncpg raises, drops the connection
        and retries the whole batch on a new one after a jittered, capped backoff: the ledger
        makes the retry exactly-once even if a COMMIT reached the server before the connection
        died. Only cancellation ends the loop."""
        delay = 0.2
        isolate = False
        while True:
            self.metrics.lag.set(max(0.0, time.time() - batch.first_received))
            conn = self._conn or await self._connect_db()
            assert self._writer is not None
            t0 = time.perf_counter()
            try:
                if isolate:
                    stats = await self._isolate(batch)
                else:
                    stats = await self._writer.write(batch)
            except Exception as exc:  # asyncpg's failure modes are not a closed set
                if not isolate and _is_data_error(exc):
                    log.warning("batch rejected by the database (%s); isolating", exc)
                    isolate = True
                    continue
                log.warning(
                    "commit failed (%r); reconnecting in %.1f s", exc, delay,
                    exc_info=not isinstance(exc, _KNOWN_DB_FAILURES),
                )  # fmt: skip
            else:
                self.metrics.commit_seconds.observe(time.perf_counter() - t0)
                return stats
            self.metrics.write_errors.inc()
            if not conn.is_closed():
                conn.terminate()
            self._conn = None
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)

    async def _isolate(self, batch: DecodedBatch) -> WriteStats:
        """Write a rejected batch message by message; the ones the database refuses become dead
        letters (kind ``db_rejected``) so the rest still lands. Any other failure propagates to
        :meth:`_commit`, which reconnects and isolates again (the ledger drops what already
        committed)."""
        assert self._writer is not None
        total = WriteStats(rows={}, dead=0)
        for acc in batch.accepted:
            one = DecodedBatch(accepted=[acc])
            try:
                s = await self._writer.write(one)
            except Exception as exc:
                if not _is_data_error(exc):
                    raise
                s = await self._writer.write(DecodedBatch(dead=[_rejected(acc, exc)]))
            total.messages += s.messages
            total.duplicates += s.duplicates
            total.values += s.values
            total.dead += s.dead
        rest = DecodedBatch(dead=batch.dead, gaps=batch.gaps)
        s = await self._writer.write(rest)
        total.dead += s.dead
        total.gaps += s.gaps
        return total

    def _account(self, batch: DecodedBatch, stats: WriteStats, acked: int) -> None:
        m = self.metrics
        m.batches.inc()
        m.batch_size.observe(len(batch.acks))
        m.messages.labels("stored").inc(stats.messages)
        m.messages.labels("duplicate").inc(stats.duplicates)
        m.messages.labels("dead_letter").inc(len(batch.dead))
        m.messages.labels("ignored").inc(batch.ignored)
        m.values.inc(stats.values)
        for table, n in (stats.rows or {}).items():
            m.rows.labels(table).inc(n)
        for d in batch.dead:
            m.dead_letters.labels(d.kind).inc()
        m.gaps.inc(stats.gaps)
        now = datetime.now(UTC)
        for a in batch.accepted:
            if a.historical:
                continue  # a replayed backlog is hours old by design: not ingest's latency
            newest = a.wide[-1][0] if a.wide else a.ts
            m.latency.observe(max(0.0, (now - newest).total_seconds()))
        m.lag.set(0.0)
        m.pending.set(len(self._sub.inbox))

    async def _watch_jobs(self, conn: asyncpg.Connection) -> None:
        await run_watch_jobs(conn, self.settings)

    async def _upkeep_jobs(self, conn: asyncpg.Connection) -> None:
        await run_upkeep_jobs(conn, self.settings, rollups=self._rollups)

    async def _jobs_loop(self, jobs: Callable[[asyncpg.Connection], Awaitable[None]]) -> None:
        """Run `jobs` every `jobs_interval_s` (jittered), each round on a fresh connection.
        Two of these run: the quick jobs users watch, and upkeep that may take a minute."""
        while True:
            await asyncio.sleep(self.settings.jobs_interval_s * (0.8 + 0.4 * random.random()))
            try:
                conn = await asyncpg.connect(self.settings.database_url, timeout=10)
            except Exception as exc:  # noqa: BLE001 - whatever the database's state, retry later
                log.warning("jobs: database unavailable (%r)", exc)
                continue
            try:
                await jobs(conn)
            except Exception:  # a job's failure must not stop ingest; next round retries
                log.exception("jobs failed")
            finally:
                with contextlib.suppress(Exception):
                    await conn.close()

    def _request_rebirths(self, nodes: list[tuple[str, str]]) -> None:
        if not nodes or not self.settings.sends_rebirth:
            return
        from protocol.sparkplug import MessageType, encode_payload, rebirth_payload, sparkplug_topic

        now = time.monotonic()
        for group, node in dict.fromkeys(nodes):
            last = self._last_rebirth.get((group, node))
            if last is not None and now - last < self.settings.rebirth_min_interval_s:
                continue
            self._last_rebirth[(group, node)] = now
            payload = encode_payload(rebirth_payload(int(time.time() * 1000)))
            self._sub.publish(sparkplug_topic(group, MessageType.NCMD, node), payload, qos=1)
            log.info("asked Sparkplug node %s/%s to rebirth", group, node)


def _rejected(acc: Accepted, exc: BaseException) -> DeadLetter:
    topic = f"arbor/v1/{acc.site}/{acc.machine}/{acc.channel}"
    return DeadLetter(
        "db_rejected", f"database refused the rows: {exc}", topic, b"", acc.received, acc.site,
        acc.machine,
    )  # fmt: skip


def _count_of(counts: Counter[str], key: str) -> float:
    return float(counts[key])
