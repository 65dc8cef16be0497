"""The simulated i5's downlink: ``cmd/program`` and ``cmd/rebirth``, answered on ``reply/*``
(docs/protocol.md), so "push a program to a machine, see the reply" works against the simulated
factory.

* ``cmd/program``: chunks (:mod:`protocol.program`) collected per machine by (name, version,
  sha256); each answered ``{"received": i}``; after the last one the program is checked (size,
  SHA-256) and answered ``{"received": i, "complete": true, "name", "version", "sha256",
  "size"}`` or ``checksum_mismatch``. Accepted programs are kept in :attr:`I5Downlink.programs`
  (the controller's memory) and, with ``program_dir``, written to ``program_dir/<machine>/<name>``.
  More than 4 transfers at once per machine: ``busy``. An undecodable command whose ``id`` can be
  read: ``bad_request``.
* ``cmd/rebirth``: the birth status and a full snapshot again (same session); answered
  ``{"session": ...}``; a machine that is off answers ``rejected``.
* anything else: ``unknown_command``.

Replies are QoS 1 on the machine's own connection.
"""

from __future__ import annotations

__all__ = ["I5Downlink"]

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

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
from simulators.controllers import I5Controllers, Sink

logger = logging.getLogger(__name__)

MAX_TRANSFERS = 4
TRANSFER_TIMEOUT_S = 600.0


class I5Downlink:
    """Commands for every machine of a fleet; ``handle`` is the transport's ``on_command``."""

    def __init__(
        self, controllers: I5Controllers, sink: Sink, program_dir: Path | None = None
    ) -> None:
        self.controllers = controllers
        self.sink = sink
        self.program_dir = program_dir
        self.site = controllers.fleet.factory.site
        self.index = {m.machine_id: i for i, m in enumerate(controllers.fleet.factory.machines)}
        self.programs: dict[tuple[str, str], bytes] = {}  # (machine, program name) -> text
        self.commands = 0
        self.errors = 0
        self._transfers: dict[tuple[str, str, str, str], tuple[float, dict[int, ProgramArgs]]] = {}

    def handle(self, topic: str, payload: bytes) -> None:
        """Dispatch one ``cmd/*`` message."""
        self.commands += 1
        try:
            parsed = parse_topic(topic)
        except TopicError as exc:
            logger.warning("downlink: bad topic %s: %s", topic, exc)
            return
        machine = parsed.machine or ""
        m = self.index.get(machine)
        if parsed.channel is not Channel.CMD or parsed.command is None or m is None:
            return
        name = parsed.command
        try:
            command = decode(topic, payload)
        except PayloadError as exc:
            self.errors += 1
            request_id = _request_id(payload)
            if request_id is not None:
                self._reply(m, name, request_id, error=("bad_request", str(exc)[:1000]))
            return
        if isinstance(command, ProgramCommand):
            self._program(m, machine, command)
        elif isinstance(command, RebirthCommand):
            if self.controllers.republish(m):
                result = {"session": self.controllers.session[m]}
                self._reply(m, name, command.id, result=result)
            else:
                self._reply(m, name, command.id, error=("rejected", "the machine is off"))
        else:
            request_id = getattr(command, "id", None)
            if isinstance(request_id, str):
                self._reply(
                    m, name, request_id, error=("unknown_command", f"an i5 has no {name!r}")
                )

    def _program(self, m: int, machine: str, command: ProgramCommand) -> None:
        args = command.args
        now = time.monotonic()
        for k in [k for k, (t, _) in self._transfers.items() if now - t > TRANSFER_TIMEOUT_S]:
            del self._transfers[k]
        key = (machine, args.name, args.version, args.sha256)
        if key not in self._transfers:
            if sum(1 for k in self._transfers if k[0] == machine) >= MAX_TRANSFERS:
                self._reply(m, "program", command.id, error=("busy", "too many transfers"))
                return
            self._transfers[key] = (now, {})
        chunks = self._transfers[key][1]
        chunks[args.chunk_index] = args
        if len(chunks) < args.chunk_count:
            self._reply(m, "program", command.id, result={"received": args.chunk_index})
            return
        del self._transfers[key]
        try:
            data = assemble_program(chunks.values())
        except PayloadError as exc:
            self.errors += 1
            code = (
                "checksum_mismatch"
                if "SHA-256" in str(exc) or "bytes" in str(exc)
                else ("bad_request")
            )
            self._reply(m, "program", command.id, error=(code, str(exc)))
            return
        self.programs[(machine, args.name)] = data
        result: dict[str, Any] = {
            "received": args.chunk_index, "complete": True, "name": args.name,
            "version": args.version, "sha256": args.sha256, "size": len(data),
        }  # fmt: skip
        if self.program_dir is not None:
            target = self.program_dir / machine / args.name
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.partial")
                tmp.write_bytes(data)
                tmp.replace(target)
            except OSError as exc:
                self.errors += 1
                self._reply(m, "program", command.id, error=("internal", f"cannot write: {exc}"))
                return
            result["path"] = str(target)
        logger.info("downlink %s: program %s %s (%d bytes) accepted", machine, args.name,
                    args.version, len(data))  # fmt: skip
        self._reply(m, "program", command.id, result=result)

    def _reply(
        self,
        m: int,
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
        machine = self.controllers.fleet.factory.machines[m].machine_id
        self.sink.publish(m, reply_topic(self.site, machine, name), encode(reply), False)


def _request_id(payload: bytes) -> str | None:
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    value = data.get("id") if isinstance(data, dict) else None
    if isinstance(value, str) and 0 < len(value) <= 128 and value[0].isalnum():
        return value
    return None
