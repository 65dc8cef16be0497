"""The alerts service's errors.

AlertsError
 ├── RuleError          a stored rule is malformed (the worker skips it and says why)
 └── DeliveryError      one delivery attempt failed (retried with backoff)
"""

from __future__ import annotations

__all__ = ["AlertsError", "DeliveryError", "RuleError"]


class AlertsError(Exception):
    """Base of the alerts service's errors."""


class RuleError(AlertsError, ValueError):
    """A rule's kind, params or scope is invalid."""


class DeliveryError(AlertsError):
    """A notifier could not deliver; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
