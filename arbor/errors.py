"""Errors of the `arbor` command and the local stack.

ArborError
├── StackError          a local server would not start, stop or answer
└── ProvisioningError   broker credentials could not be written or did not take effect
"""

from __future__ import annotations

__all__ = ["ArborError", "ProvisioningError", "StackError"]


class ArborError(Exception):
    """Base of the errors the `arbor` command reports to its user."""


class StackError(ArborError):
    """A local server would not start, stop or become ready."""


class ProvisioningError(ArborError):
    """Broker credentials could not be created or were not accepted after a reload."""
