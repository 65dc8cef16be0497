"""Errors raised by the protocol library.

The hierarchy::

    ProtocolError                  base of everything this package raises on bad input
    ├── TopicError                 not a valid Arbor v1 topic or filter (also ValueError)
    │   └── SparkplugTopicError    not a valid spBv1.0 topic
    └── PayloadError               undecodable, or does not match its model (also ValueError)
        ├── PayloadTooLargeError   larger than the decoder's size limit
        └── SparkplugPayloadError  a Sparkplug B protobuf payload cannot be decoded or encoded

Both first-level errors also derive from :class:`ValueError`, so a caller that builds a topic from
a bad id (misuse) gets a ``ValueError`` at the call, as the house style asks, while a service loop
that decodes device data catches :class:`ProtocolError` per message and keeps running.
"""

from __future__ import annotations

__all__ = [
    "FieldIssue",
    "PayloadError",
    "PayloadTooLargeError",
    "ProtocolError",
    "SparkplugPayloadError",
    "SparkplugTopicError",
    "TopicError",
]

from dataclasses import dataclass


class ProtocolError(Exception):
    """Base class of every error this package raises for bad input."""


class TopicError(ProtocolError, ValueError):
    """A topic (or subscription filter) is not valid.

    ``topic`` holds the offending string; the message says which level is wrong and why.
    """

    def __init__(self, message: str, topic: str) -> None:
        super().__init__(f"{message} (topic {topic!r})")
        self.topic = topic
        self.reason = message


class SparkplugTopicError(TopicError):
    """A topic is not a valid Sparkplug B (spBv1.0) topic."""


@dataclass(frozen=True, slots=True)
class FieldIssue:
    """One problem found in a payload: the field's path (``samples[3].values.spindle_speed``)
    and what is wrong with it. The path is ``""`` when the problem is the payload as a whole."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class PayloadError(ProtocolError, ValueError):
    """A payload is not valid JSON, not an object, or does not match its model.

    ``issues`` lists every problem found (at least one); ``str(error)`` names the first few with
    their field paths, e.g. ``samples[3].values.spindle_speed: expected number, got string 'abc'``.
    """

    def __init__(self, issues: list[FieldIssue] | str) -> None:
        if isinstance(issues, str):
            issues = [FieldIssue("", issues)]
        if not issues:
            raise ValueError("PayloadError needs at least one issue")
        self.issues: tuple[FieldIssue, ...] = tuple(issues)
        shown = "; ".join(str(i) for i in self.issues[:5])
        more = len(self.issues) - 5
        super().__init__(shown + (f"; and {more} more" if more > 0 else ""))

    @property
    def path(self) -> str:
        """Path of the first offending field (``""`` for the whole payload)."""
        return self.issues[0].path


class PayloadTooLargeError(PayloadError):
    """The payload is larger than the decoder's ``max_bytes``."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"payload is {size} bytes, the limit is {limit} bytes")
        self.size = size
        self.limit = limit


class SparkplugPayloadError(PayloadError):
    """A Sparkplug B payload cannot be decoded (bad protobuf) or encoded (bad value)."""
