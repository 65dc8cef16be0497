"""Arbor v1 MQTT topics: build, parse, and subscription filters.

Machine topics are ``arbor/v1/{site}/{machine}/{channel}`` with channel one of ``status``,
``telemetry``, ``event``, ``cmd/{name}`` and ``reply/{name}``; the site alert topic is
``arbor/v1/{site}/alerts``. Site, machine and command ids match ``[a-z0-9][a-z0-9_-]{0,63}``.

Builders raise :class:`~protocol.errors.TopicError` (a ``ValueError``) on a bad id;
:func:`parse_topic` raises it with the level that is wrong. Filters accept ``+`` in place of any id.
"""

from __future__ import annotations

__all__ = [
    "ID_PATTERN",
    "PREFIX",
    "VERSION",
    "Channel",
    "Topic",
    "alerts_filter",
    "alerts_topic",
    "all_filter",
    "cmd_filter",
    "cmd_topic",
    "event_filter",
    "event_topic",
    "is_valid_id",
    "parse_topic",
    "reply_filter",
    "reply_topic",
    "shared_filter",
    "status_filter",
    "status_topic",
    "telemetry_filter",
    "telemetry_topic",
]

import re
from dataclasses import dataclass
from enum import StrEnum

from protocol.errors import TopicError

ROOT = "arbor"
VERSION = "v1"
PREFIX = f"{ROOT}/{VERSION}"
ID_PATTERN = r"[a-z0-9][a-z0-9_-]{0,63}"
_ID_RE = re.compile(ID_PATTERN)
_VERSION_RE = re.compile(r"v[0-9]+")


class Channel(StrEnum):
    """The last level(s) of a topic. ``CMD`` and ``REPLY`` carry a command name."""

    STATUS = "status"
    TELEMETRY = "telemetry"
    EVENT = "event"
    CMD = "cmd"
    REPLY = "reply"
    ALERTS = "alerts"


_SIMPLE_CHANNELS = {Channel.STATUS, Channel.TELEMETRY, Channel.EVENT}
_NAMED_CHANNELS = {Channel.CMD, Channel.REPLY}


def is_valid_id(value: str) -> bool:
    """True if ``value`` is a valid site, machine or command id."""
    return _ID_RE.fullmatch(value) is not None


def _why_bad_id(value: str) -> str:
    if value == "":
        return "is empty"
    if value in ("+", "#") or "+" in value or "#" in value:
        return "contains an MQTT wildcard"
    if len(value) > 64:
        return f"is {len(value)} characters long (at most 64)"
    if value != value.lower():
        return "has upper-case letters (ids are lower-case)"
    if not value[0].isalnum() or not value[0].isascii():
        return "must start with a lower-case letter or digit"
    return f"has characters outside [a-z0-9_-] (must match {ID_PATTERN})"


