"""MTConnect SHDR: a lenient line parser and an asyncio adapter connection.

:class:`ShdrParser` turns text lines into records (pure, no I/O):

* data lines ``ts|key|value|key|value...``, several pairs per line; how many fields follow a key
  depends on its DataItem: CONDITION takes five (``level|native_code|native_severity|qualifier|
  text``), MESSAGE two (``native_code|text``), a TIME_SERIES three (``count|rate|v1 v2 ...``),
  everything else one;
* multi-device prefixes ``device:key``; ``* device: name`` switches the default device;
* assets: ``@ASSET@|id|type|<xml>`` on one line or ``--multiline--TAG`` ... ``--multiline--TAG``,
  ``@UPDATE_ASSET@|id|Element|value...``, ``@REMOVE_ASSET@|id``, ``@REMOVE_ALL_ASSETS@|type``;
* commands ``* name: value`` (with or without spaces), ``* PONG <ms>``.

Leniency (what real adapters need, see docs/gateway.md): CR LF or LF, 0..12 fractional digits,
a missing zone (UTC assumed), an empty timestamp (stamped on arrival), ``<ts>@<duration>``, relative
millisecond timestamps, quoted values and escaped pipes (``\\|``), level words in any case,
missing trailing fields, ``--multiline--`` values of any line, stray non-protocol lines (logger
banners). A key the device model does not declare is logged once and skipped, and the line is
read on from the next declared key. A malformed line is counted and skipped; nothing stops the
stream.

:class:`ShdrConnection` connects to an adapter, sends ``* PING``, keeps the heartbeat the adapter
asks for with ``* PONG <ms>`` (no data for two heartbeats: reconnect), and reconnects with jittered,
capped exponential backoff. Every network await has a deadline.
"""

from __future__ import annotations

__all__ = [
    "AssetChange",
    "Command",
    "Observation",
    "ParserStats",
    "Record",
    "ShdrConnection",
    "ShdrParser",
    "parse_shdr_timestamp",
    "split_fields",
]

import asyncio
import codecs
import contextlib
import fcntl
import functools
import logging
import random
import re
import sys
import termios
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from gateway.errors import ShdrError
from gateway.sources.devices import DataItem, DeviceModel

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Observation:
    """One key's value(s) from a data line. ``ts`` is the source's time (arrival if it had none)."""

    device: DeviceModel
    item: DataItem
    ts: datetime
    arrival: datetime
    fields: tuple[str, ...]
    stamped_on_arrival: bool = False
    converted: bool = False  # the adapter said ``* conversionRequired: no``: values in ``units``


@dataclass(slots=True)
class AssetChange:
    """An asset command: ``add`` (with XML ``body``), ``update`` (``updates`` pairs), ``remove``,
    ``remove_all`` (``asset_type`` set)."""

    device: DeviceModel
    ts: datetime
    arrival: datetime
    action: str
    asset_id: str
    asset_type: str | None = None
    body: str = ""
    updates: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class Command:
    """A ``*`` line: ``name`` lower-cased (``pong``, ``device``, ``adapterversion``) and value."""

    name: str
    value: str


Record = Observation | AssetChange | Command


@dataclass(slots=True)
class ParserStats:
    """Counters of a parser (also the bench's figures)."""

    lines: int = 0
    observations: int = 0
    malformed: int = 0
    unknown_keys: int = 0
    stray: int = 0
    commands: int = 0
    assets: int = 0


_TS_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,12}))?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?",
    re.IGNORECASE,
)
# ``<timestamp>@<duration>``: the agent's observation duration suffix (dropped here).
_DURATION_RE = re.compile(r"@[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
# A bare number instead of a timestamp: milliseconds on the adapter's own clock (relative time).
_RELATIVE_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")


def parse_shdr_timestamp(text: str) -> datetime:
    """An SHDR timestamp as an aware UTC datetime; no zone means UTC; ``ValueError`` if bad."""
    m = _TS_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not an SHDR timestamp: {text[:40]!r}")
    year, month, day, hour, minute, second, frac, zone = m.groups()
    micro = int((frac + "00000")[:6]) if frac else 0
    tz: timezone = UTC
    if zone and zone.upper() != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    value = datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micro, tzinfo=tz
    )
    return value if tz is UTC else value.astimezone(UTC)


