"""An MTConnect SHDR adapter simulator: the same machine model, served as SHDR over TCP.

- :func:`devices_xml` writes the Devices.xml whose DataItem ids are exactly the SHDR keys sent.
- :class:`ShdrLines` turns fleet ticks into SHDR lines: a full snapshot for a new reader, then
  changes only (by exception), timestamped in simulated time (UTC, ms). Several machines on one
  adapter use the multi-device form ``device:key``.
- :class:`ShdrServer` (asyncio) serves the lines to every connected reader, answers ``* PING``
  with ``* PONG <ms>``, and can write what it serves to a capture file.
- :func:`replay_capture` serves a recorded capture at its original pace, ``speedup`` times
  faster, or as fast as possible (``speedup`` 0).
"""

from __future__ import annotations

__all__ = [
    "PONG_MS",
    "ShdrLines",
    "ShdrServer",
    "devices_xml",
    "read_capture",
    "replay_capture",
    "run_fleet_adapter",
]

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from simulators.errors import CaptureError
from simulators.model import (
    EXECUTION_VALUES,
    FUNCTIONAL_MODE_VALUES,
    MODE_VALUES,
    Fleet,
    StepReport,
)
from simulators.model import SIGNALS as _SIGNALS
from simulators.truth import Truth, iso_ms

logger = logging.getLogger(__name__)

#: Heartbeat promised in ``* PONG``: the reader may drop us after this many ms of silence.
PONG_MS = 10000

# SHDR key -> (DataItem type, subType, category, component) for the event keys.
_EVENT_KEYS: dict[str, tuple[str, str | None, str]] = {
    "avail": ("AVAILABILITY", None, "EVENT"),
    "estop": ("EMERGENCY_STOP", None, "EVENT"),
    "mode": ("CONTROLLER_MODE", None, "EVENT"),
    "exec": ("EXECUTION", None, "EVENT"),
    "fmode": ("FUNCTIONAL_MODE", None, "EVENT"),
    "program": ("PROGRAM", None, "EVENT"),
    "part_count": ("PART_COUNT", "ALL", "EVENT"),
    "part_count_bad": ("PART_COUNT", "BAD", "EVENT"),
    "tool": ("TOOL_NUMBER", None, "EVENT"),
}
# SHDR key of each sampled model column (SIGNALS order); None = not served.
_SAMPLE_KEYS = ("Srpm", "Sload", "Sovr", "path_feedrate", "Fovr", None, "Xact", "Yact", "Zact",
                "Aact", "Cact")  # fmt: skip
_COND_KEYS = {"controller": "system", "coolant": "coolant_cond", "spindle": "Scond", "x": "Xcond",
              "y": "Ycond", "z": "Zcond"}  # fmt: skip


def _cond_key(component: str, axes: tuple[str, ...]) -> str:
    """SHDR condition key of an alarm's component (``system`` for an axis the machine lacks)."""
    if len(component) == 1 and component not in axes:
        return "system"
    return _COND_KEYS.get(component, "system")


def _item(did: str, typ: str, sub: str | None, cat: str, units: str | None = None) -> str:
    attrs = (
        f"id={quoteattr(did)} name={quoteattr(did)} type={quoteattr(typ)} category={quoteattr(cat)}"
    )
    if sub:
        attrs += f" subType={quoteattr(sub)}"
    if units:
        attrs += f" units={quoteattr(units)}"
    return f"<DataItem {attrs}/>"


