"""Downlink: ``cmd/*`` for one machine, answered on ``reply/*``.

* ``cmd/program``: an NC program in chunks (:mod:`protocol.program`). Every chunk is answered
  ``{"received": index}``; after the last one the program is checked (size, SHA-256), written to
  the machine's ``program_dir`` (the controller's DNC share, or a simulator's program folder)
  atomically (temporary file, fsync, rename) and answered ``{"complete": true, ...}``. Errors are
  precise: ``bad_request`` (undecodable command), ``checksum_mismatch``, ``busy`` (too many
  transfers at once), ``rejected`` (no program target configured), ``storage_full`` (ENOSPC),
  ``internal``.
* ``cmd/rebirth``: publish the birth status again and a snapshot of every event signal.
* anything else: ``unknown_command``.

Replies are published directly (QoS 1), not through the disk queue: an answer to a command is
only useful to a sender still waiting for it.
"""

from __future__ import annotations

__all__ = ["Downlink", "DownlinkStats"]

import asyncio
import errno
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from gateway.pipeline import MachinePipeline
from gateway.publisher import MachinePublisher
from protocol import (
    Channel,
    PayloadError,
    ProgramArgs,
    ProgramCommand,
    RebirthCommand,
    Reply,
    ReplyError,
    TopicError,
    decode,
    encode,
    parse_topic,
    reply_topic,
)
from protocol.program import assemble_program

log = logging.getLogger(__name__)

MAX_TRANSFERS = 4
TRANSFER_TIMEOUT_S = 600.0


@dataclass(slots=True)
class DownlinkStats:
    """Counters of one machine's downlink."""

    commands: int = 0
    bad_commands: int = 0
    programs_written: int = 0
    program_errors: int = 0
    rebirths: int = 0


@dataclass(slots=True)
class _Transfer:
    started: float
    chunks: dict[int, ProgramArgs] = field(default_factory=dict)


class Downlink:
    """Handles the commands of one machine."""

    def __init__(
        self,
        publisher: MachinePublisher,
        pipeline: MachinePipeline,
        program_dir: Path | None,
    ) -> None:
        self.publisher = publisher
        self.pipeline = pipeline
        self.program_dir = program_dir
        self.state = publisher.state
        self.stats = DownlinkStats()
        self._transfers: dict[tuple[str, str, str], _Transfer] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def handle(self, topic: str, payload: bytes) -> None:
        """Dispatch one ``cmd/*`` message (called on the event loop)."""
        self.stats.commands += 1
        key = self.state.key
        try:
            parsed = parse_topic(topic)
        except TopicError as exc:
            self.stats.bad_commands += 1
            log.warning("downlink %s topic %s: %s", key, topic, exc)
            return
        if parsed.channel is not Channel.CMD or parsed.command is None:
            return
        name = parsed.command
        try:
            command = decode(topic, payload)
        except PayloadError as exc:
            self.stats.bad_commands += 1
            log.warning("downlink %s topic %s: bad command: %s", key, topic, exc)
            request_id = _request_id(payload)
            if request_id is not None:
                self._reply(name, request_id, error=("bad_request", str(exc)[:1000]))
            return
        if isinstance(command, ProgramCommand):
            self._program(command)
        elif isinstance(command, RebirthCommand):
            self.stats.rebirths += 1
            self.publisher.rebirth()
            self.pipeline.store_snapshot()
            self._reply(name, command.id, result={"session": self.state.session})
        else:
            request_id = getattr(command, "id", None)
            if isinstance(request_id, str):
                self._reply(
                    name, request_id, error=("unknown_command", f"this gateway has no {name!r}")
                )

    # -- program download ----------------------------------------------------------------------

    def _program(self, command: ProgramCommand) -> None:
        args = command.args
        now = time.monotonic()
        for k in [k for k, t in self._transfers.items() if now - t.started > TRANSFER_TIMEOUT_S]:
            del self._transfers[k]
        tkey = (args.name, args.version, args.sha256)
        transfer = self._transfers.get(tkey)
        if transfer is None:
            if len(self._transfers) >= MAX_TRANSFERS:
                self._reply("program", command.id, error=("busy", "too many transfers at once"))
                return
            transfer = self._transfers[tkey] = _Transfer(now)
        transfer.chunks[args.chunk_index] = args
        if len(transfer.chunks) < args.chunk_count:
            self._reply("program", command.id, result={"received": args.chunk_index})
            return
        del self._transfers[tkey]
        try:
            data = assemble_program(transfer.chunks.values())
        except PayloadError as exc:
            self.stats.program_errors += 1
            code = (
                "checksum_mismatch"
                if "SHA-256" in str(exc) or "bytes" in str(exc)
                else ("bad_request")
            )
            self._reply("program", command.id, error=(code, str(exc)))
            return
        task = asyncio.get_running_loop().create_task(
            self._write(command.id, args, data), name=f"program {self.state.key}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, request_id: str, args: ProgramArgs, data: bytes) -> None:
        if self.program_dir is None:
            self.stats.program_errors += 1
            self._reply(
                "program",
                request_id,
                error=(
                    "rejected",
                    "no program target (program_dir) is configured for this machine",
                ),
            )
            return
        target = self.program_dir / args.name
        try:
            await asyncio.to_thread(_write_atomically, target, data)
        except OSError as exc:
            self.stats.program_errors += 1
            code = "storage_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "internal"
            self._reply("program", request_id, error=(code, f"cannot write {target}: {exc}"))
            return
        self.stats.programs_written += 1
        log.info(
            "downlink %s: program %s %s written to %s",
            self.state.key,
            args.name,
            args.version,
            target,
        )
        self._reply(
            "program",
            request_id,
            result={
                "complete": True,
                "name": args.name,
                "version": args.version,
                "sha256": args.sha256,
                "size": len(data),
                "path": str(target),
            },
        )

    def _reply(
        self,
        name: str,
        request_id: str,
        *,
        result: dict[str, Any] | None = None,
        error: tuple[str, str] | None = None,
    ) -> None:
        reply = Reply(
            id=request_id,
            ts=datetime.now(UTC),
            ok=error is None,
            error=ReplyError(code=error[0], message=error[1]) if error else None,
            result=result,
        )
        topic = reply_topic(self.state.site, self.state.machine, name)
        if not self.publisher.publish_now(topic, encode(reply)):
            log.warning(
                "downlink %s: offline, reply to %s %s not sent", self.state.key, name, request_id
            )


def _write_atomically(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _request_id(payload: bytes) -> str | None:
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    value = data.get("id") if isinstance(data, dict) else None
    if isinstance(value, str) and 0 < len(value) <= 128 and value[0].isalnum():
        return value
    return None