def split_fields(line: str) -> list[str]:
    """Split an SHDR line on ``|``.

    A field that starts (after blanks) with ``"`` and whose closing ``"`` is followed by ``|`` or
    the end of the line is quoted: inside it ``\\x`` stands for ``x``, as the MTConnect reference
    agent reads it. Outside quotes ``\\|`` is a pipe inside the value (what MTConnect.NET
    adapters send: they escape pipes without quoting) and every other backslash is text
    (``C:\\NC\\O1234``, ``\\\\server\\share``). A quote that does not close a field
    (``"5" bolt``, ``"open``) is text too.
    """
    if '"' not in line and "\\|" not in line:
        return line.split("|")
    out: list[str] = []
    i, n = 0, len(line)
    while True:
        j = i
        while j < n and line[j] in " \t":
            j += 1
        if j < n and line[j] == '"':
            quoted = _quoted_field(line, j + 1)
            if quoted is not None:
                text, after = quoted
                out.append(text)
                if after >= n:
                    return out
                i = after + 1
                continue
        end = line.find("|", i)
        while end > 0 and line[end - 1] == "\\":  # an escaped pipe: part of the value
            end = line.find("|", end + 1)
        if end < 0:
            out.append(line[i:].replace("\\|", "|"))
            return out
        out.append(line[i:end].replace("\\|", "|"))
        i = end + 1


def _quoted_field(line: str, start: int) -> tuple[str, int] | None:
    """The text of a quoted field opened just before ``start`` and the index of the ``|`` (or the
    end) after its closing quote; ``None`` if it is not a well-formed quoted field."""
    buf: list[str] = []
    k, n = start, len(line)
    while k < n:
        c = line[k]
        if c == "\\" and k + 1 < n:
            buf.append(line[k + 1])
            k += 2
            continue
        if c == "|":  # an unescaped pipe before the closing quote
            return None
        if c == '"':
            m = k + 1
            while m < n and line[m] in " \t":
                m += 1
            if m >= n or line[m] == "|":
                return "".join(buf), m
            return None
        buf.append(c)
        k += 1
    return None


_MULTILINE = "--multiline--"
_MAX_MULTILINE_CHARS = 4 * 1024 * 1024


@dataclass(slots=True)
class _Multiline:
    """A line whose last field is ``--multiline--TAG``: its tokens, waiting for the body."""

    terminator: str
    tokens: list[str]
    arrival: datetime
    first_line: str
    lines: list[str] = field(default_factory=list)
    size: int = 0


# Device model commands of MTConnect.NET adapters (``@DEVICE@|uuid|--multiline--ID`` ...).
_DEVICE_COMMANDS = frozenset({"@DEVICE@", "@REMOVE_DEVICE@", "@REMOVE_ALL_DEVICE@"})

# Condition levels: an undeclared key followed by one of these is an undeclared condition.
_LEVEL_WORDS = frozenset({"NORMAL", "WARNING", "FAULT", "UNAVAILABLE"})


