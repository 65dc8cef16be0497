"""MTConnect assets from SHDR: cutting tools become tool-life records.

A ``CuttingTool`` asset carries ``CuttingToolLifeCycle`` with ``CutterStatus`` (``Status`` words:
NEW, USED, EXPIRED, BROKEN, ...) and ``ToolLife`` entries (``type`` MINUTES / PART_COUNT / WEAR,
``countDirection``, ``warning``, ``limit``, ``initial``, the value as text). :class:`AssetStore`
keeps the current XML of each asset so ``@UPDATE_ASSET@`` can change one element, and turns a
cutting tool into a :class:`ToolLifeRecord`.

Asset XML comes from the network; it is parsed by expat (which bounds entity expansion and never
fetches external entities) and a document over :data:`MAX_ASSET_CHARS` is refused.
"""

from __future__ import annotations

__all__ = ["MAX_ASSET_CHARS", "AssetStore", "ToolLife", "ToolLifeRecord", "parse_cutting_tool"]

import re
import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

MAX_ASSET_CHARS = 1024 * 1024
MAX_ASSETS = 10_000


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _float(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ToolLife:
    """One ``ToolLife`` entry of a cutting tool."""

    type: str
    value: float | None
    count_direction: str | None
    warning: float | None
    limit: float | None
    initial: float | None


@dataclass(frozen=True, slots=True)
class ToolLifeRecord:
    """The tool-life state of one cutting tool asset."""

    asset_id: str
    tool_id: str | None
    serial_number: str | None
    program_tool_number: str | None
    status: tuple[str, ...]
    life: tuple[ToolLife, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (short keys: it travels inside a 1024-character event value)."""
        out: dict[str, Any] = {"asset": self.asset_id, "status": list(self.status)}
        if self.tool_id is not None:
            out["tool"] = self.tool_id
        if self.program_tool_number is not None:
            out["ptn"] = self.program_tool_number
        out["life"] = [
            {
                k: v
                for k, v in (
                    ("type", life.type),
                    ("value", life.value),
                    ("dir", life.count_direction),
                    ("warn", life.warning),
                    ("limit", life.limit),
                )
                if v is not None
            }
            for life in self.life
        ]
        return out


_XML_DECLARATION = re.compile(r"\A\ufeff?\s*<\?xml[^>]*\?>")


def _parse(xml: str) -> ET.Element:
    if len(xml) > MAX_ASSET_CHARS:
        raise ValueError(f"asset document is {len(xml)} characters (at most {MAX_ASSET_CHARS})")
    # ``<?xml ... encoding="utf-8"?>`` heads some adapters' assets; expat refuses it in a str
    xml = _XML_DECLARATION.sub("", xml, count=1)
    try:
        return ET.fromstring(xml)  # noqa: S314  (expat: no external entities, bounded expansion)
    except ET.ParseError as exc:
        raise ValueError(f"asset is not well-formed XML: {exc}") from None


def _tool_record(root: ET.Element, asset_id: str) -> ToolLifeRecord:
    status: list[str] = []
    life: list[ToolLife] = []
    ptn: str | None = None
    for elem in root.iter():
        tag = _local(elem.tag)
        if tag == "CutterStatus":
            status.extend(
                (s.text or "").strip().upper()
                for s in elem
                if _local(s.tag) == "Status" and (s.text or "").strip()
            )
        elif tag == "ToolLife":
            life.append(
                ToolLife(
                    type=(elem.get("type") or "").upper(),
                    value=_float(elem.text),
                    count_direction=(elem.get("countDirection") or "").upper() or None,
                    warning=_float(elem.get("warning")),
                    limit=_float(elem.get("limit")),
                    initial=_float(elem.get("initial")),
                )
            )
        elif tag == "ProgramToolNumber" and ptn is None:
            ptn = (elem.text or "").strip() or None
    return ToolLifeRecord(
        asset_id=root.get("assetId") or asset_id,
        tool_id=root.get("toolId"),
        serial_number=root.get("serialNumber"),
        program_tool_number=ptn,
        status=tuple(status),
        life=tuple(life),
    )


def parse_cutting_tool(xml: str, asset_id: str = "") -> ToolLifeRecord:
    """A tool-life record from a ``CuttingTool`` document; ``ValueError`` if it is not one."""
    root = _parse(xml)
    if _local(root.tag) not in ("CuttingTool", "CuttingToolArchetype"):
        raise ValueError(f"asset {asset_id!r} is a {_local(root.tag)}, not a CuttingTool")
    return _tool_record(root, asset_id)


class AssetStore:
    """The current assets of one device (at most :data:`MAX_ASSETS`, oldest forgotten first)."""

    def __init__(self) -> None:
        self._assets: OrderedDict[str, tuple[str, ET.Element]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._assets)

    def add(self, asset_id: str, asset_type: str, xml: str) -> ToolLifeRecord | None:
        """Store an asset; a cutting tool's tool-life record (``None`` for other types)."""
        root = _parse(xml)
        self._assets[asset_id] = (asset_type, root)
        self._assets.move_to_end(asset_id)
        while len(self._assets) > MAX_ASSETS:
            self._assets.popitem(last=False)
        if _local(root.tag) in ("CuttingTool", "CuttingToolArchetype"):
            return _tool_record(root, asset_id)
        return None

    def update(self, asset_id: str, updates: tuple[tuple[str, str], ...]) -> ToolLifeRecord | None:
        """Apply ``@UPDATE_ASSET@`` pairs (element name -> text or an XML fragment)."""
        entry = self._assets.get(asset_id)
        if entry is None:
            raise ValueError(f"update of unknown asset {asset_id!r}")
        _asset_type, root = entry
        for name, value in updates:
            target = next((e for e in root.iter() if _local(e.tag) == name), None)
            if target is None:
                raise ValueError(f"asset {asset_id!r} has no element {name!r}")
            if value.strip().startswith("<"):
                fragment = _parse(value.strip())
                target.clear()
                target.attrib.update(fragment.attrib)
                target.text = fragment.text
                target.extend(list(fragment))
            else:
                target.text = value
        if _local(root.tag) in ("CuttingTool", "CuttingToolArchetype"):
            return _tool_record(root, asset_id)
        return None

    def remove(self, asset_id: str) -> bool:
        """Forget one asset; False if it was unknown."""
        return self._assets.pop(asset_id, None) is not None

    def remove_all(self, asset_type: str) -> list[str]:
        """Forget every asset of a type (all when ``asset_type`` is empty); their ids."""
        gone = [k for k, (t, _) in self._assets.items() if not asset_type or t == asset_type]
        for k in gone:
            del self._assets[k]
        return gone
