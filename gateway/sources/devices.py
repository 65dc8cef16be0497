"""The MTConnect device model (Devices.xml) and its mapping to Arbor's canonical signals.

An SHDR key names a DataItem of the device by ``id``, else ``name``, else ``<Source>``. The
DataItem's ``category``/``type``/``subType`` and the component it sits in (Controller, Path,
``Linear`` X/Y/Z, ``Rotary`` C used as the spindle, Door, Coolant, the Device itself) decide which
canonical signal (``protocol.CATALOGUE``) it becomes. DataItems without a catalogue meaning keep
their value under the vendor name ``x_mtc_<id>`` so nothing an adapter says is lost.

Namespaces are ignored (MTConnect 1.x and 2.x files read the same), so any adapter's
Devices.xml works without code.
"""

from __future__ import annotations

__all__ = [
    "DataItem",
    "DeviceModel",
    "Target",
    "TargetKind",
    "load_devices",
    "parse_devices",
    "select_device",
]

import logging
import math
import re
import xml.etree.ElementTree as ET  # the file is the operator's own config, not network input
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from gateway.errors import DeviceModelError
from protocol import CATALOGUE, Dtype, SignalChannel

log = logging.getLogger(__name__)


class TargetKind(StrEnum):
    """What a DataItem's values become."""

    TELEMETRY = "telemetry"  # a sampled value on the telemetry channel
    EVENT = "event"  # a value change on the event channel
    CONDITION = "condition"  # an alarm condition (ConditionEvent)
    MESSAGE = "message"  # MTConnect MESSAGE: native code + text -> the ``message`` event
    PATH_POSITION = "path_position"  # "x y z" -> three vendor telemetry values


@dataclass(frozen=True, slots=True)
class Target:
    """Where a DataItem's values go: a signal name, its channel kind and value type.

    ``scale`` (then ``offset``) turns numeric values from the unit the adapter sends (the
    DataItem's ``nativeUnits``, else ``units``) into the catalogue's unit (W -> kW, INCH -> mm,
    MILLIMETER/SECOND -> mm/min, ...); ``component`` is the label of conditions (``spindle``,
    ``x_axis``, ``controller``, ``path.logic_program``).
    """

    kind: TargetKind
    signal: str
    dtype: Dtype
    scale: float = 1.0
    values: tuple[str, ...] | None = None
    component: str = ""
    offset: float = 0.0  # added after ``scale`` (FAHRENHEIT -> CELSIUS)
    # the same from the DataItem's ``units``: for an adapter that says ``* conversionRequired:
    # no`` (it sends values already in ``units``, not in ``nativeUnits``)
    units_scale: float = 1.0
    units_offset: float = 0.0

    @property
    def channel(self) -> SignalChannel:
        """The Arbor channel: telemetry for samples, event for everything else."""
        if self.kind in (TargetKind.TELEMETRY, TargetKind.PATH_POSITION):
            return SignalChannel.TELEMETRY
        return SignalChannel.EVENT


@dataclass(frozen=True, slots=True)
class DataItem:
    """One ``<DataItem>`` with the component it belongs to."""

    id: str
    name: str | None
    source: str | None
    category: str
    type: str
    sub_type: str | None
    representation: str | None
    units: str | None
    native_units: str | None
    sample_rate: float | None
    component_tag: str
    component_name: str | None
    component_id: str
    target: Target
    coordinate_system: str | None = None  # MACHINE, WORK, OBJECT, ... when the file says

    @property
    def arity(self) -> int:
        """How many SHDR fields follow this item's key on a line."""
        if self.category == "CONDITION":
            return 5  # level | native_code | native_severity | qualifier | text
        if self.type == "MESSAGE":
            return 2  # native_code | text
        if self.type == "ALARM":
            return 5  # code | native_code | severity | state | text (MTConnect 1.1)
        if self.representation == "TIME_SERIES":
            return 3  # count | rate | "v1 v2 ..."
        return 1


@dataclass(slots=True)
class DeviceModel:
    """A device of a Devices.xml: its name, uuid and DataItems reachable by SHDR key."""

    name: str
    uuid: str | None
    items: list[DataItem] = field(default_factory=list)
    by_key: dict[str, DataItem] = field(default_factory=dict)

    def lookup(self, key: str) -> DataItem | None:
        """The DataItem an SHDR key names (id, else name, else source), or ``None``."""
        return self.by_key.get(key)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