def devices_xml(fleet: Fleet, machines: list[int]) -> str:
    """MTConnect Devices document for ``machines``; DataItem ids equal the SHDR keys (prefixed
    ``<device>_`` ids are not used: each device has its own ids, keys are ``device:key``)."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<MTConnectDevices xmlns="urn:mtconnect.org:MTConnectDevices:2.0">',
           '<Header creationTime="2025-01-01T00:00:00Z" sender="arbor-sim" instanceId="1" '
           'version="2.0" assetBufferSize="0" assetCount="0" bufferSize="131072"/>',
           "<Devices>"]  # fmt: skip
    for m in machines:
        kind = fleet.kinds[m]
        name = fleet.factory.machines[m].machine_id
        out.append(f"<Device id={quoteattr(name)} name={quoteattr(name)} uuid="
                   f"{quoteattr(fleet.factory.site + '.' + name)}>")  # fmt: skip
        out.append(f"<Description manufacturer=\"i5\" model={quoteattr(kind.model)}>"
                   f"{escape(kind.controller_kind)}</Description>")  # fmt: skip
        out.append("<DataItems>" + _item("avail", "AVAILABILITY", None, "EVENT") + "</DataItems>")
        out.append('<Components><Axes id="ax" name="base"><Components>')
        for ax in kind.axes:
            lin = ax in "xyz"
            comp = "Linear" if lin else "Rotary"
            key = f"{ax.upper()}act"
            typ = "POSITION" if lin else "ANGLE"
            units = "MILLIMETER" if lin else "DEGREE"
            items = _item(key, typ, "ACTUAL", "SAMPLE", units)
            if ax in _COND_KEYS:
                items += _item(_COND_KEYS[ax], "ACTUATOR", None, "CONDITION")
            out.append(f"<{comp} id={quoteattr(ax)} name={quoteattr(ax.upper())}><DataItems>"
                       f"{items}</DataItems></{comp}>")  # fmt: skip
        out.append(
            '<Rotary id="s" name="S"><DataItems>'
            + _item("Srpm", "ROTARY_VELOCITY", "ACTUAL", "SAMPLE", "REVOLUTION/MINUTE")
            + _item("Sload", "LOAD", None, "SAMPLE", "PERCENT")
            + _item("Sovr", "ROTARY_VELOCITY_OVERRIDE", None, "EVENT")
            + _item("Scond", "SYSTEM", None, "CONDITION")
            + "</DataItems></Rotary>"
        )
        out.append("</Components></Axes>")
        path_items = "".join(_item(k, t, s, c) for k, (t, s, c) in _EVENT_KEYS.items()
                             if k not in ("avail", "estop"))  # fmt: skip
        path_items += _item("path_feedrate", "PATH_FEEDRATE", "ACTUAL", "SAMPLE",
                            "MILLIMETER/SECOND")  # fmt: skip
        path_items += _item("Fovr", "PATH_FEEDRATE_OVERRIDE", "PROGRAMMED", "EVENT")
        out.append(
            '<Controller id="ctl" name="controller"><DataItems>'
            + _item("estop", "EMERGENCY_STOP", None, "EVENT")
            + _item("system", "SYSTEM", None, "CONDITION")
            + _item("coolant_cond", "SYSTEM", None, "CONDITION")
            + '</DataItems><Components><Path id="path" name="path"><DataItems>'
            + path_items
            + "</DataItems></Path></Components></Controller>"
        )
        out.append("</Components></Device>")
    out.append("</Devices></MTConnectDevices>")
    return "\n".join(out) + "\n"


class ShdrLines:
    """SHDR lines of some machines of a fleet, tick by tick.

    Feed rate is served in mm/s (MTConnect's unit); the model's mm/min is divided by 60.
    """

    def __init__(self, fleet: Fleet, machines: list[int], decimals: int = 3) -> None:
        self.fleet = fleet
        self.machines = machines
        self.multi = len(machines) > 1
        self.decimals = decimals
        self._last: dict[tuple[int, str], str] = {}
        self._active: dict[int, dict[str, tuple[str, str, str]]] = {m: {} for m in machines}
        self._sample = np.zeros((fleet.n, len(_SIGNALS)))
        #: Time of the tick whose values are held (``None`` before the first :meth:`step`).
        self.t_values: float | None = None

    def _key(self, m: int, key: str) -> str:
        return f"{self.fleet.factory.machines[m].machine_id}:{key}" if self.multi else key

    def _values(self, m: int) -> dict[str, str]:
        f = self.fleet
        off = f.phase[m] == 0
        vals: dict[str, str] = {
            "avail": "UNAVAILABLE" if off else "AVAILABLE",
            "estop": "UNAVAILABLE" if off else ("TRIGGERED" if f.estop[m] else "ARMED"),
            "mode": MODE_VALUES[f.mode[m]],
            "exec": EXECUTION_VALUES[f.execution[m]],
            "fmode": FUNCTIONAL_MODE_VALUES[f.functional[m]],
            "program": "UNAVAILABLE" if off else f.program_names[f.prog[m]],
            "part_count": "UNAVAILABLE" if off else str(int(f.part_count[m])),
            "part_count_bad": "UNAVAILABLE" if off else str(int(f.part_bad[m])),
            "tool": "UNAVAILABLE" if off else str(int(f.tool[m])),
        }
        row = self._sample[m]
        axes = f.kinds[m].axes
        for col, key in enumerate(_SAMPLE_KEYS):
            if key is None or (key.endswith("act") and key[0].lower() not in axes):
                continue
            v = row[col] / 60.0 if key == "path_feedrate" else row[col]
            vals[key] = "UNAVAILABLE" if off else f"{round(float(v), self.decimals):g}"
        return vals

    def snapshot(self) -> list[str]:
        """Every current value and active condition (for a reader that just connected).

        Stamped with the time of the values it holds: the last tick served (before the first
        tick, one tick before the start). The next tick's lines carry a later timestamp, so a
        reader never gets two values of one key at one instant.
        """
        t = self.t_values if self.t_values is not None else self.fleet.time - self.fleet.dt
        ts = iso_ms(t)
        lines = []
        for m in self.machines:
            pairs = "".join(f"|{self._key(m, k)}|{v}" for k, v in self._values(m).items())
            lines.append(ts + pairs)
            axes = self.fleet.kinds[m].axes
            ckeys = sorted({v for c, v in _COND_KEYS.items() if len(c) > 1 or c in axes})
            active = list(self._active[m].values())
            for ckey in ckeys:
                mine = [a for a in active if a[0] == ckey]
                if not mine:
                    lines.append(f"{ts}|{self._key(m, ckey)}|NORMAL||||")
                for _, level, code_text in mine:
                    code, text = code_text.split("\x00")
                    lines.append(f"{ts}|{self._key(m, ckey)}|{level}|{code}|||{text}")
        return lines

    def step(self, rep: StepReport) -> list[str]:
        """Lines for tick ``rep``: changed values (one line per machine) and condition changes."""
        f = self.fleet
        f.sample(self._sample)
        self.t_values = rep.t
        ts = iso_ms(rep.t)
        lines = []
        mine = set(self.machines)
        for a in rep.alarms:
            if a.machine not in mine:
                continue
            ckey = _cond_key(a.spec.component, self.fleet.kinds[a.machine].axes)
            k = self._key(a.machine, ckey)
            if a.active:
                entry = (ckey, a.spec.level, f"{a.spec.code}\x00{a.spec.text}")
                self._active[a.machine][a.spec.code] = entry
                lines.append(f"{ts}|{k}|{a.spec.level}|{a.spec.code}|||{a.spec.text}")
            else:
                self._active[a.machine].pop(a.spec.code, None)
                lines.append(f"{ts}|{k}|NORMAL|{a.spec.code}|||")
        for m in self.machines:
            pairs = []
            for k, v in self._values(m).items():
                if self._last.get((m, k)) != v:
                    self._last[(m, k)] = v
                    pairs.append(f"|{self._key(m, k)}|{v}")
            if pairs:
                lines.append(ts + "".join(pairs))
        return lines


class ShdrServer:
    """Serves SHDR lines to every connected reader (asyncio). Use as ``async with``.

    ``snapshot`` is called for each new reader (the lines that bring it up to date); ``record``
    (an open text file) receives every broadcast line. ``port`` 0 picks a free port
    (:attr:`port` after start). ``linger_s`` > 0: on exit, end each stream with a FIN and give
    readers that long to read what is still in flight (SHDR has no replay: closing at once
    resets the connection, and the kernel drops whatever a lagging reader had not read yet).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 7878,
        *,
        snapshot: Callable[[], list[str]] | None = None,
        record: IO[str] | None = None,
        pong_ms: int = PONG_MS,
        linger_s: float = 0.0,
    ) -> None:
        self.host = host
        self.port = port
        self.snapshot = snapshot
        self.record = record
        self.pong_ms = pong_ms
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.lines_sent = 0
        self.linger_s = linger_s
        self._ending = False

    async def __aenter__(self) -> ShdrServer:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        if self.linger_s > 0 and self._tasks:
            self._ending = True
            for w in list(self._writers):
                if not w.is_closing() and w.can_write_eof():
                    with contextlib.suppress(OSError, RuntimeError):
                        w.write_eof()
            # A reader that has read everything sees the EOF and closes: its task ends.
            await asyncio.wait(list(self._tasks), timeout=self.linger_s)
        for w in list(self._writers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await self._server.wait_closed()

    @property
    def readers(self) -> int:
        """Readers connected now."""
        return len(self._writers)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        logger.info("SHDR reader connected: %s", peer)
        head = ["* adapterVersion: 2.0", "* shdrVersion: 2.0"]
        body = self.snapshot() if self.snapshot else []
        writer.write(("\n".join([*head, *body]) + "\n").encode())
        self._writers.add(writer)
        try:
            while True:
                raw = await reader.readline()
                if not raw:
                    break
                cmd = raw.decode("utf-8", "replace").strip()
                if cmd.replace(" ", "").upper() == "*PING" and not self._ending:
                    writer.write(f"* PONG {self.pong_ms}\n".encode())
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()
            logger.info("SHDR reader gone: %s", peer)

    async def broadcast(self, lines: list[str]) -> None:
        """Send ``lines`` to every reader (a slow reader is waited for: no line is dropped)."""
        if not lines:
            return
        data = ("\n".join(lines) + "\n").encode()
        if self.record is not None:
            self.record.write(data.decode())
        self.lines_sent += len(lines)
        for w in list(self._writers):
            if w.is_closing():
                self._writers.discard(w)
                continue
            w.write(data)
            with contextlib.suppress(ConnectionError):
                await w.drain()


async def run_fleet_adapter(
    fleet: Fleet,
    machines: list[int],
    server: ShdrServer,
    *,
    duration_s: float,
    speedup: float,
    truth: Truth | None = None,
    lines: ShdrLines | None = None,
) -> int:
    """Step ``fleet`` and serve the lines of ``machines`` on ``server``; returns ticks run.

    The server's ``snapshot`` should be ``lines.snapshot`` of the same :class:`ShdrLines`.
    """
    gen = lines or ShdrLines(fleet, machines)
    if server.snapshot is None:
        server.snapshot = gen.snapshot
    dt = fleet.dt
    n_ticks = math.inf if math.isinf(duration_s) else round(duration_s / dt)
    paced = speedup > 0 and not math.isinf(speedup)
    loop = asyncio.get_running_loop()
    w0 = loop.time()
    k = 0
    while k < n_ticks:
        if paced:
            delay = w0 + k * dt / speedup - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        elif k % 100 == 0:
            await asyncio.sleep(0)
        rep = fleet.step()
        if truth is not None:
            truth.observe(fleet, rep)
        await server.broadcast(gen.step(rep))
        k += 1
    return k


def read_capture(path: str | Path) -> list[tuple[float | None, str]]:
    """Lines of an SHDR capture with their timestamps (epoch s; ``None`` when a line has none).

    Command lines (``*``) and stray lines are kept with ``None`` and replayed as they come.
    """
    from protocol import parse_timestamp

    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CaptureError(f"cannot read capture {path}: {exc}") from exc
    out: list[tuple[float | None, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        head = line.split("|", 1)[0]
        ts: float | None = None
        if head and "|" in line:
            stamp = head if head.endswith("Z") or "+" in head[10:] else head + "Z"
            try:
                ts = parse_timestamp(stamp).timestamp()
            except ValueError:
                ts = None
        out.append((ts, line))
    return out


async def replay_capture(
    path: str | Path, server: ShdrServer, *, speedup: float = 1.0, loops: int = 1
) -> int:
    """Serve a recorded capture: original pace (``speedup`` 1), faster, or at once (0).

    Timestamps are sent as recorded. Returns the number of lines sent.
    """
    entries = read_capture(path)
    sent = 0
    for _ in range(loops):
        first: float | None = None
        wall0 = time.monotonic()
        for ts, line in entries:
            if ts is not None and speedup > 0:
                if first is None:
                    first = ts
                delay = wall0 + (ts - first) / speedup - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await server.broadcast([line])
            sent += 1
    return sent