class ShdrParser:
    """Parse SHDR lines of one adapter connection against its device models.

    ``devices`` are the devices this connection serves; unprefixed keys go to the ``* device:``
    chosen by the adapter, else the first device that declares the key.
    ``label`` names the connection in logs.
    """

    def __init__(self, devices: list[DeviceModel], label: str = "shdr") -> None:
        if not devices:
            raise ValueError("an SHDR parser needs at least one device model")
        self.devices = devices
        self.label = label
        self.stats = ParserStats()
        self._by_name = {d.name: d for d in devices}
        for d in devices:
            if d.uuid:
                self._by_name.setdefault(d.uuid, d)
        self._current: DeviceModel | None = devices[0] if len(devices) == 1 else None
        self._unknown_logged: set[tuple[str, str]] = set()
        self._multiline: _Multiline | None = None
        self._last_ts_text = ""
        self._last_ts = datetime.min.replace(tzinfo=UTC)
        self._relative: tuple[datetime, float] | None = None  # (arrival, offset ms) of the first
        self._device_model_logged = False
        self.converted = False  # ``* conversionRequired: no`` from the adapter

    # -- public -----------------------------------------------------------------------------

    def feed(self, line: str, arrival: datetime) -> list[Record]:
        """Parse one line (with or without its line ending); never raises on bad input."""
        self.stats.lines += 1
        line = line.rstrip("\r\n")
        if line[:1] == "\ufeff":  # a byte order mark before the first line
            line = line[1:]
        try:
            if self._multiline is not None:
                return self._feed_multiline(line)
            if not line.strip():
                return []
            if line[0] == "*" or (line[0] in " \t" and line.lstrip()[:1] == "*"):
                return self._command(line.lstrip())
            return self._data(split_fields(line), line, arrival)
        except (ValueError, IndexError, OverflowError) as exc:  # defensive: a line not foreseen
            self._malformed(line, str(exc) or type(exc).__name__)
            return []

    def reset(self) -> None:
        """Forget what belongs to one connection (a multiline body in progress, the relative
        time base); called when the adapter connection is made again."""
        if self._multiline is not None:
            self._malformed(self._multiline.first_line, "multiline value cut off by a reconnect")
        self._multiline = None
        self._relative = None
        self.converted = False

    # -- internals --------------------------------------------------------------------------

    def _malformed(self, line: str, why: str) -> None:
        self.stats.malformed += 1
        if self.stats.malformed <= 20 or self.stats.malformed % 1000 == 0:
            log.warning(
                "shdr %s: malformed line skipped (%s, %d so far): %.120r",
                self.label,
                why,
                self.stats.malformed,
                line,
            )

    def _command(self, line: str) -> list[Record]:
        self.stats.commands += 1
        body = line[1:].strip()
        upper = body.upper()
        if upper.startswith("PONG"):
            return [Command("pong", body[4:].lstrip(" :").strip())]
        if upper.startswith("PING"):
            return [Command("ping", body[4:].lstrip(" :").strip())]
        name, _, value = body.partition(":")
        command = Command(name.strip().lower(), value.strip())
        if command.name == "conversionrequired":
            self.converted = command.value.lower() in ("no", "false", "0", "n")
        if command.name == "device":
            device = self._by_name.get(command.value)
            if device is None:
                log.warning("shdr %s: adapter names unknown device %r", self.label, command.value)
            else:
                self._current = device
        return [command]

    def _timestamp(self, text: str, arrival: datetime) -> datetime:
        if text == self._last_ts_text:
            return self._last_ts
        bare = text
        if "@" in bare:
            duration = _DURATION_RE.search(bare)
            if duration is not None and duration.end() == len(bare):
                bare = bare[: duration.start()].strip()
        relative = bare[4:5] != "-" and _RELATIVE_RE.fullmatch(bare) is not None
        if relative:  # milliseconds since some point of the adapter's own
            offset = float(bare)
            if self._relative is None:
                self._relative = (arrival, offset)
            base, first = self._relative
            # not cached: after a reconnect the same text means another time
            return base + timedelta(milliseconds=offset - first)
        ts = parse_shdr_timestamp(bare)
        self._last_ts_text, self._last_ts = text, ts
        return ts

    def _resolve(self, key: str) -> tuple[DeviceModel | None, DataItem | None, str]:
        device: DeviceModel | None = None
        if ":" in key:
            prefix, _, rest = key.partition(":")
            found = self._by_name.get(prefix)
            if found is not None:
                device, key = found, rest.strip()
        if device is None:
            device = self._current
        if device is not None:
            return device, device.lookup(key), key
        for d in self.devices:
            item = d.lookup(key)
            if item is not None:
                return d, item, key
        return None, None, key

    def _unknown(self, device: DeviceModel | None, key: str) -> None:
        self.stats.unknown_keys += 1
        name = device.name if device is not None else "?"
        if (name, key) not in self._unknown_logged and len(self._unknown_logged) < 10_000:
            self._unknown_logged.add((name, key))
            log.warning(
                "shdr %s: key %r is not declared by device %s; skipped (logged once)",
                self.label,
                key,
                name,
            )

    def _known(self, token: str) -> bool:
        key = token.strip()
        return bool(key) and self._resolve(key)[1] is not None

    def _skip_unknown(self, tokens: list[str], i: int) -> int:
        """Where to go on after the undeclared key at ``i``: usually past its one value
        (``key|value``), but an undeclared condition (five fields) or message (two) would turn
        its fields into keys and misplace the rest of the line; so look at where the next
        declared key is: an even distance reads on pairwise (undeclared keys in between are
        counted and logged), six after a level word is a condition, anything else resyncs."""
        n, nxt = len(tokens), i + 2
        level = i + 1 < n and tokens[i + 1].strip().upper() in _LEVEL_WORDS
        for j in range(nxt, n):
            if self._known(tokens[j]):
                if (j - i) % 2 == 1 or (level and j - i == 6):
                    return j
                return nxt
        return n if level else nxt

    def _data(self, tokens: list[str], line: str, arrival: datetime) -> list[Record]:
        if len(tokens) < 2:
            self.stats.stray += 1
            if self.stats.stray <= 5:
                log.info("shdr %s: non-protocol line ignored: %.120r", self.label, line)
            return []
        head = tokens[0]
        if "@" in head and len(head := head.strip()) > 2 and head[0] == "@" and head[-1] == "@":
            tokens = ["", *tokens]  # ``@ASSET@|...`` with no timestamp field (MTConnect.NET)
        last = tokens[-1]
        if (
            _MULTILINE in last
            and (last := last.strip()).startswith(_MULTILINE)
            and last != _MULTILINE
        ):
            # the value follows on the next lines, up to a line that repeats the marker
            self._multiline = _Multiline(last, tokens[:-1], arrival, line)
            return []
        ts_text = tokens[0].strip()
        if ts_text.startswith("@") and _DURATION_RE.fullmatch(ts_text):
            ts_text = ""  # ``@<duration>`` alone: no timestamp (MTConnect.NET adapters)
        on_arrival = ts_text == ""
        if on_arrival:
            ts = arrival
        else:
            try:
                ts = self._timestamp(ts_text, arrival)
            except (ValueError, OverflowError):
                self._malformed(line, "bad timestamp")
                return []
        first = tokens[1]
        if "@" in first and len(first := first.strip()) > 2 and first[0] == first[-1] == "@":
            return self._asset(tokens, ts, arrival, line)
        out: list[Record] = []
        i, n = 1, len(tokens)
        while i < n:
            key = tokens[i].strip()
            if not key:
                if i == n - 1:  # a trailing pipe
                    break
                self._malformed(line, f"empty key at field {i}")
                i += 2
                continue
            device, item, _bare = self._resolve(key)
            if item is None or device is None:
                self._unknown(device, key)
                i = self._skip_unknown(tokens, i)
                continue
            arity = item.arity
            values = tokens[i + 1 : i + 1 + arity]
            if len(values) < arity:
                if arity > 1 and values:  # a condition/message missing its trailing fields
                    values = values + [""] * (arity - len(values))
                elif arity == 1 and not values:
                    values = [""]
                else:
                    self._malformed(line, f"{key}: expected {arity} fields, got {len(values)}")
                    break
            i += 1 + arity
            if arity in (2, 5) and i < n and not self._known(tokens[i]):
                # a MESSAGE's or CONDITION's text with an unescaped pipe in it: the text runs on
                # up to the next declared key (the reference agent drops the rest of the line)
                j = i + 1
                while j < n and not self._known(tokens[j]):
                    j += 1
                more = tokens[i:j]
                while more and not more[-1].strip():  # trailing pipes are not text
                    more.pop()
                if more:
                    values[-1] = "|".join([values[-1], *more])
                i = j
            out.append(
                Observation(device, item, ts, arrival, tuple(values), on_arrival, self.converted)
            )
            self.stats.observations += 1
        return out

    def _asset_device(self, asset_id: str) -> tuple[DeviceModel | None, str]:
        if ":" in asset_id:
            prefix, _, rest = asset_id.partition(":")
            found = self._by_name.get(prefix)
            if found is not None:
                return found, rest
        return self._current or self.devices[0], asset_id

    def _asset(self, tokens: list[str], ts: datetime, arrival: datetime, line: str) -> list[Record]:
        command = tokens[1].strip().upper()
        if command in _DEVICE_COMMANDS:
            self.stats.commands += 1
            if not self._device_model_logged:
                self._device_model_logged = True
                log.info(
                    "shdr %s: the adapter sends its device model (%s); ignored: the gateway maps "
                    "keys with its own Devices.xml (logged once)",
                    self.label,
                    command,
                )
            return []
        asset_arg = tokens[2].strip() if len(tokens) > 2 else ""
        if command == "@REMOVE_ALL_ASSETS@":  # the type is optional: none removes every asset
            device, asset_type = self._asset_device(asset_arg)
            assert device is not None
            self.stats.assets += 1
            return [AssetChange(device, ts, arrival, "remove_all", "", asset_type=asset_type)]
        if not asset_arg:
            self._malformed(line, f"{command} without an asset id")
            return []
        device, asset_id = self._asset_device(asset_arg)
        assert device is not None
        if command == "@ASSET@":
            if len(tokens) < 5:
                self._malformed(line, "@ASSET@ needs id|type|body")
                return []
            asset_type = tokens[3].strip()
            body = "|".join(tokens[4:]).strip()
            self.stats.assets += 1
            return [AssetChange(device, ts, arrival, "add", asset_id, asset_type, body)]
        if command == "@UPDATE_ASSET@":
            rest = tokens[3:]
            pairs = tuple((rest[j].strip(), rest[j + 1]) for j in range(0, len(rest) - 1, 2))
            self.stats.assets += 1
            return [AssetChange(device, ts, arrival, "update", asset_id, updates=pairs)]
        if command == "@REMOVE_ASSET@":
            self.stats.assets += 1
            return [AssetChange(device, ts, arrival, "remove", asset_id)]
        self._malformed(line, f"unknown asset command {tokens[1].strip()}")
        return []

    def _feed_multiline(self, line: str) -> list[Record]:
        ml = self._multiline
        assert ml is not None
        if line.strip() == ml.terminator:
            self._multiline = None
            return self._data([*ml.tokens, "\n".join(ml.lines)], ml.first_line, ml.arrival)
        ml.lines.append(line)
        ml.size += len(line) + 1
        if ml.size > _MAX_MULTILINE_CHARS:
            self._multiline = None
            self._malformed(ml.first_line, f"multiline value over {_MAX_MULTILINE_CHARS} chars")
        return []