_VENDOR_BAD = re.compile(r"[^a-z0-9_]+")


def vendor_name(item_id: str) -> str:
    """``x_mtc_<id>``, the id lower-cased and reduced to ``[a-z0-9_]`` (at most 46 characters)."""
    tail = _VENDOR_BAD.sub("_", item_id.lower()).strip("_") or "item"
    if not tail[0].isalnum():
        tail = "v" + tail
    return f"x_mtc_{tail[:46]}"


# (type, subType or None) -> catalogue signal, for items whose component does not matter.
_PLAIN: dict[tuple[str, str | None], str] = {
    ("EXECUTION", None): "execution",
    ("CONTROLLER_MODE", None): "controller_mode",
    ("FUNCTIONAL_MODE", None): "functional_mode",
    ("PROGRAM", None): "program",
    ("PROGRAM", "ACTIVE"): "program",
    ("PROGRAM", "MAIN"): "program",
    ("LINE", None): "program_line",
    ("LINE", "ABSOLUTE"): "program_line",
    ("LINE_NUMBER", None): "program_line",
    ("LINE_NUMBER", "ABSOLUTE"): "program_line",
    ("BLOCK", None): "block",
    ("PART_COUNT", None): "part_count",
    ("PART_COUNT", "ALL"): "part_count",
    ("PART_COUNT", "BAD"): "part_count_bad",
    ("PART_COUNT", "REJECTED"): "part_count_bad",
    ("TOOL_NUMBER", None): "tool_number",
    ("TOOL_ID", None): "tool_number",
    ("EMERGENCY_STOP", None): "emergency_stop",
    ("AVAILABILITY", None): "availability",
    ("DOOR_STATE", None): "door_state",
    ("PATH_FEEDRATE", None): "feedrate",
    ("PATH_FEEDRATE", "ACTUAL"): "feedrate",
    ("PATH_FEEDRATE", "COMMANDED"): "feedrate_command",
    ("PATH_FEEDRATE", "PROGRAMMED"): "feedrate_command",
    ("PATH_FEEDRATE_OVERRIDE", None): "feed_override",
    ("PATH_FEEDRATE_OVERRIDE", "PROGRAMMED"): "feed_override",
    ("PATH_FEEDRATE_OVERRIDE", "OPERATOR"): "feed_override",
    ("PATH_FEEDRATE_OVERRIDE", "RAPID"): "rapid_override",
    ("PATH_FEEDRATE", "OVERRIDE"): "feed_override",  # MTConnect 1.1
    # a spindle override outside the spindle's component (a Path, the Controller)
    ("ROTARY_VELOCITY_OVERRIDE", None): "spindle_override",
    ("ROTARY_VELOCITY_OVERRIDE", "PROGRAMMED"): "spindle_override",
    ("ROTARY_VELOCITY_OVERRIDE", "OPERATOR"): "spindle_override",
    ("SPINDLE_SPEED", "OVERRIDE"): "spindle_override",  # MTConnect 1.1
    ("ACCUMULATED_TIME", "x:CUTTING_TIME"): "cutting_time",
    ("ACCUMULATED_TIME", "x:OPERATING_TIME"): "operating_time",
    ("ACCUMULATED_TIME", "x:SPINDLE_RUN_TIME"): "spindle_run_time",
}

_SPINDLE: dict[tuple[str, str | None], str] = {
    ("ROTARY_VELOCITY", None): "spindle_speed",
    ("ROTARY_VELOCITY", "ACTUAL"): "spindle_speed",
    ("SPINDLE_SPEED", None): "spindle_speed",
    ("SPINDLE_SPEED", "ACTUAL"): "spindle_speed",
    ("ROTARY_VELOCITY", "COMMANDED"): "spindle_speed_command",
    ("ROTARY_VELOCITY", "PROGRAMMED"): "spindle_speed_command",
    ("SPINDLE_SPEED", "COMMANDED"): "spindle_speed_command",
    ("ROTARY_VELOCITY_OVERRIDE", None): "spindle_override",
    ("ROTARY_VELOCITY_OVERRIDE", "PROGRAMMED"): "spindle_override",
    ("ROTARY_VELOCITY_OVERRIDE", "OPERATOR"): "spindle_override",
    ("SPINDLE_SPEED", "OVERRIDE"): "spindle_override",  # MTConnect 1.1
    ("SPINDLE_SPEED_OVERRIDE", None): "spindle_override",
    ("LOAD", None): "spindle_load",
    ("LOAD", "ACTUAL"): "spindle_load",
    ("TEMPERATURE", None): "spindle_temperature",
    ("ACCUMULATED_TIME", "x:SPINDLE_RUN_TIME"): "spindle_run_time",
}

