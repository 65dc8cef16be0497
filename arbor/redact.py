"""Secrets never reach a log: every `arbor` process writes stdout and stderr through a filter that
turns ``scheme://user:password@`` into ``scheme://user:***@`` (protocol.endpoint.redact_url).

Log lines, uvicorn's logs, `print`, warnings and uncaught tracebacks all go through `sys.stdout`
and `sys.stderr`, so one filter there covers messages we write and messages libraries write about
us (a pydantic error quoting ARBOR_DATABASE_URL, a psycopg error quoting its connection string).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO

from protocol.endpoint import redact_url

__all__ = ["RedactingStream", "install"]


class RedactingStream:
    """A text stream that redacts URL passwords in whatever is written, then passes it on."""

    def __init__(self, raw: TextIO) -> None:
        self._raw = raw

    @property
    def raw(self) -> TextIO:
        return self._raw

    def write(self, text: str) -> int:
        self._raw.write(redact_url(text))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, buffer, ...
        return getattr(self._raw, name)


def install() -> None:
    """Filter this process's stdout and stderr (idempotent); call before logging is set up."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, RedactingStream):
            setattr(sys, name, RedactingStream(stream))
