"""NC program chunking."""

from __future__ import annotations

import hashlib
import random

import pytest

from protocol import PayloadError
from protocol.program import assemble_program, split_program


def test_split_and_assemble_round_trip_any_order() -> None:
    data = random.Random(3).randbytes(10_000)
    chunks = split_program("O1234", "7", data, chunk_size=3000)
    assert [c.chunk_index for c in chunks] == [0, 1, 2, 3]
    assert {c.chunk_count for c in chunks} == {4}
    assert chunks[0].sha256 == hashlib.sha256(data).hexdigest()
    assert len(chunks[3].chunk) == 1000
    shuffled = [chunks[2], chunks[0], chunks[3], chunks[1], chunks[2]]  # with a duplicate
    assert assemble_program(shuffled) == data


def test_empty_program_is_one_chunk() -> None:
    [chunk] = split_program("empty", "1", b"")
    assert (chunk.chunk_count, chunk.size, chunk.data) == (1, 0, "")
    assert assemble_program([chunk]) == b""


def test_assemble_rejects_missing_mixed_and_corrupt() -> None:
    chunks = split_program("O1", "1", b"abcdefgh", chunk_size=3)
    with pytest.raises(PayloadError, match=r"missing chunks \[1\] of 3"):
        assemble_program([chunks[0], chunks[2]])
    other = split_program("O2", "1", b"abcdefgh", chunk_size=3)
    with pytest.raises(PayloadError, match="another transfer"):
        assemble_program([chunks[0], other[1], chunks[2]])
    corrupt = chunks[1].model_copy(update={"data": "eHh4"})  # "xxx"
    with pytest.raises(PayloadError, match="SHA-256 does not match"):
        assemble_program([chunks[0], corrupt, chunks[2]])
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        split_program("O1", "1", b"a", chunk_size=0)
