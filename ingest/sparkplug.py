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

import math
import re
from datetime import UTC, datetime
from typing import Any

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
    MessageType,
    Payload,
    SparkplugSessions,
    SparkplugTopic,
    VerdictKind,
    decode_payload,
    parse_sparkplug_topic,
)

__all__ = ["SparkplugHost", "normalise_metric_name"]

_NON_ID = re.compile(r"[^a-z0-9_]+")


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
        site, node_id, device = topic.group, topic.edge_node, topic.device
        for kind, value in (("group", site), ("edge node", node_id), ("device", device)):
            if value is not None and not is_valid_id(value):
                out.dead.append(
                    DeadLetter("bad_topic",
                               f"Sparkplug {kind} id {value!r} is not a valid Arbor id "
                               "([a-z0-9][a-z0-9_-]{0,63})", raw.topic, raw.payload, received)
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
        # stored, so the node's next seq shows the hole (a gap and a rebirth).
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
        ts = ms_to_utc(payload.timestamp) if payload.timestamp is not None else received
        if mtype is MessageType.NBIRTH:
            bdseq = self._sessions.bdseq(site, node_id)
            session = f"spb-{bdseq}-{payload.timestamp or 0}"
            node = _Node(session, payload.seq or 0)
            self._nodes[key] = node
            acc = self._accepted(site, machine, node_id, session, 0, ts, "nbirth", received)
            acc.status.append(StatusChange(site, machine, True, ts, session, None, None,
                                           "sparkplug"))  # fmt: skip
            self._metrics(topic, payload, acc, ts)
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
            acc = self._accepted(site, machine, node_id, session, -2, ts, "ndeath", received)
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
        self._metrics(topic, payload, acc, ts)
        out.accepted.append(acc)

    def _time_problem(self, payload: Payload, received_s: float) -> str | None:
        """The reason a payload or metric timestamp is outside the accepted window (v1's:
        ``max_future`` ahead, ``max_past`` behind the receive time), checked on the raw
        milliseconds, so a timestamp like 2**62 ms is refused before it becomes a datetime."""
        now_ms = int(received_s * 1000)
        lo, hi = now_ms - self._past_ms, now_ms + self._future_ms
        stamps = [("payload", payload.timestamp)]
        stamps += [
            (f"metric {(m.name or '')[:64] or m.alias!r}", m.timestamp) for m in payload.metrics
        ]
        for what, ms in stamps:
            if ms is None or lo <= ms <= hi:
                continue
            if ms > hi:
                return (
                    f"{what} timestamp {ms} ms is {(ms - now_ms) / 1000:.0f} s in the future "
                    f"(limit {self._future_ms / 1000:.0f} s)"
                )
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
        self, topic: SparkplugTopic, payload: Payload, acc: Accepted, ts: datetime
    ) -> None:
        rows: dict[datetime, list[Any]] = {}
        n = 0
        for m in self._sessions.resolve(topic, payload):
            if m.name == BDSEQ_METRIC or m.name.startswith(("Node Control/", "Device Control/")):
                continue
            mts = ms_to_utc(m.timestamp) if m.timestamp is not None else ts
            value = None if m.is_null else m.value
            if not _storable(value):
                continue
            n += 1
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
        acc.wide.extend((t, *row) for t, row in rows.items())
        acc.n_values = n


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _storable(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)  # NaN / inf have no place in the tables: skipped
    return value is None or isinstance(value, bool | int | str)
