"""Hypothesis strategies from the contract's JSON Schemas (docs/schemas/*.json).

A small converter for the subset the generated schemas use ($ref/$defs, type lists, properties,
required, additionalProperties, patternProperties, enum, const, anyOf/oneOf, items with bounds,
min/max, pattern). ``date-time`` strings are drawn near ``now`` (inside ingest's accepted window)
most of the time, so valid messages are the common case; :func:`hostile` mutates them (drop a
required field, add an unknown one, swap a type, extreme numbers).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

__all__ = ["from_schema", "hostile", "load_schema"]

SCHEMAS = Path(__file__).resolve().parents[3] / "docs" / "schemas"


def load_schema(name: str) -> dict[str, Any]:
    return dict(json.loads((SCHEMAS / f"{name}.json").read_text(encoding="utf-8")))


def _timestamps(now: datetime) -> st.SearchStrategy[str]:
    near = st.integers(-3_600_000, 60_000).map(
        lambda ms: (now + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    )
    return st.one_of(near, near, near, st.from_regex(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z\Z"))


def from_schema(
    schema: dict[str, Any], root: dict[str, Any] | None = None, now: datetime | None = None
) -> st.SearchStrategy[Any]:
    """A strategy of JSON values that the schema describes (mostly valid instances)."""
    root = root or schema
    now = now or datetime.now(UTC)
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return st.deferred(lambda: from_schema(root["$defs"][name], root, now))
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(s, root, now) for s in schema[key]])
    types = schema.get("type", ["string", "number", "null"])
    if isinstance(types, list):
        return st.one_of([from_schema({**schema, "type": t}, root, now) for t in types])
    if types == "null":
        return st.none()
    if types == "boolean":
        return st.booleans()
    if types == "integer":
        return st.integers(schema.get("minimum", -(2**31)), schema.get("maximum", 2**31))
    if types == "number":
        return st.one_of(
            st.integers(-(10**6), 10**6), st.floats(allow_nan=False, allow_infinity=False)
        )
    if types == "string":
        if schema.get("format") == "date-time":
            return _timestamps(now)
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(
                lambda s: len(s) <= schema.get("maxLength", 1024)
            )
        return st.text(max_size=min(schema.get("maxLength", 40), 40))
    if types == "array":
        lo = schema.get("minItems", 0)
        return st.lists(
            from_schema(schema.get("items", {}), root, now),
            min_size=lo,
            max_size=max(lo, min(schema.get("maxItems", 5), 5)),
        )
    if types == "object":
        return _object(schema, root, now)
    raise ValueError(f"schema type {types!r} not handled")


def _object(schema: dict[str, Any], root: dict[str, Any], now: datetime) -> st.SearchStrategy[Any]:
    props: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    lo = max(schema.get("minProperties", 0), 0)
    optional = sorted(set(props) - required)
    pattern = next(iter(schema.get("patternProperties", {}).items()), None)

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out = {k: draw(from_schema(props[k], root, now)) for k in sorted(required)}
        chosen = (
            draw(st.lists(st.sampled_from(optional), unique=True, max_size=6)) if optional else []
        )
        for k in chosen:
            out[k] = draw(from_schema(props[k], root, now))
        if pattern is not None and draw(st.booleans()):
            key = draw(st.from_regex(pattern[0], fullmatch=True))
            out[key] = draw(from_schema(pattern[1], root, now))
        while len(out) < lo and optional:
            k = draw(st.sampled_from(optional))
            out[k] = draw(from_schema(props[k], root, now))
        return out

    return build()


@st.composite
def hostile(draw: st.DrawFn, schema: dict[str, Any], now: datetime) -> Any:
    """A schema instance, half the time mutated into something the contract forbids."""
    value = draw(from_schema(schema, now=now))
    how = draw(st.sampled_from(["valid", "valid", "drop", "unknown", "retype", "extreme"]))
    if how == "valid" or not isinstance(value, dict):
        return value
    path: list[Any] = []
    node: Any = value
    while True:  # descend to a random nested object
        kids = [k for k, v in node.items() if isinstance(v, dict | list) and v]
        if not kids or not draw(st.booleans()):
            break
        k = draw(st.sampled_from(sorted(kids, key=str)))
        child = node[k]
        if isinstance(child, list):
            child = child[draw(st.integers(0, len(child) - 1))]
        if not isinstance(child, dict):
            break
        path.append(k)
        node = child
    keys = sorted(node)
    if how == "drop" and keys:
        node.pop(draw(st.sampled_from(keys)))
    elif how == "unknown":
        node[draw(st.sampled_from(["sampels", "Seq", "extra", "__proto__", "x"]))] = 1
    elif how == "retype" and keys:
        node[draw(st.sampled_from(keys))] = draw(
            st.sampled_from(["abc", True, [], {}, None, "12", -1, 1e308])
        )
    elif how == "extreme" and keys:
        node[draw(st.sampled_from(keys))] = draw(
            st.sampled_from([2**63, -(2**63) - 1, 1e308, -1e-308, "\x00", "é" * 2000, 2**31])
        )
    return value
