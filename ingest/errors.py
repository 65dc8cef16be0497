"""Errors of the ingest service.

IngestError          base of everything ingest raises on purpose
└── WriteError       a batch could not be committed (the batch is retried, never acked)
"""

from __future__ import annotations

__all__ = ["IngestError", "WriteError"]


class IngestError(Exception):
    """Base of ingest's own errors."""


class WriteError(IngestError):
    """A batch could not be committed; its messages stay unacked and the write is retried."""