# -- the TCP connection --------------------------------------------------------------------------

_MAX_LINE = 1024 * 1024
_CHUNK = 256 * 1024
_LAG_EVERY_S = 2.0
_LAG_WARN_S = 2.0
_LAG_LOG_EVERY_S = 30.0


def _unread(fd: int) -> int:
    """Bytes waiting in the socket's receive buffer (0 if unknown)."""
    if fd < 0:
        return 0
    try:
        raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    return int.from_bytes(raw, sys.byteorder)


Sink = Callable[[list[Record]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Jittered, capped exponential backoff (seconds)."""

    initial: float = 0.5
    maximum: float = 30.0

    def delays(self) -> _BackoffIter:
        return _BackoffIter(self)


class _BackoffIter:
    def __init__(self, policy: Backoff) -> None:
        self.policy = policy
        self.current = policy.initial

    def next(self) -> float:
        delay = self.current * random.uniform(0.5, 1.0)
        self.current = min(self.current * 2, self.policy.maximum)
        return delay

    def reset(self) -> None:
        self.current = self.policy.initial


class ShdrConnection:
    """A reconnecting client of one SHDR adapter; parsed records go to ``sink`` in line order.

    ``sink`` is awaited for each line's records, so a slow pipeline applies TCP backpressure to
    the adapter instead of losing lines (the overflow policy of this boundary is *block*).
    :attr:`lag_s` says how far behind the adapter's stream the reader is; falling more than
    2 s behind is logged (a warning every 30 s while it lasts, and when it has caught up).
    """

    def __init__(
        self,
        host: str,
        port: int,
        parser: ShdrParser,
        sink: Sink,
        *,
        connect_timeout_s: float = 5.0,
        legacy_timeout_s: float = 600.0,
        backoff: Backoff | None = None,
        on_connect: Callable[[], None] | None = None,
        encoding: str = "auto",
    ) -> None:
        self.host = host
        self.decode = line_decoder(encoding)
        self.port = port
        self.parser = parser
        self.sink = sink
        self.connect_timeout_s = connect_timeout_s
        self.legacy_timeout_s = legacy_timeout_s
        self.backoff = backoff or Backoff()
        self.on_connect = on_connect
        self.heartbeat_ms: int | None = None
        self.connects = 0
        self.connected = asyncio.Event()
        #: Bytes the adapter has sent that are not read yet, and their age in seconds at the
        #: adapter's current rate: how far behind the gateway is (updated every few seconds).
        self.backlog_bytes = 0
        self.lag_s = 0.0
        self.behind = False
        self._fd = -1
        self._reader: asyncio.StreamReader | None = None
        self._read_bytes = 0
        self._lag_logged = 0.0

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    async def run(self) -> None:
        """Connect, read, reconnect forever (until cancelled)."""
        delays = self.backoff.delays()
        while True:
            try:
                await self._session(delays)
                log.warning("shdr %s: adapter closed the connection", self.label)
            except (OSError, TimeoutError, ShdrError) as exc:
                log.warning("shdr %s: %s", self.label, exc or type(exc).__name__)
            self.connected.clear()
            await asyncio.sleep(delays.next())

    async def _session(self, delays: _BackoffIter) -> None:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for can drop a connection that
        # completes as it is cancelled (a gateway stopped while reconnecting), leaving a stream
        # nobody closes.
        async with asyncio.timeout(self.connect_timeout_s):
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=_MAX_LINE)
        self.connects += 1
        self.heartbeat_ms = None
        self.parser.reset()  # a multiline value cut off by the last disconnect must not swallow
        self.connected.set()
        delays.reset()
        log.info("shdr %s: connected", self.label)
        if self.on_connect is not None:
            self.on_connect()
        sock = writer.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1
        self._reader = reader
        self._read_bytes = 0
        watcher = asyncio.create_task(self._watch(), name=f"lag {self.label}")
        pinger: asyncio.Task[None] | None = None
        # Read whatever the kernel holds (one deadline per read, not per line): a multi-device
        # adapter sends one line per machine per tick, and a per-line ``wait_for`` (a task and
        # a timer each) cost more than parsing the line. A gateway that has fallen behind reads
        # bigger chunks, so its cost per line drops exactly when it must catch up.
        partial = b""
        skipping = False  # inside a line over _MAX_LINE: drop it up to its newline
        try:
            await self._send(writer, b"* PING\n")
            while True:
                timeout = (
                    2 * self.heartbeat_ms / 1000 if self.heartbeat_ms else self.legacy_timeout_s
                )
                try:
                    async with asyncio.timeout(timeout):
                        chunk = await reader.read(_CHUNK)
                except TimeoutError:
                    raise ShdrError(f"no data for {timeout:.1f} s (heartbeat missed)") from None
                if not chunk:
                    if partial and not skipping:  # the last line had no line ending
                        await self._lines([partial], writer)
                    return
                self._read_bytes += len(chunk)
                end = chunk.rfind(b"\n")
                if end < 0:
                    partial += chunk
                    if len(partial) > _MAX_LINE:
                        if not skipping:
                            self.parser._malformed("<too long>", "line over 1 MiB")
                        partial, skipping = b"", True
                    continue
                lines = (partial + chunk[:end]).split(b"\n")
                partial = chunk[end + 1 :]
                if skipping:
                    lines[0], skipping = b"", False  # the tail of the overlong line
                if pinger is None:
                    pinger = await self._lines(lines, writer)
                else:
                    await self._lines(lines, writer)
        finally:
            self._fd, self._reader = -1, None
            for task in (pinger, watcher):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 2.0)

    async def _lines(
        self, lines: list[bytes], writer: asyncio.StreamWriter
    ) -> asyncio.Task[None] | None:
        """Parse and hand on complete lines; the ping task once a PONG set the heartbeat."""
        arrival = datetime.now(UTC)
        pinger: asyncio.Task[None] | None = None
        feed, sink, decode = self.parser.feed, self.sink, self.decode
        for raw in lines:
            records = feed(decode(raw), arrival)
            if not records:
                continue
            for r in records:
                if isinstance(r, Command) and r.name == "pong":
                    first = self.heartbeat_ms is None
                    self.heartbeat_ms = _heartbeat(r.value)
                    if first and self.heartbeat_ms:
                        pinger = asyncio.create_task(
                            self._ping(writer, self.heartbeat_ms), name=f"ping {self.label}"
                        )
            await sink(records)
        return pinger

    # -- how far behind the adapter ------------------------------------------------------------

    async def _watch(self) -> None:
        """Every few seconds, estimate how far behind the adapter's stream the reader is.

        SHDR is live-only: what the adapter has sent but the gateway has not read yet waits in
        the kernel's socket buffers and the stream reader's, and dies with the gateway (the
        adapter then blocks or drops). Its age is the gateway's lag: those bytes / the rate the
        adapter has sent at this session (read + unread; a stuck reader reads nothing, so not
        the rate read lately). A task of its own, so a reader stuck behind a full pipeline is
        reported too.
        """
        start = time.monotonic()
        while True:
            await asyncio.sleep(_LAG_EVERY_S)
            now = time.monotonic()
            held = len(getattr(self._reader, "_buffer", b""))  # read from the kernel, not parsed
            self.backlog_bytes = _unread(self._fd) + held
            rate = (self._read_bytes + self.backlog_bytes) / (now - start)  # what it sent
            self.lag_s = self.backlog_bytes / rate if rate > 0 else 0.0
            if self.lag_s >= _LAG_WARN_S:
                if not self.behind or now - self._lag_logged >= _LAG_LOG_EVERY_S:
                    self._lag_logged = now
                    log.warning(
                        "shdr %s: falling behind the adapter: %d KiB unread = %.1f s of its "
                        "stream (%.1f KiB/s); lines not read yet are lost if the gateway dies",
                        self.label,
                        self.backlog_bytes // 1024,
                        self.lag_s,
                        rate / 1024,
                    )
                self.behind = True
            elif self.behind and self.lag_s < _LAG_WARN_S / 4:
                self.behind = False
                log.warning(
                    "shdr %s: caught up with the adapter (lag %.2f s)", self.label, self.lag_s
                )

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await asyncio.wait_for(writer.drain(), self.connect_timeout_s)

    async def _ping(self, writer: asyncio.StreamWriter, every_ms: int) -> None:
        while True:
            await asyncio.sleep(every_ms / 1000)
            try:
                await self._send(writer, b"* PING\n")
            except (OSError, TimeoutError):
                return


def _decode(raw: bytes) -> str:
    """A line as text: UTF-8, else Windows-1252 (adapters on Windows controllers send their
    messages in the system code page: ``Kühlmittel`` arrives as b'K\\xfchlmittel')."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def line_decoder(encoding: str = "auto") -> Callable[[bytes], str]:
    """How an adapter's lines become text: "auto" (UTF-8, else Windows-1252), or a codec the
    source names. A Japanese controller's alarm texts in Shift-JIS, or a Chinese one's in GBK,
    read as Windows-1252 would be stored as mojibake; bytes the codec cannot read become U+FFFD
    rather than costing the line."""
    if encoding == "auto":
        return _decode
    codecs.lookup(encoding)  # LookupError now, not at the first line
    return functools.partial(bytes.decode, encoding=encoding, errors="replace")


def _heartbeat(text: str) -> int | None:
    try:
        ms = int(float(text.split()[0]))
    except (ValueError, IndexError):
        return None
    return min(max(ms, 100), 600_000)
