"""Sparkplug B host: births, deaths, aliases and seq, mapped onto Arbor's canonical tables.

Mapping: the group id is the site; an edge node's own metrics (NBIRTH/NDATA) belong to the machine
named by the edge node id, a device's (DBIRTH/DDATA) to the machine named by the device id. Metric
names go through ``sparkplug_metric_map`` first, then a normalisation (``Spindle/Speed`` ->
``spindle_speed``); catalogue telemetry signals land in `sample`, catalogue event signals in
`event`, everything else in `sample_extra` under the metric's own name.

Exactly-once: Sparkplug's seq is 0..255 per edge node, so the ledger key is (edge node, session,
extended seq) where the session is ``spb-<bdSeq>-<NBIRTH timestamp>`` and the extended seq counts
wraps. Every worker sees every Sparkplug message (non-shared subscription, in order), computes the
same keys, and the ledger keeps one copy.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import zlib
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson

from ingest.config import IngestSettings
from ingest.convert import event_row, event_signal_ok, extra_row, ms_to_utc
from ingest.records import (
    WIDE_INDEX,
    WIDE_SIGNALS,
    Accepted,
    DeadLetter,
    DecodedBatch,
    Gap,
    Raw,
    StatusChange,
)
from protocol import (
    CATALOGUE,
    SignalChannel,
    SparkplugPayloadError,
    SparkplugTopicError,
    is_valid_id,
)
from protocol.sparkplug import (
    BDSEQ_METRIC,
    UNDECLARED,
    DataSet,
    DataType,
    MessageType,
    Payload,
    ResolvedMetric,
    SparkplugSessions,
    SparkplugTopic,
    VerdictKind,
    decode_payload,
    parse_sparkplug_topic,
)

__all__ = ["SKIP_REASONS", "SparkplugHost", "arbor_id", "normalise_metric_name"]

log = logging.getLogger(__name__)

_NON_ID = re.compile(r"[^a-z0-9_]+")
_NOT_ID_CHARS = re.compile(r"[^a-z0-9_-]+")

#: Why a metric of an accepted message was not stored (the keys of ``SparkplugHost.skipped``).
SKIP_REASONS = {
    "undeclared": "a DATA metric whose alias the birth did not declare (a rebirth is requested)",
    "bad_value": "its value cannot be read: unknown datatype code, malformed array or DataSet",
    "transient": "is_transient: of interest to hosts, not to be stored in a historian (spec)",
    "quality": "its 'Quality' property says BAD (0) or STALE (500), not GOOD (192)",
    "timestamp_range": "its own timestamp is outside max_future / max_past",
    "binary": "Bytes or File: Arbor stores numbers and text",
    "non_finite": "NaN or infinity",
    "nul": "text with a NUL character (PostgreSQL text cannot hold it)",
}
_GOOD_QUALITY = 192
_MAX_LOGGED = 10_000


def arbor_id(value: str) -> str:
    """A Sparkplug group/edge node/device id as an Arbor id (``[a-z0-9][a-z0-9_-]{0,63}``).

    Valid ids are kept. Others (Sparkplug allows any UTF-8 but ``/ + #``: ``Sparkplug B
    Devices``, ``Raspberry Pi``) are lower-cased and every run of other characters becomes
    ``-``: ``sparkplug-b-devices``, ``raspberry-pi``; one longer than 64 characters keeps 55 and a
    hash of the whole id. An id with nothing usable (``***``) becomes ``x-<hash>``.
    """
    if is_valid_id(value):
        return value
    out = _NOT_ID_CHARS.sub("-", value.lower()).strip("-_")
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    if not out:
        return f"x-{digest}"
    if len(out) > 64:
        out = f"{out[:55].rstrip('-_')}-{digest}"
    return out


def normalise_metric_name(name: str) -> str:
    """``Spindle/Speed`` -> ``spindle_speed``: lower case, runs of other characters -> ``_``."""
    return _NON_ID.sub("_", name.lower()).strip("_")


class _Node:
    __slots__ = ("devices", "ext", "last", "session")

    def __init__(self, session: str, seq: int) -> None:
        self.session = session
        self.last = seq
        self.ext = 0
        self.devices: set[str] = set()

    def advance(self, seq: int) -> int:
        self.ext += (seq - self.last) % 256
        self.last = seq
        return self.ext


class SparkplugHost:
    """Drives :class:`protocol.sparkplug.SparkplugSessions` and turns messages into rows."""

    def __init__(self, settings: IngestSettings) -> None:
        self._sessions = SparkplugSessions()
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._map = dict(settings.sparkplug_metric_map)
        self._signal_cache: dict[str, str] = {}
        self._future_ms = int(settings.max_future.total_seconds() * 1000)
        self._past_ms = int(settings.max_past.total_seconds() * 1000)
        self._ids: dict[str, str] = {}
        # (site or "" for a group, Arbor id) -> the Sparkplug id that maps to it
        self._owners: dict[tuple[str, str], str] = {}
        #: Metrics of accepted messages that were not stored, by reason (SKIP_REASONS).
        self.skipped: Counter[str] = Counter()
        self._logged: set[tuple[str, str, str, str]] = set()

    def _id(self, value: str) -> str:
        found = self._ids.get(value)
        if found is None:
            if len(self._ids) >= 100_000:
                self._ids.clear()
            found = self._ids[value] = arbor_id(value)
        return found

    def _signal(self, name: str) -> str:
        found = self._signal_cache.get(name)
        if found is None:
            found = self._map.get(name) or normalise_metric_name(name)
            if found not in CATALOGUE:
                found = name  # not ours: keep the metric's own name in sample_extra
            self._signal_cache[name] = found
        return found

    def handle(self, raw: Raw, out: DecodedBatch) -> None:
        received = datetime.fromtimestamp(raw.received, UTC)
        try:
            topic = parse_sparkplug_topic(raw.topic)
        except SparkplugTopicError as exc:
            out.dead.append(DeadLetter("bad_topic", str(exc), raw.topic, raw.payload, received))
            return
        if topic.message_type in (MessageType.STATE, MessageType.NCMD, MessageType.DCMD):
            out.ignored += 1
            return
        site, node_id = self._id(topic.group), self._id(topic.edge_node)
        device = None if topic.device is None else self._id(topic.device)
        # Two Sparkplug ids that map to one Arbor id (``Line 1`` and ``line-1``): the first one
        # seen keeps it, the other is refused rather than mixed into its machine.
        for scope, raw_id, mapped in (("", topic.group, site), (site, topic.edge_node, node_id),
                                      (site, topic.device, device)):  # fmt: skip
            if raw_id is None or mapped is None:
                continue
            if len(self._owners) >= 100_000:
                self._owners.clear()
            owner = self._owners.setdefault((scope, mapped), raw_id)
            if owner != raw_id:
                out.dead.append(
                    DeadLetter("bad_topic",
                               f"Sparkplug id {raw_id!r} maps to the Arbor id {mapped!r}, which "
                               f"{owner!r} already has", raw.topic, raw.payload, received)
                )  # fmt: skip
                return
        machine = device if device is not None else node_id
        try:
            payload = decode_payload(raw.payload)
        except SparkplugPayloadError as exc:
            out.dead.append(
                DeadLetter("sparkplug_decode", str(exc), raw.topic, raw.payload, received, site,
                           machine)
            )  # fmt: skip
            return
        # Before the session state sees it, like an undecodable payload: the message is not
        # stored, so the node's next seq shows the hole (a gap and a rebirth). Not for NDEATH:
        # it is the node's MQTT Will, built when the node connected (its timestamp is that
        # moment, weeks old for a node connected for weeks); the death is when it arrives.
        problem = None
        if topic.message_type is not MessageType.NDEATH:
            problem = self._time_problem(payload, raw.received)
        if problem is not None:
            out.dead.append(
                DeadLetter("timestamp_range", problem, raw.topic, raw.payload, received, site,
                           machine)
            )  # fmt: skip
            return
        verdict = self._sessions.observe(topic, payload)
        key = topic.node_key
        mtype = topic.message_type
        if verdict.kind is VerdictKind.STALE_DEATH:
            out.ignored += 1
            return
        if verdict.kind is VerdictKind.NEEDS_REBIRTH:
            out.rebirths.append(key)
            out.dead.append(
                DeadLetter("sparkplug_no_birth", verdict.reason or "cannot interpret",
                           raw.topic, raw.payload, received, site, machine)
            )  # fmt: skip
            return
        ts = received
        if payload.timestamp is not None and mtype is not MessageType.NDEATH:
            ts = ms_to_utc(payload.timestamp)
        if mtype is MessageType.NBIRTH:
            bdseq = self._sessions.bdseq(topic.group, topic.edge_node)
            session = f"spb-{bdseq}-{_birth_stamp(payload, raw.payload)}"
            node = _Node(session, payload.seq or 0)
            self._nodes[key] = node
            acc = self._accepted(site, machine, node_id, session, 0, ts, "nbirth", received)
            acc.status.append(StatusChange(site, machine, True, ts, session, None, None,
                                           "sparkplug"))  # fmt: skip
            self._metrics(topic, payload, acc, ts, received)
            out.accepted.append(acc)
            return
        node_or_none = self._nodes.get(key)
        if mtype is MessageType.NDEATH:
            self._nodes.pop(key, None)
            if node_or_none is None:
                out.ignored += 1
                return
            session = node_or_none.session
            # The death's own key: it has no seq, so one past the last one seen.
            acc = self._accepted(site, machine, node_id, session, -2, received, "ndeath",
                                 received)  # fmt: skip
            for m in (node_id, *sorted(node_or_none.devices)):
                acc.status.append(StatusChange(site, m, False, received, session, None,
                                               "node death", "sparkplug"))  # fmt: skip
            out.accepted.append(acc)
            return
        if node_or_none is None:  # unreachable: observe() asked for a rebirth already
            out.rebirths.append(key)
            return
        node = node_or_none
        before = node.ext
        ext = node.advance(payload.seq or 0)
        if verdict.kind is VerdictKind.GAP:
            out.gaps.append(Gap(site, node_id, node.session, before + 1, ext - 1))
        if verdict.needs_rebirth:  # a gap, or metrics the birth did not declare
            out.rebirths.append(key)
        acc = self._accepted(site, machine, node_id, node.session, ext, ts, mtype.value.lower(),
                             received)  # fmt: skip
        if mtype is MessageType.DBIRTH:
            assert device is not None
            node.devices.add(device)
            acc.status.append(StatusChange(site, device, True, ts, node.session, None, None,
                                           "sparkplug"))  # fmt: skip
        elif mtype is MessageType.DDEATH:
            assert device is not None
            node.devices.discard(device)
            acc.status.append(StatusChange(site, device, False, received, node.session, None,
                                           "device death", "sparkplug"))  # fmt: skip
            out.accepted.append(acc)
            return
        self._metrics(topic, payload, acc, ts, received)
        out.accepted.append(acc)

    def _time_problem(self, payload: Payload, received_s: float) -> str | None:
        """The reason the payload's timestamp is outside the accepted window (v1's:
        ``max_future`` ahead, ``max_past`` behind the receive time), checked on the raw
        milliseconds, so a timestamp like 2**62 ms is refused before it becomes a datetime.
        A metric's own timestamp is checked in :meth:`_metrics`: only that metric is skipped."""
        ms = payload.timestamp
        if ms is None:
            return None
        return self._out_of_window("payload", ms, int(received_s * 1000))

    def _out_of_window(self, what: str, ms: int, now_ms: int) -> str | None:
        if ms > now_ms + self._future_ms:
            return (
                f"{what} timestamp {ms} ms is {(ms - now_ms) / 1000:.0f} s in the future "
                f"(limit {self._future_ms / 1000:.0f} s)"
            )
        if ms < now_ms - self._past_ms:
            return (
                f"{what} timestamp {ms} ms is older than the accepted "
                f"{self._past_ms // 86_400_000} days"
            )
        return None

    @staticmethod
    def _accepted(
        site: str, machine: str, node: str, session: str, seq: int, ts: datetime, channel: str,
        received: datetime,
    ) -> Accepted:  # fmt: skip
        return Accepted(site, machine, site, node, session, seq, ts, channel, received)

    def _metrics(
        self, topic: SparkplugTopic, payload: Payload, acc: Accepted, ts: datetime,
        received: datetime,
    ) -> None:  # fmt: skip
        """Store the usable metrics of an accepted message; skip (and count in ``skipped``) the
        others, so one unusual metric never costs the message its other values."""
        rows: dict[datetime, list[Any]] = {}
        n = historical = 0
        now_ms = int(received.timestamp() * 1000)
        for m in self._sessions.resolve(topic, payload):
            if m.name == BDSEQ_METRIC or m.name.startswith(("Node Control/", "Device Control/")):
                continue
            reason, value = self._usable(m, now_ms)
            if reason is not None:
                self._skip(acc, m, reason)
                continue
            mts = ms_to_utc(m.timestamp) if m.timestamp is not None else ts
            n += 1
            historical += m.is_historical
            signal = self._signal(m.name)
            i = WIDE_INDEX.get(signal)
            if i is not None and (value is None or _number(value)):
                row = rows.get(mts)
                if row is None:
                    row = rows[mts] = [None] * len(WIDE_SIGNALS)
                row[i] = None if value is None else float(value)
            elif (
                signal in CATALOGUE
                and CATALOGUE[signal].channel is SignalChannel.EVENT
                and event_signal_ok(signal, value)
            ):
                acc.events.append(event_row(mts, signal, value, m.is_historical))
            else:
                acc.extra.append(extra_row(mts, m.name if signal not in CATALOGUE else signal,
                                           value))  # fmt: skip
        # Oldest first, so the last row is the newest sample (history can come before or after
        # live values in one message).
        items = sorted(rows.items()) if len(rows) > 1 else rows.items()
        acc.wide.extend((t, *row) for t, row in items)
        acc.n_values = n
        # A message of back-filled values only (is_historical: "not a real time/current value").
        acc.historical = n > 0 and historical == n

    def _usable(self, m: ResolvedMetric, now_ms: int) -> tuple[str | None, Any]:
        """(why ``m`` is skipped or None, the value to store)."""
        if m.problem is not None:
            return ("undeclared" if m.problem.endswith(UNDECLARED) else "bad_value"), None
        if m.is_transient:
            return "transient", None
        if m.properties is not None:
            quality = m.properties.get("Quality")
            if quality is not None and quality.value not in (None, _GOOD_QUALITY):
                return "quality", None
        if m.timestamp is not None and self._out_of_window("", m.timestamp, now_ms):
            return "timestamp_range", None
        if m.is_null:
            return None, None
        return _storable(m.datatype, m.value)

    def _skip(self, acc: Accepted, m: ResolvedMetric, reason: str) -> None:
        self.skipped[reason] += 1
        key = (acc.site, acc.machine, m.name[:200], reason)
        if key not in self._logged and len(self._logged) < _MAX_LOGGED:
            self._logged.add(key)  # once per machine, metric and reason
            log.warning(
                "Sparkplug %s/%s: metric %r not stored (%s%s)", acc.site, acc.machine,
                m.name[:200], reason, f": {m.problem}" if m.problem else "",
            )  # fmt: skip


