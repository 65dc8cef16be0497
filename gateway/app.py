"""Bootstrap: wire sources, pipelines, the disk queue, publishers and downlinks; run them.

One :class:`Gateway` per process. Each configured machine gets a :class:`MachineState`, a
:class:`~gateway.pipeline.MachinePipeline`, a :class:`~gateway.publisher.MachinePublisher` (its
own MQTT connection, so its own Last Will) and a :class:`~gateway.downlink.Downlink`. Sources
sharing an adapter address share one :class:`~gateway.sources.shdr.ShdrConnection`, whose
records are routed by device. Everything runs in one ``TaskGroup`` of named tasks.
"""

from __future__ import annotations

__all__ = ["Gateway", "MachineRuntime"]

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from gateway.buffer import DiskQueue
from gateway.config import GatewayConfig, GatewaySettings, ResolvedSource
from gateway.downlink import Downlink
from gateway.pipeline import MachinePipeline, MachineState
from gateway.publisher import MachinePublisher
from gateway.sources.shdr import Backoff, Command, Record, ShdrConnection, ShdrParser

log = logging.getLogger(__name__)


@dataclass(slots=True)
class MachineRuntime:
    """Everything that serves one machine."""

    source: ResolvedSource
    state: MachineState
    pipeline: MachinePipeline
    publisher: MachinePublisher
    downlink: Downlink


class Gateway:
    """The running gateway. ``run()`` until cancelled or :meth:`stop` is called."""

    def __init__(
        self, config: GatewayConfig, sources: list[ResolvedSource], settings: GatewaySettings
    ) -> None:
        self.config = config
        self.settings = settings
        buffer_path: Path = config.buffer.path or settings.gateway_buffer
        self.store = DiskQueue(
            buffer_path,
            max_messages=config.buffer.max_messages,
            policy=config.buffer.policy,
            synchronous=config.buffer.synchronous,
        )
        self.machines: list[MachineRuntime] = [self._machine(s) for s in sources]
        self.connections: list[ShdrConnection] = []
        by_address: dict[str, list[MachineRuntime]] = {}
        for m in self.machines:
            by_address.setdefault(m.source.config.address, []).append(m)
        for address, group in by_address.items():
            self.connections.append(self._connection(address, group))
        self._stopping = asyncio.Event()

    def _machine(self, source: ResolvedSource) -> MachineRuntime:
        cfg = source.config
        state = MachineState(cfg.site, cfg.machine)
        pipeline = MachinePipeline(
            state,
            self.store,
            self.config.pipeline,
            deadband=cfg.deadband,
            timestamps=cfg.timestamps,
        )
        publisher = MachinePublisher(
            state,
            self.store,
            source.endpoint,
            self.config.mqtt,
            cfg.controller,
            client_id=f"arbor-gw-{cfg.site}-{cfg.machine}"[:128],
            on_birth=pipeline.store_snapshot,
        )
        downlink = Downlink(publisher, pipeline, cfg.program_dir)
        publisher.on_command = downlink.handle
        pipeline.wake = publisher.wake

        def announce_session() -> None:  # a time jump started a session: birth it if online
            publisher.rebirth()

        pipeline.on_time_jump = announce_session
        return MachineRuntime(source, state, pipeline, publisher, downlink)

    def _connection(self, address: str, group: list[MachineRuntime]) -> ShdrConnection:
        parser = ShdrParser([m.source.device for m in group], label=address)
        pipelines = {m.source.device.name: m.pipeline for m in group}
        single = group[0].pipeline if len(group) == 1 else None

        async def sink(records: list[Record]) -> None:
            if single is not None:
                if not single.offer(records):
                    await single.queue.put(records)
                return
            by_device: dict[str, list[Record]] = {}
            for r in records:
                if not isinstance(r, Command):
                    by_device.setdefault(r.device.name, []).append(r)
            for name, part in by_device.items():
                pipeline = pipelines[name]
                if not pipeline.offer(part):
                    await pipeline.queue.put(part)

        first = group[0].source
        return ShdrConnection(
            first.host,
            first.port,
            parser,
            sink,
            legacy_timeout_s=first.config.legacy_timeout_s,
            backoff=Backoff(0.5, 30.0),
            encoding=first.config.encoding,
        )

    def stop(self) -> None:
        """Ask :meth:`run` to finish (flush batches, announce shutdown, close)."""
        self._stopping.set()

    async def run(self) -> None:
        """Run every task until :meth:`stop` (or cancellation), then shut down cleanly."""
        log.info(
            "gateway %s: %d machines, %d adapter connections, %d messages waiting on disk",
            self.config.name,
            len(self.machines),
            len(self.connections),
            len(self.store),
        )
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(c.run(), name=f"shdr {c.label}") for c in self.connections]
                for m in self.machines:
                    key = m.state.key
                    tasks.append(tg.create_task(m.pipeline.run(), name=f"pipeline {key}"))
                    tasks.append(tg.create_task(m.publisher.run(), name=f"publisher {key}"))
                tasks.append(tg.create_task(self._report(), name="stats"))
                await self._stopping.wait()
                for m in self.machines:
                    m.pipeline.flush()
                    await m.publisher.stop()
                for t in tasks:
                    t.cancel()
        finally:
            for m in self.machines:
                with contextlib.suppress(Exception):  # best effort at shutdown
                    m.pipeline.flush()
            self.store.close()

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(60)
            for c in self.connections:
                log.info(
                    "shdr %s: %s, lag %.2f s (%d KiB unread)",
                    c.label,
                    c.parser.stats,
                    c.lag_s,
                    c.backlog_bytes // 1024,
                )
            for m in self.machines:
                log.info(
                    "machine %s: session %s, %s, %s, waiting on disk %d",
                    m.state.key,
                    m.state.session,
                    m.pipeline.stats,
                    m.publisher.stats,
                    self.store.count(m.state.key),
                )
