"""The signal catalogue: every signal name Arbor knows, its unit, type and MTConnect meaning.

A *signal* is one named value of a machine (``spindle_speed``, ``execution``). Each travels on
exactly one channel: ``telemetry`` (sampled numbers, batched) or ``event`` (changes, sent when
they happen). The ``category`` is MTConnect's (SAMPLE / EVENT / CONDITION); overrides, for
instance, are EVENT in MTConnect but sampled with the loads on Arbor's telemetry channel.

Names outside the catalogue are allowed only in the vendor namespace ``x_<vendor>_<name>``
(e.g. ``x_i5_servo_temp_x``); such values may be any JSON scalar and are stored as they come.

The catalogue is immutable; :func:`catalogue_as_dict` gives the JSON the API serves.
"""

from __future__ import annotations

__all__ = [
    "CATALOGUE",
    "CONDITION_LEVELS",
    "CONDITION_SIGNAL",
    "CONTROLLER_MODE_VALUES",
    "EXECUTION_VALUES",
    "SIGNAL_NAME_PATTERN",
    "VENDOR_SIGNAL_PATTERN",
    "Dtype",
    "Signal",
    "SignalChannel",
    "catalogue_as_dict",
    "get_signal",
    "is_vendor_signal",
]

import re
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

UNAVAILABLE = "UNAVAILABLE"

EXECUTION_VALUES: tuple[str, ...] = (
    "READY",
    "ACTIVE",
    "INTERRUPTED",
    "FEED_HOLD",
    "STOPPED",
    "OPTIONAL_STOP",
    "PROGRAM_STOPPED",
    "PROGRAM_COMPLETED",
    "WAIT",
    UNAVAILABLE,
)
CONTROLLER_MODE_VALUES: tuple[str, ...] = (
    "AUTOMATIC",
    "MANUAL",
    "MANUAL_DATA_INPUT",
    "SEMI_AUTOMATIC",
    "EDIT",
    UNAVAILABLE,
)
CONDITION_LEVELS: tuple[str, ...] = ("NORMAL", "WARNING", "FAULT", UNAVAILABLE)
FUNCTIONAL_MODE_VALUES: tuple[str, ...] = (
    "PRODUCTION",
    "SETUP",
    "TEARDOWN",
    "MAINTENANCE",
    "PROCESS_DEVELOPMENT",
    UNAVAILABLE,
)
EMERGENCY_STOP_VALUES: tuple[str, ...] = ("ARMED", "TRIGGERED", UNAVAILABLE)
AVAILABILITY_VALUES: tuple[str, ...] = ("AVAILABLE", UNAVAILABLE)
DOOR_STATE_VALUES: tuple[str, ...] = ("OPEN", "CLOSED", "UNLATCHED", UNAVAILABLE)

#: The pseudo-signal of condition events (alarms); it has no ``value`` but a ``condition`` object.
CONDITION_SIGNAL = "condition"

SIGNAL_NAME_PATTERN = r"[a-z][a-z0-9_]{0,63}"
VENDOR_SIGNAL_PATTERN = r"x_[a-z0-9]{1,16}_[a-z0-9][a-z0-9_]{0,45}"
_VENDOR_RE = re.compile(VENDOR_SIGNAL_PATTERN)


class Dtype(StrEnum):
    """Value type of a signal on the wire."""

    FLOAT = "float"  # JSON number (integers accepted), finite
    INT = "int"  # JSON integer (no fraction, not a bool)
    STR = "str"  # JSON string, at most 1024 characters
    BOOL = "bool"  # JSON true / false
    ENUM = "enum"  # JSON string, one of ``Signal.values``


class SignalChannel(StrEnum):
    """The Arbor channel a signal travels on."""

    TELEMETRY = "telemetry"
    EVENT = "event"


