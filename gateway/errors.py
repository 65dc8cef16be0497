"""Errors of the gateway.

::

    GatewayError                      base of everything the gateway raises on purpose
    ├── ConfigError                   the configuration is wrong (carries every issue at once)
    ├── DeviceModelError              a Devices.xml cannot be read or has no such device
    ├── ShdrError                     an adapter connection failed (connect, heartbeat, read)
    └── StoreError                    the on-disk store-and-forward queue cannot be used

Bad data from a device is never raised: it is logged with machine and key, counted, and skipped.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DeviceModelError", "GatewayError", "ShdrError", "StoreError"]


class GatewayError(Exception):
    """Base of the gateway's errors."""


class ConfigError(GatewayError):
    """Invalid configuration; ``issues`` lists every problem found, as ``where: what`` lines."""

    def __init__(self, issues: list[str]) -> None:
        self.issues = list(issues)
        text = "\n".join(f"  - {issue}" for issue in self.issues)
        super().__init__(f"invalid gateway configuration ({len(self.issues)} problems):\n{text}")


class DeviceModelError(GatewayError):
    """A Devices.xml file cannot be parsed or does not describe the wanted device."""


class ShdrError(GatewayError):
    """An SHDR adapter connection failed (refused, heartbeat missed, closed)."""


class StoreError(GatewayError):
    """The on-disk store-and-forward queue cannot be opened or written."""