_WATTS = {"WATT": 0.001, "KILOWATT": 1.0}

# Catalogue unit -> MTConnect unit -> (scale, offset) into it. A unit not listed is taken to be
# the catalogue's own already (PERCENT, REVOLUTION/MINUTE, ...).
_RAD = 180.0 / math.pi
_CONVERSIONS: dict[str, dict[str, tuple[float, float]]] = {
    "mm": {
        "MILLIMETER": (1.0, 0.0),
        "MICROMETER": (0.001, 0.0),
        "MICRON": (0.001, 0.0),
        "CENTIMETER": (10.0, 0.0),
        "METER": (1000.0, 0.0),
        "INCH": (25.4, 0.0),
        "FOOT": (304.8, 0.0),
    },
    "deg": {"DEGREE": (1.0, 0.0), "RADIAN": (_RAD, 0.0)},
    "mm/min": {
        "MILLIMETER/MINUTE": (1.0, 0.0),
        "MILLIMETER/SECOND": (60.0, 0.0),
        "METER/MINUTE": (1000.0, 0.0),
        "METER/SECOND": (60_000.0, 0.0),
        "INCH/MINUTE": (25.4, 0.0),
        "INCH/SECOND": (1524.0, 0.0),
        "FOOT/MINUTE": (304.8, 0.0),
        "FOOT/SECOND": (18_288.0, 0.0),
    },
    "rev/min": {
        "REVOLUTION/MINUTE": (1.0, 0.0),
        "REVOLUTION/SECOND": (60.0, 0.0),
        "RADIAN/SECOND": (60.0 / (2 * math.pi), 0.0),
        "DEGREE/SECOND": (60.0 / 360.0, 0.0),
    },
    "°C": {
        "CELSIUS": (1.0, 0.0),
        "FAHRENHEIT": (5.0 / 9.0, -32.0 * 5.0 / 9.0),
        "KELVIN": (1.0, -273.15),
    },
    "s": {
        "SECOND": (1.0, 0.0),
        "MILLISECOND": (0.001, 0.0),
        "MINUTE": (60.0, 0.0),
        "HOUR": (3600.0, 0.0),
    },
}


def _conversion(unit: str | None, elem: ET.Element, native: bool = True) -> tuple[float, float]:
    """(scale, offset) from what the adapter sends for ``elem`` (its ``nativeUnits``, else
    ``units``; only ``units`` when not ``native``) to the catalogue ``unit``."""
    given = (elem.get("nativeUnits") if native else None) or elem.get("units") or ""
    native_units = given.strip().upper()
    if unit == "kW":
        scale, offset = _WATTS.get(native_units or "WATT", 0.001), 0.0
    else:
        scale, offset = _CONVERSIONS.get(unit or "", {}).get(native_units, (1.0, 0.0))
    if not native:
        return scale, offset
    try:  # nativeScale: the adapter sends value * nativeScale
        native_scale = float(elem.get("nativeScale") or 1.0)
    except ValueError:
        native_scale = 1.0
    if native_scale not in (0.0, 1.0) and math.isfinite(native_scale):
        scale /= native_scale
    return scale, offset


@dataclass(frozen=True, slots=True)
class _Component:
    tag: str
    name: str | None
    id: str
    is_spindle: bool
    loads: int = 0  # LOAD samples declared in it (a mill-turn spindle has the C axis's too)


_AXIS_NAME = re.compile(r"([xyzabc])\d*", re.IGNORECASE)


def _axis(comp: _Component) -> str | None:
    """The axis letter of a Linear/Rotary: its name ``X``, or ``Z1``/``C2`` on multi-turret
    lathes and multi-spindle machines (the name, else the id when it has none)."""
    m = _AXIS_NAME.fullmatch((comp.name if comp.name is not None else comp.id).strip())
    return m.group(1).lower() if m else None


