"""NC program download over ``cmd/program``: split a program into chunks and put it back together.

The scheme: the sender computes the SHA-256 of the whole program, splits it into chunks of at most
``chunk_size`` bytes (default 96 KiB, so a base64 chunk plus envelope stays far below the 256 KiB
payload limit) and publishes one ``cmd/program`` per chunk, in order, each with its own request
``id``. The machine answers every chunk on ``reply/program`` (``result: {"received": index}``) and,
after the last one, checks size and digest and answers ``result: {"complete": true}`` or
``ok: false`` with error code ``checksum_mismatch``. Chunks are idempotent (a redelivered chunk
replaces itself), so QoS 1 redelivery is harmless.
"""

from __future__ import annotations

__all__ = ["DEFAULT_CHUNK_SIZE", "assemble_program", "split_program"]

import base64
import hashlib
from collections.abc import Iterable

from protocol.errors import PayloadError
from protocol.models import ProgramArgs

DEFAULT_CHUNK_SIZE = 96 * 1024


def split_program(
    name: str, version: str, data: bytes, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> list[ProgramArgs]:
    """Split ``data`` into :class:`ProgramArgs` chunks (at least one, even for an empty program)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    digest = hashlib.sha256(data).hexdigest()
    pieces = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""]
    return [
        ProgramArgs(
            name=name,
            version=version,
            sha256=digest,
            size=len(data),
            chunk_index=index,
            chunk_count=len(pieces),
            data=base64.b64encode(piece).decode("ascii"),
        )
        for index, piece in enumerate(pieces)
    ]


def assemble_program(chunks: Iterable[ProgramArgs]) -> bytes:
    """Join chunks (any order, duplicates allowed) into the program, checking size and SHA-256.

    Raises :class:`~protocol.errors.PayloadError` if chunks disagree on name, version, digest, size
    or count, if one is missing, or if the result does not match the digest.
    """
    by_index: dict[int, ProgramArgs] = {}
    first: ProgramArgs | None = None
    for chunk in chunks:
        if first is None:
            first = chunk
        elif (chunk.name, chunk.version, chunk.sha256, chunk.size, chunk.chunk_count) != (
            first.name,
            first.version,
            first.sha256,
            first.size,
            first.chunk_count,
        ):
            raise PayloadError(
                f"chunk {chunk.chunk_index} belongs to another transfer "
                f"({chunk.name} {chunk.version}) than chunk {first.chunk_index} "
                f"({first.name} {first.version})"
            )
        by_index[chunk.chunk_index] = chunk
    if first is None:
        raise PayloadError("no chunks")
    missing = [i for i in range(first.chunk_count) if i not in by_index]
    if missing:
        raise PayloadError(f"missing chunks {missing[:10]} of {first.chunk_count}")
    data = b"".join(by_index[i].chunk for i in range(first.chunk_count))
    if len(data) != first.size:
        raise PayloadError(f"program is {len(data)} bytes, expected {first.size}")
    if hashlib.sha256(data).hexdigest() != first.sha256:
        raise PayloadError("program SHA-256 does not match (checksum_mismatch)")
    return data