def _birth_stamp(payload: Payload, data: bytes) -> str:
    """What tells one NBIRTH of a bdSeq from the next (a rebirth keeps the bdSeq): its
    timestamp. Without one (the spec requires it, not every node sends it) the newest metric
    timestamp, else a hash of the bytes: never a constant, which would make a rebirth's
    messages collide with the previous birth's in the ledger and be dropped as copies. The
    same in every worker (no receive time)."""
    if payload.timestamp is not None:
        return str(payload.timestamp)
    stamps = [m.timestamp for m in payload.metrics if m.timestamp is not None]
    if stamps:
        return str(max(stamps))
    return f"h{zlib.crc32(data):08x}"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _storable(datatype: DataType | None, value: Any) -> tuple[str | None, Any]:
    """(why ``value`` cannot be stored or None, the value as stored): numbers, booleans and text
    as they are; DateTime as ISO 8601 UTC text; arrays and DataSets as JSON text."""
    if value is None or isinstance(value, bool):
        return None, value
    if isinstance(value, int):
        if datatype is DataType.DATETIME:
            try:
                return None, ms_to_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            except OverflowError:
                return None, value
        return None, value
    if isinstance(value, float):
        return (None, value) if math.isfinite(value) else ("non_finite", None)
    if isinstance(value, str):
        return ("nul", None) if "\x00" in value else (None, value)
    if isinstance(value, bytes | bytearray):
        return "binary", None
    if isinstance(value, list):
        return None, _json(value)
    if isinstance(value, DataSet):
        return None, _json(
            {"columns": list(value.columns), "types": [t.name for t in value.types],
             "rows": [list(r) for r in value.rows]}
        )  # fmt: skip
    return "bad_value", None


def _json(value: Any) -> str:
    # orjson writes NaN/inf as null and escapes NUL, so the text always fits PostgreSQL.
    return orjson.dumps(value).decode()