def _component_label(comp: _Component) -> str:
    axis = _axis(comp)
    if comp.is_spindle:
        return "spindle"
    if comp.tag in ("Linear", "Rotary") and axis is not None:
        return f"{axis}_axis"
    base = (comp.name or comp.tag).lower()
    return re.sub(r"[^a-z0-9_]+", "_", base)[:40] or "device"


def _catalogue_signal(
    cat: str, typ: str, sub: str | None, comp: _Component, elem: ET.Element
) -> str | None:
    key = (typ, sub)
    axis = _axis(comp)
    units = (elem.get("units") or elem.get("nativeUnits") or "").upper()
    if units == "PERCENT" and typ in ("SPINDLE_SPEED", "ROTARY_VELOCITY"):
        return "spindle_override"  # MTConnect 1.1 overrides were speeds in PERCENT
    if units == "PERCENT" and typ == "PATH_FEEDRATE":
        return "feed_override"
    if (
        comp.is_spindle
        and comp.loads > 1
        and typ == "LOAD"
        and sub in (None, "ACTUAL")
        and axis in ("a", "b", "c")
    ):
        # a spindle that is also a C axis (mill-turn) may carry both loads: ``Cload``, ``Sload``
        # (alone, ``Cload`` of a Rotary C spindle is the spindle's load: cppagent's VMC-3Axis)
        label = (elem.get("name") or elem.get("id") or "").lower()
        if label.startswith(axis) and not label.startswith("s"):
            return f"load_{axis}"
    if comp.is_spindle and key in _SPINDLE:
        return _SPINDLE[key]
    if comp.tag == "Linear" and axis in ("x", "y", "z"):
        if typ == "POSITION" and sub in (None, "ACTUAL"):
            return f"position_{axis}"
        if typ == "LOAD" and sub in (None, "ACTUAL"):
            return f"load_{axis}"
    if comp.tag == "Rotary" and axis in ("a", "b", "c"):
        if typ == "ANGLE" and sub in (None, "ACTUAL"):
            return f"position_{axis}"  # also the C axis of a spindle that can index
        if typ == "LOAD" and sub in (None, "ACTUAL") and not comp.is_spindle:
            return f"load_{axis}"
    if typ == "TEMPERATURE" and sub is None:
        if comp.tag == "Coolant":
            return "coolant_temperature"
        if comp.tag == "Device":
            return "ambient_temperature"
    if typ == "WATTAGE" and comp.tag in ("Device", "Electric", "Controller"):
        return "power"
    if cat == "EVENT" and typ == "MESSAGE":
        return "message"
    return _PLAIN.get(key)


def _vendor_target(cat: str, item_id: str) -> Target:
    if cat == "SAMPLE":
        return Target(TargetKind.TELEMETRY, vendor_name(item_id), Dtype.FLOAT)
    return Target(TargetKind.EVENT, vendor_name(item_id), Dtype.STR)


def _target(elem: ET.Element, comp: _Component, label: str) -> Target:
    cat = (elem.get("category") or "").upper()
    typ = (elem.get("type") or "").upper()
    sub = elem.get("subType")
    item_id = elem.get("id") or ""
    units = (elem.get("nativeUnits") or elem.get("units") or "").upper()
    representation = (elem.get("representation") or "").upper()
    if cat == "CONDITION":
        return Target(TargetKind.CONDITION, "condition", Dtype.STR, component=label)
    if typ == "MESSAGE":
        return Target(TargetKind.MESSAGE, "message", Dtype.STR)
    if typ == "PATH_POSITION" or (cat == "SAMPLE" and units.endswith("_3D")):
        # three numbers "x y z" (PATH_POSITION, ORIENTATION, a POSITION in MILLIMETER_3D, ...)
        return Target(TargetKind.PATH_POSITION, vendor_name(item_id), Dtype.FLOAT)
    if representation in ("DATA_SET", "TABLE") or typ == "ALARM":
        return Target(TargetKind.EVENT, vendor_name(item_id), Dtype.STR)  # kept as text
    name = _catalogue_signal(cat, typ, sub, comp, elem)
    signal = CATALOGUE.get(name) if name is not None else None
    if signal is not None:
        kind = (
            TargetKind.TELEMETRY if signal.channel is SignalChannel.TELEMETRY else TargetKind.EVENT
        )
        scale, offset, units_scale, units_offset = (1.0, 0.0, 1.0, 0.0)
        if signal.dtype is Dtype.FLOAT:
            scale, offset = _conversion(signal.unit, elem)
            units_scale, units_offset = _conversion(signal.unit, elem, native=False)
        return Target(
            kind,
            signal.name,
            signal.dtype,
            scale,
            signal.values,
            offset=offset,
            units_scale=units_scale,
            units_offset=units_offset,
        )
    return _vendor_target(cat, item_id)


