"""Raw MQTT messages -> rows or dead letters. Pure and synchronous: the worker runs it off the
event loop and off paho's network thread (``asyncio.to_thread``), one batch at a time, in arrival
order, so the per-machine and per-node state below is only ever touched by one thread at a time.

Every way a payload can be bad ends here as a :class:`~ingest.records.DeadLetter` with a stable
``kind`` and a precise reason; nothing a device sends can raise out of :meth:`Decoder.decode`.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from paho.mqtt.client import topic_matches_sub

from ingest.config import SUB_ANCHOR, SUB_SHARED, IngestSettings
from ingest.convert import event_row, extra_row
from ingest.fast import FastTelemetry, fast_telemetry
from ingest.records import (
    WIDE_INDEX,
    WIDE_SIGNALS,
    Accepted,
    DeadLetter,
    DecodedBatch,
    Raw,
    StatusChange,
)
from ingest.sparkplug import SparkplugHost
from protocol import (
    Channel,
    ConditionEvent,
    Event,
    PayloadError,
    PayloadTooLargeError,
    Status,
    Telemetry,
    Topic,
    TopicError,
    decode_event,
    decode_status,
    decode_telemetry,
    parse_topic,
)

__all__ = ["Decoder", "classify_payload_error"]

log = logging.getLogger(__name__)

_WIDE_SET = frozenset(WIDE_INDEX)
#: Ledger seq of status messages (they carry a session but no seq).
STATUS_BIRTH_SEQ = -1
STATUS_DEATH_SEQ = -2


def classify_payload_error(exc: PayloadError, payload: bytes) -> str:
    """The stable dead-letter kind of a payload error."""
    text = str(exc)
    if isinstance(exc, PayloadTooLargeError):
        return "oversized"
    if text.startswith("not valid JSON"):
        if b"NaN" in payload or b"Infinity" in payload:
            return "non_finite"
        return "malformed_json"
    if "finite" in text:
        return "non_finite"
    if "unknown signal" in text:
        return "unknown_signal"
    if "expected" in text:
        return "wrong_type"
    return "invalid"


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class Decoder:
    """Turns batches of raw messages into a :class:`DecodedBatch` (see module docstring)."""

    def __init__(self, settings: IngestSettings, *, fast_path: bool = True) -> None:
        self._settings = settings
        self._fast_path = fast_path  # off only to compare against the protocol's decoder
        self._max_bytes = settings.max_payload_bytes
        self._records_sparkplug_dead = settings.records_sparkplug_dead_letters
        self._future = settings.max_future
        self._past = settings.max_past
        # Each machine's live session (from its last birth) and every session it announced.
        self._live: dict[tuple[str, str], str] = {}
        self._known: dict[tuple[str, str], set[str]] = {}
        self._topics: dict[str, Topic] = {}  # parse_topic is pure; machines repeat their topics
        self.sparkplug = SparkplugHost(settings)

    def decode(self, raws: list[Raw]) -> DecodedBatch:
        """Decode a batch; never raises for bad input."""
        out = DecodedBatch(first_received=raws[0].received if raws else time.time())
        for raw in raws:
            out.acks.append(raw.ack)
            try:
                n_dead = len(out.dead)
                sparkplug = raw.topic.startswith("spBv1.0/")
                if sparkplug:
                    self.sparkplug.handle(raw, out)
                else:
                    self._v1(raw, out)
                if len(out.dead) > n_dead and not self._dead_letters_here(raw, sparkplug):
                    del out.dead[n_dead:]  # the copy that records them is another worker's
                    out.ignored += 1
            except Exception as exc:  # a bug must not kill the worker: dead-letter and go on
                log.exception("decoder failed on topic %s", raw.topic)
                out.dead.append(
                    DeadLetter("internal", f"decoder error: {exc!r}", raw.topic, raw.payload,
                               _utc(raw.received))
                )  # fmt: skip
        return out

    def _dead_letters_here(self, raw: Raw, sparkplug: bool) -> bool:
        """Whether a bad message delivered this way is dead-lettered here, so that each is
        dead-lettered once. Sparkplug: every worker sees every message, one worker records
        (`sparkplug_dead_letters`, default worker 0). v1: a status message comes through the
        non-shared status subscription to every worker *and* through the shared one to exactly
        one of them: only that copy (or an anchor copy, stored while recovering) is
        dead-lettered; if the shared filter does not cover the topic, worker 0 dead-letters the
        status copy."""
        if sparkplug:
            return self._records_sparkplug_dead
        via = raw.via
        if not via or SUB_SHARED in via or SUB_ANCHOR in via:
            return True
        if topic_matches_sub(self._settings.topic_filter, raw.topic):
            return False
        return self._settings.worker_index == 0

    # --- Arbor v1 ---------------------------------------------------------------------------

    def _topic(self, text: str) -> Topic:
        topic = self._topics.get(text)
        if topic is None:
            topic = parse_topic(text)
            if len(self._topics) >= 100_000:
                self._topics.clear()
            self._topics[text] = topic
        return topic

    def _v1(self, raw: Raw, out: DecodedBatch) -> None:
        received = _utc(raw.received)
        try:
            topic = self._topic(raw.topic)
        except TopicError as exc:
            out.dead.append(DeadLetter("bad_topic", str(exc), raw.topic, raw.payload, received))
            return
        site, machine = topic.site, topic.machine
        if topic.channel not in (Channel.TELEMETRY, Channel.EVENT, Channel.STATUS):
            out.ignored += 1  # cmd / reply / alerts belong to other services
            return
        assert machine is not None
        if topic.channel is Channel.STATUS and not raw.payload:
            out.ignored += 1  # an empty retained message clears the retained status: no data
            return
        if topic.channel is Channel.TELEMETRY and self._fast_path:
            fast = fast_telemetry(raw.payload, self._max_bytes)
            if fast is not None:
                self._fast(raw, site, machine, fast, received, out)
                return
        try:
            if topic.channel is Channel.TELEMETRY:
                msg: Telemetry | Event | Status = decode_telemetry(
                    raw.payload, max_bytes=self._max_bytes
                )
            elif topic.channel is Channel.EVENT:
                msg = decode_event(raw.payload, max_bytes=self._max_bytes)
            else:
                msg = decode_status(raw.payload, max_bytes=self._max_bytes)
        except PayloadError as exc:
            kind = classify_payload_error(exc, raw.payload)
            out.dead.append(
                DeadLetter(kind, str(exc), raw.topic, raw.payload, received, site, machine)
            )
            return
        if isinstance(msg, Status):
            out.accepted.append(self._status(site, machine, msg, received))
            return
        items = msg.samples if isinstance(msg, Telemetry) else msg.events
        problem = self._check_time(min(i.ts for i in items), max(i.ts for i in items), received)
        if problem is not None:
            out.dead.append(
                DeadLetter("timestamp_range", problem, raw.topic, raw.payload, received, site,
                           machine)
            )  # fmt: skip
            return
        if self._conflict(raw, site, machine, msg.session, msg.historical, received, out):
            return
        if isinstance(msg, Telemetry):
            out.accepted.append(self._telemetry(site, machine, msg, received))
        else:
            out.accepted.append(self._event(site, machine, msg, received))

    def _fast(
        self,
        raw: Raw,
        site: str,
        machine: str,
        msg: FastTelemetry,
        received: datetime,
        out: DecodedBatch,
    ) -> None:
        """The rest of :meth:`_v1` for telemetry the fast path decoded (same checks, same order)."""
        problem = self._check_time(msg.lo, msg.hi, received)
        if problem is not None:
            out.dead.append(
                DeadLetter("timestamp_range", problem, raw.topic, raw.payload, received, site,
                           machine)
            )  # fmt: skip
            return
        if self._conflict(raw, site, machine, msg.session, msg.historical, received, out):
            return
        acc = Accepted(
            site, machine, site, machine, msg.session, msg.seq, msg.first, "telemetry",
            received, msg.historical, msg.rows,
        )  # fmt: skip
        acc.n_values = msg.n_values
        out.accepted.append(acc)

    def _conflict(
        self,
        raw: Raw,
        site: str,
        machine: str,
        session: str,
        historical: bool,
        received: datetime,
        out: DecodedBatch,
    ) -> bool:
        """Dead-letter a live message whose session no birth of this machine announced."""
        live = self._live.get((site, machine))
        if (
            live is not None
            and session != live
            and not historical
            and session not in self._known.get((site, machine), ())
        ):
            out.dead.append(
                DeadLetter(
                    "session_conflict",
                    f"machine {site}/{machine} is online with session {live!r}; this message "
                    f"carries session {session!r}, never announced by a birth (another "
                    "publisher under this machine's name?)",
                    raw.topic, raw.payload, received, site, machine,
                )
            )  # fmt: skip
            return True
        return False

    def _check_time(self, lo: datetime, hi: datetime, received: datetime) -> str | None:
        if hi > received + self._future:
            return (
                f"timestamp {hi.isoformat()} is {(hi - received).total_seconds():.0f} s in the "
                f"future (limit {self._future.total_seconds():.0f} s)"
            )
        if lo < received - self._past:
            return f"timestamp {lo.isoformat()} is older than the accepted {self._past.days} days"
        return None

    def _status(self, site: str, machine: str, msg: Status, received: datetime) -> Accepted:
        key = (site, machine)
        self._known.setdefault(key, set()).add(msg.session)
        if msg.online:
            self._live[key] = msg.session
        elif self._live.get(key) == msg.session:
            del self._live[key]
        # A Last Will is composed at connect time: the offline transition is when we hear it.
        at = msg.ts if msg.online else received
        change = StatusChange(
            site, machine, msg.online, at, msg.session,
            msg.controller.model_dump(mode="json"), msg.reason,
        )  # fmt: skip
        acc = Accepted(
            site, machine, site, machine, msg.session,
            STATUS_BIRTH_SEQ if msg.online else STATUS_DEATH_SEQ, msg.ts, "status", received,
        )  # fmt: skip
        acc.status.append(change)
        return acc

    def _telemetry(self, site: str, machine: str, msg: Telemetry, received: datetime) -> Accepted:
        acc = Accepted(
            site, machine, site, machine, msg.session, msg.seq, msg.samples[0].ts, "telemetry",
            received, msg.historical,
        )  # fmt: skip
        wide = acc.wide
        extra = acc.extra
        wide_set = _WIDE_SET
        n = 0
        for sample in msg.samples:
            ts = sample.ts
            values = sample.values
            n += len(values)
            # The protocol has validated every value: catalogue telemetry signals are numbers (or
            # null), so they go to the wide row as they are; anything else goes narrow.
            others = values.keys() - wide_set
            for name in others:
                extra.append(extra_row(ts, name, values[name]))
            if len(others) < len(values):
                wide.append((ts, *map(values.get, WIDE_SIGNALS)))
        acc.n_values = n
        return acc

    def _event(self, site: str, machine: str, msg: Event, received: datetime) -> Accepted:
        acc = Accepted(
            site, machine, site, machine, msg.session, msg.seq, msg.events[0].ts, "event",
            received, msg.historical,
        )  # fmt: skip
        for item in msg.events:
            if isinstance(item, ConditionEvent):
                c = item.condition
                acc.events.append(
                    (item.ts, "condition", c.level, None, c.component, c.level, c.code,
                     c.native_severity, c.qualifier, c.text, msg.historical)
                )  # fmt: skip
            else:
                acc.events.append(event_row(item.ts, item.signal, item.value, msg.historical))
        acc.n_values = len(msg.events)
        return acc