@dataclass(frozen=True, slots=True)
class Signal:
    """One catalogue entry.

    ``unit`` is Arbor's unit (``None`` for dimensionless events); ``mtc_type``,
    ``mtc_sub_type`` and ``mtc_category`` name the MTConnect DataItem it maps to, ``component``
    the MTConnect component it sits in (Controller, Path, Rotary, Linear, Door, Device).
    ``values`` is set for enums only.
    """

    name: str
    dtype: Dtype
    channel: SignalChannel
    unit: str | None
    mtc_type: str
    mtc_sub_type: str | None
    mtc_category: str
    component: str
    description: str
    values: tuple[str, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the shape the API serves)."""
        return {
            "name": self.name,
            "dtype": self.dtype.value,
            "channel": self.channel.value,
            "unit": self.unit,
            "mtconnect": {
                "type": self.mtc_type,
                "sub_type": self.mtc_sub_type,
                "category": self.mtc_category,
            },
            "component": self.component,
            "description": self.description,
            "values": list(self.values) if self.values is not None else None,
        }


_T = SignalChannel.TELEMETRY
_E = SignalChannel.EVENT


def _sample(
    name: str,
    unit: str | None,
    mtc_type: str,
    sub: str | None,
    component: str,
    description: str,
    *,
    category: str = "SAMPLE",
    dtype: Dtype = Dtype.FLOAT,
) -> Signal:
    return Signal(name, dtype, _T, unit, mtc_type, sub, category, component, description)


def _event(
    name: str,
    dtype: Dtype,
    mtc_type: str,
    sub: str | None,
    component: str,
    description: str,
    values: tuple[str, ...] | None = None,
    unit: str | None = None,
) -> Signal:
    return Signal(name, dtype, _E, unit, mtc_type, sub, "EVENT", component, description, values)


def _axes() -> list[Signal]:
    linear = [
        _sample(
            f"position_{axis}",
            "mm",
            "POSITION",
            "ACTUAL",
            f"Linear {axis.upper()}",
            f"Actual machine position of the {axis.upper()} axis.",
        )
        for axis in "xyz"
    ]
    rotary = [
        _sample(
            f"position_{axis}",
            "deg",
            "ANGLE",
            "ACTUAL",
            f"Rotary {axis.upper()}",
            f"Actual angle of the {axis.upper()} rotary axis.",
        )
        for axis in "abc"
    ]
    loads = [
        _sample(
            f"load_{axis}",
            "%",
            "LOAD",
            None,
            f"{'Linear' if axis in 'xyz' else 'Rotary'} {axis.upper()}",
            f"Servo load of the {axis.upper()} axis drive, percent of rated.",
        )
        for axis in "xyzabc"
    ]
    return [*linear, *rotary, *loads]


_SIGNALS: tuple[Signal, ...] = (
    # --- telemetry: sampled values -------------------------------------------------------------
    _sample("spindle_speed", "rev/min", "ROTARY_VELOCITY", "ACTUAL", "Rotary C (spindle)",
            "Actual spindle speed."),
    _sample("spindle_speed_command", "rev/min", "ROTARY_VELOCITY", "COMMANDED",
            "Rotary C (spindle)", "Programmed spindle speed (S word, after override)."),
    _sample("spindle_override", "%", "ROTARY_VELOCITY_OVERRIDE", None, "Rotary C (spindle)",
            "Spindle speed override.", category="EVENT"),
    _sample("spindle_load", "%", "LOAD", None, "Rotary C (spindle)",
            "Spindle motor load, percent of rated."),
    _sample("spindle_temperature", "°C", "TEMPERATURE", None, "Rotary C (spindle)",
            "Spindle (bearing or motor) temperature."),
    _sample("feedrate", "mm/min", "PATH_FEEDRATE", "ACTUAL", "Path",
            "Actual path feedrate."),
    _sample("feedrate_command", "mm/min", "PATH_FEEDRATE", "COMMANDED", "Path",
            "Programmed path feedrate (F word)."),
    _sample("feed_override", "%", "PATH_FEEDRATE_OVERRIDE", "PROGRAMMED", "Path",
            "Feedrate override.", category="EVENT"),
    _sample("rapid_override", "%", "PATH_FEEDRATE_OVERRIDE", "RAPID", "Path",
            "Rapid traverse override.", category="EVENT"),
    *_axes(),
    _sample("power", "kW", "WATTAGE", None, "Device",
            "Electrical power drawn by the machine (MTConnect's native unit is W)."),
    _sample("ambient_temperature", "°C", "TEMPERATURE", None, "Device",
            "Ambient (cabinet or shop floor) temperature."),
    _sample("coolant_temperature", "°C", "TEMPERATURE", None, "Coolant",
            "Coolant temperature."),
    _sample("cutting_time", "s", "ACCUMULATED_TIME", "x:CUTTING_TIME", "Controller",
            "Accumulated time in cut (feed moves with the spindle on), controller counter."),
    _sample("operating_time", "s", "ACCUMULATED_TIME", "x:OPERATING_TIME", "Controller",
            "Accumulated time powered on, controller counter."),
    _sample("spindle_run_time", "s", "ACCUMULATED_TIME", "x:SPINDLE_RUN_TIME", "Rotary C (spindle)",
            "Accumulated spindle running time, controller counter."),
    # --- events: sent when they change ------------------------------------------------------------
    _event("execution", Dtype.ENUM, "EXECUTION", None, "Path",
           "Execution state of the program.", EXECUTION_VALUES),
    _event("controller_mode", Dtype.ENUM, "CONTROLLER_MODE", None, "Path",
           "Operating mode of the controller.", CONTROLLER_MODE_VALUES),
    _event("functional_mode", Dtype.ENUM, "FUNCTIONAL_MODE", None, "Device",
           "What the machine is being used for (production, setup, maintenance, ...).",
           FUNCTIONAL_MODE_VALUES),
    _event("program", Dtype.STR, "PROGRAM", "ACTIVE", "Path",
           "Name of the active NC program (empty string when none)."),
    _event("program_line", Dtype.INT, "LINE_NUMBER", "ABSOLUTE", "Path",
           "Line number being executed in the active program."),
    _event("block", Dtype.STR, "BLOCK", None, "Path",
           "Text of the NC block being executed."),
    _event("part_count", Dtype.INT, "PART_COUNT", "ALL", "Path",
           "Parts completed (good and bad), controller counter; it may be reset by the operator."),
    _event("part_count_bad", Dtype.INT, "PART_COUNT", "BAD", "Path",
           "Parts rejected (scrap), counter."),
    _event("tool_number", Dtype.INT, "TOOL_NUMBER", None, "Path",
           "Number of the tool in the spindle."),
    _event("emergency_stop", Dtype.ENUM, "EMERGENCY_STOP", None, "Controller",
           "Emergency stop circuit state.", EMERGENCY_STOP_VALUES),
    _event("availability", Dtype.ENUM, "AVAILABILITY", None, "Device",
           "Whether the data source can deliver data for the machine.", AVAILABILITY_VALUES),
    _event("door_state", Dtype.ENUM, "DOOR_STATE", None, "Door",
           "Machine door state.", DOOR_STATE_VALUES),
    _event("message", Dtype.STR, "MESSAGE", None, "Controller",
           "Operator message shown by the controller (not an alarm)."),
)  # fmt: skip

#: Signal name -> entry. Read-only.
CATALOGUE: MappingProxyType[str, Signal] = MappingProxyType({s.name: s for s in _SIGNALS})


def get_signal(name: str) -> Signal | None:
    """The catalogue entry for ``name``, or ``None`` (also for vendor signals)."""
    return CATALOGUE.get(name)


def is_vendor_signal(name: str) -> bool:
    """True if ``name`` is in the vendor namespace ``x_<vendor>_<name>`` (1-16 character vendor)."""
    return _VENDOR_RE.fullmatch(name) is not None


def catalogue_as_dict() -> dict[str, Any]:
    """The catalogue as JSON-ready data (a fresh object each call, safe to mutate)."""
    return {
        "version": 1,
        "vendor_signal_pattern": VENDOR_SIGNAL_PATTERN,
        "condition_levels": list(CONDITION_LEVELS),
        "signals": [s.as_dict() for s in _SIGNALS],
    }