def _is_spindle(elem: ET.Element) -> bool:
    if _local(elem.tag) == "Spindle":  # MTConnect 1.0/1.1 had a Spindle component
        return True
    if _local(elem.tag) != "Rotary":
        return False
    modes: set[str] = set()
    has_velocity = False
    for item in elem.iter():
        if _local(item.tag) != "DataItem":
            continue
        typ = (item.get("type") or "").upper()
        if typ == "ROTARY_MODE":
            modes |= {
                (v.text or "").strip().upper() for v in item.iter() if _local(v.tag) == "Value"
            }
        if typ in ("ROTARY_VELOCITY", "SPINDLE_SPEED"):
            has_velocity = True
    if modes:
        return "SPINDLE" in modes
    return has_velocity


def _direct_items(comp_elem: ET.Element) -> list[ET.Element]:
    out: list[ET.Element] = []
    for child in comp_elem:
        if _local(child.tag) == "DataItems":
            out.extend(c for c in child if _local(c.tag) == "DataItem")
    return out


@dataclass(slots=True)
class _Walk:
    """What the walk of one device needs besides the element at hand."""

    model: DeviceModel
    coordinate_systems: dict[str, str]  # CoordinateSystem id -> type
    labels: dict[str, str] = field(default_factory=dict)  # condition label -> component id


def _coordinate_systems(device: ET.Element) -> dict[str, str]:
    return {
        e.get("id") or "": (e.get("type") or "").upper()
        for e in device.iter()
        if _local(e.tag) == "CoordinateSystem" and e.get("id")
    }


def _unique_label(walk: _Walk, label: str, comp_id: str) -> str:
    """Condition labels name components; two components with one label (two spindles, two
    Rotary ``C``) get ``label_2``, ``label_3`` ... so their conditions stay apart."""
    n, candidate = 1, label
    while walk.labels.setdefault(candidate, comp_id) != comp_id:
        n += 1
        candidate = f"{label}_{n}"
    return candidate


def _walk(elem: ET.Element, walk: _Walk) -> None:
    model = walk.model
    tag = _local(elem.tag)
    items = _direct_items(elem)
    loads = sum(
        1
        for e in items
        if (e.get("type") or "").upper() == "LOAD" and (e.get("category") or "").upper() == "SAMPLE"
    )
    comp = _Component(tag, elem.get("name"), elem.get("id") or "", _is_spindle(elem), loads)
    conditions = [e for e in items if (e.get("category") or "").upper() == "CONDITION"]
    base_label = _component_label(comp)
    if conditions:
        base_label = _unique_label(walk, base_label, comp.id or str(id(elem)))
    for e in items:
        item_id = e.get("id")
        if not item_id:
            continue
        label = base_label
        if len(conditions) > 1 and e in conditions:
            label = f"{base_label}.{(e.get('type') or 'condition').lower()}"[:64]
        source = None
        for child in e:
            if _local(child.tag) == "Source" and (child.text or "").strip():
                source = (child.text or "").strip()
        rate = e.get("sampleRate")
        try:
            sample_rate = float(rate) if rate else None
        except ValueError:
            sample_rate = None
        coordinate_system = (e.get("coordinateSystem") or "").upper() or None
        ref = e.get("coordinateSystemIdRef")
        if ref is not None and ref in walk.coordinate_systems:
            coordinate_system = walk.coordinate_systems[ref] or coordinate_system
        model.items.append(
            DataItem(
                id=item_id,
                name=e.get("name"),
                source=source,
                category=(e.get("category") or "").upper(),
                type=(e.get("type") or "").upper(),
                sub_type=e.get("subType"),
                representation=(e.get("representation") or "").upper() or None,
                units=e.get("units"),
                native_units=e.get("nativeUnits"),
                sample_rate=sample_rate,
                component_tag=tag,
                component_name=elem.get("name"),
                component_id=comp.id,
                target=_target(e, comp, label),
                coordinate_system=coordinate_system,
            )
        )
    for child in elem:
        if _local(child.tag) == "Components":
            for sub in child:
                _walk(sub, walk)


