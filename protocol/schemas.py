"""JSON Schemas (draft 2020-12) of the v1 messages, generated from the models.

``python -m protocol.schemas docs/schemas`` writes one file per message; a test checks that the
committed files equal what this module generates, so the published schemas cannot drift.
"""

from __future__ import annotations

__all__ = ["SCHEMA_MODELS", "generate_schemas", "main", "render_schema"]

import sys
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from protocol.models import (
    Command,
    Event,
    ProgramCommand,
    RebirthCommand,
    Reply,
    Status,
    Telemetry,
)

#: File stem -> (model, topic pattern it travels on).
SCHEMA_MODELS: dict[str, tuple[type[BaseModel], str]] = {
    "status": (Status, "arbor/v1/{site}/{machine}/status"),
    "telemetry": (Telemetry, "arbor/v1/{site}/{machine}/telemetry"),
    "event": (Event, "arbor/v1/{site}/{machine}/event"),
    "command": (Command, "arbor/v1/{site}/{machine}/cmd/{name}"),
    "command-program": (ProgramCommand, "arbor/v1/{site}/{machine}/cmd/program"),
    "command-rebirth": (RebirthCommand, "arbor/v1/{site}/{machine}/cmd/rebirth"),
    "reply": (Reply, "arbor/v1/{site}/{machine}/reply/{name}"),
}


def _require_version(schema: dict[str, Any]) -> None:
    # ``v`` has a default for producers' convenience, but on the wire it is required.
    required = schema.setdefault("required", [])
    if "v" not in required:
        required.insert(0, "v")


def generate_schemas() -> dict[str, dict[str, Any]]:
    """File stem -> JSON Schema, for every v1 message."""
    out: dict[str, dict[str, Any]] = {}
    for stem, (model, topic) in SCHEMA_MODELS.items():
        schema = model.model_json_schema(mode="validation")
        _require_version(schema)
        out[stem] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://arbor.dev/schemas/v1/{stem}.json",
            "x-arbor-topic": topic,
            **schema,
        }
    return out


def render_schema(schema: dict[str, Any]) -> bytes:
    """The exact bytes written for a schema (sorted keys, 2-space indent, trailing newline)."""
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def main(argv: list[str] | None = None) -> int:
    """Write ``<stem>.json`` for every message into the directory given (default docs/schemas)."""
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0] if args else "docs/schemas")
    target.mkdir(parents=True, exist_ok=True)
    for stem, schema in generate_schemas().items():
        (target / f"{stem}.json").write_bytes(render_schema(schema))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
