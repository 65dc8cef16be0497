"""Errors of the simulators package.

```
SimulatorError
├── FactoryConfigError   the factory TOML is invalid (all problems listed at once)
└── CaptureError         an SHDR capture file cannot be read
```
"""

from __future__ import annotations

__all__ = ["CaptureError", "FactoryConfigError", "SimulatorError"]


class SimulatorError(Exception):
    """Base of every error raised by :mod:`simulators`."""


class FactoryConfigError(SimulatorError, ValueError):
    """A factory configuration is invalid; ``errors`` lists every problem found."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = list(errors)
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"invalid factory config {source}:\n{lines}")


class CaptureError(SimulatorError):
    """An SHDR capture file cannot be opened or parsed."""