def _rank(item: DataItem) -> tuple[int, int]:
    """How well ``item`` fits its catalogue signal (higher is better): the signal's own subType
    (PROGRAM ACTIVE over MAIN, LINE_NUMBER ABSOLUTE over none), then machine coordinates over
    work coordinates (the catalogue's positions are machine positions)."""
    signal = CATALOGUE[item.target.signal]
    sub = (item.sub_type or "").upper() or None
    wanted = (signal.mtc_sub_type or "").upper() or None
    fit = 2 if sub == wanted else 1 if sub in (None, "ACTUAL") else 0
    coordinates = {"MACHINE": 1, None: 0}.get(item.coordinate_system, -1)
    return fit, coordinates


def _resolve_collisions(model: DeviceModel) -> None:
    """One DataItem per catalogue signal: when several map to one (machine and work positions,
    a second spindle, a LINE_NUMBER beside a LINE), the best fitting one keeps it (the first in
    the file on a tie) and the others keep their values under their vendor names."""
    by_signal: dict[str, list[int]] = {}
    for index, item in enumerate(model.items):
        target = item.target
        if target.kind in (TargetKind.TELEMETRY, TargetKind.EVENT) and target.signal in CATALOGUE:
            by_signal.setdefault(target.signal, []).append(index)
    for signal, indexes in by_signal.items():
        if len(indexes) < 2:
            continue
        best = max(indexes, key=lambda i: (_rank(model.items[i]), -i))
        for i in indexes:
            if i == best:
                continue
            item = model.items[i]
            model.items[i] = replace(item, target=_vendor_target(item.category, item.id))
        log.info(
            "device %s: %s comes from DataItem %s; %s keep their own names (x_mtc_<id>)",
            model.name,
            signal,
            model.items[best].id,
            ", ".join(model.items[i].id for i in indexes if i != best),
        )


def _index(model: DeviceModel) -> None:
    # Lowest priority first, so id overrides name overrides source.
    for item in model.items:
        if item.source:
            model.by_key[item.source] = item
    for item in model.items:
        if item.name:
            model.by_key[item.name] = item
    for item in model.items:
        model.by_key[item.id] = item


_XML_DECLARATION = re.compile(r"\A\ufeff?\s*<\?xml[^>]*\?>")


def parse_devices(text: str | bytes, origin: str = "Devices.xml") -> list[DeviceModel]:
    """Every ``<Device>`` of a Devices.xml document (the 2.x ``<Agent>`` device is skipped)."""
    if isinstance(text, str):  # expat refuses a str that carries an encoding declaration
        text = _XML_DECLARATION.sub("", text, count=1)
    try:
        root = ET.fromstring(text)  # noqa: S314  (operator-supplied file; expat guards entities)
    except (ET.ParseError, ValueError) as exc:
        raise DeviceModelError(f"{origin}: not well-formed XML: {exc}") from None
    devices: list[DeviceModel] = []
    for elem in root.iter():
        if _local(elem.tag) != "Device":
            continue
        name = elem.get("name") or elem.get("id") or ""
        model = DeviceModel(name=name, uuid=elem.get("uuid"))
        _walk(elem, _Walk(model, _coordinate_systems(elem)))
        _resolve_collisions(model)
        _index(model)
        devices.append(model)
    if not devices:
        raise DeviceModelError(f"{origin}: no <Device> element")
    return devices


def load_devices(path: Path) -> list[DeviceModel]:
    """Read and parse a Devices.xml file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DeviceModelError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_devices(data, str(path))


def select_device(devices: list[DeviceModel], name: str | None, origin: str) -> DeviceModel:
    """The device called ``name`` (by name or uuid); with no name, the only device of the file."""
    names = ", ".join(d.name for d in devices)
    if name is None:
        if len(devices) == 1:
            return devices[0]
        raise DeviceModelError(f"{origin} describes several devices ({names}); name one")
    for d in devices:
        if name in (d.name, d.uuid):
            return d
    raise DeviceModelError(f"{origin} has no device {name!r} (it has: {names})")