def _check_id(kind: str, value: str, topic: str) -> None:
    if not isinstance(value, str):
        raise TopicError(f"{kind} id must be a string, got {type(value).__name__}", str(value))
    if _ID_RE.fullmatch(value) is None:
        raise TopicError(f"{kind} id {value!r} {_why_bad_id(value)}", topic)


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed Arbor v1 topic.

    ``machine`` is ``None`` only for the site alert topic; ``command`` is set only for ``cmd`` and
    ``reply``. ``str(topic)`` gives the topic string back.
    """

    site: str
    machine: str | None
    channel: Channel
    command: str | None = None

    def __post_init__(self) -> None:
        text = self._render()
        _check_id("site", self.site, text)
        if self.channel is Channel.ALERTS:
            if self.machine is not None or self.command is not None:
                raise TopicError("the alerts topic has no machine or command", text)
            return
        if self.machine is None:
            raise TopicError(f"a {self.channel.value} topic needs a machine", text)
        _check_id("machine", self.machine, text)
        if self.channel in _NAMED_CHANNELS:
            if self.command is None:
                raise TopicError(f"a {self.channel.value} topic needs a command name", text)
            _check_id("command", self.command, text)
        elif self.command is not None:
            raise TopicError(f"a {self.channel.value} topic has no command name", text)

    def _render(self) -> str:
        if self.channel is Channel.ALERTS:
            return f"{PREFIX}/{self.site}/alerts"
        tail = self.channel.value
        if self.command is not None:
            tail = f"{tail}/{self.command}"
        return f"{PREFIX}/{self.site}/{self.machine}/{tail}"

    def __str__(self) -> str:
        return self._render()

    @property
    def text(self) -> str:
        """The topic string."""
        return self._render()


def parse_topic(topic: str) -> Topic:
    """Parse an Arbor v1 topic string into a :class:`Topic`.

    Raises :class:`TopicError` naming the offending level: wrong root or version, a bad id
    (upper case, too long, wildcard, bad characters), an unknown channel, or a wrong number of
    levels.
    """
    if not isinstance(topic, str):
        raise TopicError(f"topic must be a string, got {type(topic).__name__}", repr(topic))
    if topic.startswith("$share/"):
        raise TopicError("a shared-subscription filter is not a topic", topic)
    levels = topic.split("/")
    if levels[0] != ROOT:
        raise TopicError(f"topic must start with {ROOT!r}/, got {levels[0]!r}", topic)
    if len(levels) < 2:
        raise TopicError("topic has no version level", topic)
    if levels[1] != VERSION:
        if _VERSION_RE.fullmatch(levels[1]):
            raise TopicError(
                f"unsupported version {levels[1]!r} (this library speaks {VERSION})", topic
            )
        raise TopicError(f"second level must be the version {VERSION!r}, got {levels[1]!r}", topic)
    rest = levels[2:]
    if len(rest) < 2:
        raise TopicError(
            "topic is too short: expected {site}/{machine}/{channel} after arbor/v1", topic
        )
    _check_id("site", rest[0], topic)
    if len(rest) == 2:
        if rest[1] == Channel.ALERTS.value:
            return Topic(rest[0], None, Channel.ALERTS)
        raise TopicError(
            "topic is too short: expected {site}/{machine}/{channel} or {site}/alerts", topic
        )
    _check_id("machine", rest[1], topic)
    channel_text = rest[2]
    try:
        channel = Channel(channel_text)
    except ValueError:
        channel = None
    if channel is None or channel is Channel.ALERTS:
        raise TopicError(
            f"unknown channel {channel_text!r} (expected status, telemetry, event, cmd/{{name}} "
            "or reply/{name})",
            topic,
        )
    if channel in _SIMPLE_CHANNELS:
        if len(rest) != 3:
            raise TopicError(f"unexpected levels after {channel.value!r}", topic)
        return Topic(rest[0], rest[1], channel)
    if len(rest) != 4:
        raise TopicError(f"{channel.value!r} must be followed by exactly one command name", topic)
    _check_id("command", rest[3], topic)
    return Topic(rest[0], rest[1], channel, rest[3])


# -- builders -----------------------------------------------------------------------------------


def status_topic(site: str, machine: str) -> str:
    """``arbor/v1/{site}/{machine}/status`` (retained birth / Last Will)."""
    return str(Topic(site, machine, Channel.STATUS))


def telemetry_topic(site: str, machine: str) -> str:
    """``arbor/v1/{site}/{machine}/telemetry``."""
    return str(Topic(site, machine, Channel.TELEMETRY))


def event_topic(site: str, machine: str) -> str:
    """``arbor/v1/{site}/{machine}/event``."""
    return str(Topic(site, machine, Channel.EVENT))


def cmd_topic(site: str, machine: str, name: str) -> str:
    """``arbor/v1/{site}/{machine}/cmd/{name}`` (downlink command)."""
    return str(Topic(site, machine, Channel.CMD, name))


def reply_topic(site: str, machine: str, name: str) -> str:
    """``arbor/v1/{site}/{machine}/reply/{name}`` (the machine's answer to ``cmd/{name}``)."""
    return str(Topic(site, machine, Channel.REPLY, name))


def alerts_topic(site: str) -> str:
    """``arbor/v1/{site}/alerts`` (alerts published by the alerts service)."""
    return str(Topic(site, None, Channel.ALERTS))


# -- subscription filters -----------------------------------------------------------------------


def _filter_level(kind: str, value: str) -> str:
    if value == "+":
        return value
    _check_id(kind, value, value)
    return value


def _machine_filter(site: str, machine: str, tail: str) -> str:
    return f"{PREFIX}/{_filter_level('site', site)}/{_filter_level('machine', machine)}/{tail}"


def status_filter(site: str = "+", machine: str = "+") -> str:
    """Filter for status messages; ``+`` (the default) matches any site or machine."""
    return _machine_filter(site, machine, Channel.STATUS.value)


def telemetry_filter(site: str = "+", machine: str = "+") -> str:
    """Filter for telemetry messages, e.g. ``arbor/v1/+/+/telemetry``."""
    return _machine_filter(site, machine, Channel.TELEMETRY.value)


def event_filter(site: str = "+", machine: str = "+") -> str:
    """Filter for event messages, e.g. ``arbor/v1/+/+/event``."""
    return _machine_filter(site, machine, Channel.EVENT.value)


def cmd_filter(site: str = "+", machine: str = "+", name: str = "+") -> str:
    """Filter for commands, e.g. a gateway's ``arbor/v1/plant1/m1/cmd/+``."""
    return _machine_filter(site, machine, f"cmd/{_filter_level('command', name)}")


def reply_filter(site: str = "+", machine: str = "+", name: str = "+") -> str:
    """Filter for command replies, e.g. ``arbor/v1/+/+/reply/program``."""
    return _machine_filter(site, machine, f"reply/{_filter_level('command', name)}")


def alerts_filter(site: str = "+") -> str:
    """Filter for site alert topics, e.g. ``arbor/v1/+/alerts``."""
    return f"{PREFIX}/{_filter_level('site', site)}/alerts"


def all_filter(site: str = "+") -> str:
    """Everything under v1 (``arbor/v1/#``) or under one site (``arbor/v1/{site}/#``)."""
    if site == "+":
        return f"{PREFIX}/#"
    return f"{PREFIX}/{_filter_level('site', site)}/#"


def shared_filter(group: str, topic_filter: str | None = None) -> str:
    """MQTT 5 shared subscription ``$share/{group}/{filter}`` (default filter ``arbor/v1/#``).

    Ingest and alerts workers subscribe with this so N workers split the stream.
    """
    _check_id("share group", group, group)
    return f"$share/{group}/{topic_filter if topic_filter is not None else all_filter()}"
