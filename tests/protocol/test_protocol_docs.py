"""docs/protocol.md stays true: its examples decode, its catalogue table lists every signal."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protocol import (
    CATALOGUE,
    decode_command,
    decode_event,
    decode_reply,
    decode_status,
    decode_telemetry,
)
from protocol.models import ProgramCommand, RebirthCommand

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")
EXAMPLES = re.findall(r"<!-- example: ([a-z ]+) -->\n```json\n(.*?)```", DOC, flags=re.S)


def test_the_doc_has_examples_of_every_message() -> None:
    kinds = sorted({kind for kind, _ in EXAMPLES})
    assert kinds == [
        "command program",
        "command rebirth",
        "event",
        "reply",
        "status",
        "telemetry",
    ]


@pytest.mark.parametrize(("kind", "body"), EXAMPLES)
def test_every_example_decodes(kind: str, body: str) -> None:
    data = body.encode()
    if kind == "status":
        assert decode_status(data).v == 1
    elif kind == "telemetry":
        assert decode_telemetry(data).samples
    elif kind == "event":
        assert decode_event(data).events
    elif kind == "reply":
        assert decode_reply(data).id
    elif kind == "command program":
        assert isinstance(decode_command(data, "program"), ProgramCommand)
    else:
        assert isinstance(decode_command(data, "rebirth"), RebirthCommand)


def test_catalogue_table_lists_every_signal() -> None:
    for name, signal in CATALOGUE.items():
        row = re.search(
            rf"^\| `{name}` \| {signal.channel.value} \| {signal.dtype.value} \|", DOC, re.M
        )
        assert row is not None, f"docs/protocol.md lacks the catalogue row of {name}"
