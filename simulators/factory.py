"""A factory: its site, shift calendar and machines, built in code or loaded from TOML.

TOML shape (every problem is reported at once by :class:`~simulators.errors.FactoryConfigError`)::

    site = "plant1"
    [calendar]                       # optional; default: two shifts Mon-Fri, four breaks
    workdays = ["mon", "tue", "wed", "thu", "fri"]
    shifts = [{name = "early", start = "06:00", end = "14:00"},
              {name = "late", start = "14:00", end = "22:00"}]
    breaks = [{start = "09:30", end = "09:45"}]
    [[machines]]
    kind = "five_axis"               # five_axis | mill | lathe
    count = 10
    prefix = "fx"                    # ids fx-001 ... fx-010
    programs = ["o5101", "o5102"]    # optional subset of the kind's library

Times are UTC ``HH:MM``; an ``end`` earlier than ``start`` means the next day.
"""

from __future__ import annotations

__all__ = ["Factory", "MachineSpec", "default_factory", "load_factory", "parse_factory"]

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulators.calendar import DEFAULT_CALENDAR, Break, Shift, ShiftCalendar
from simulators.errors import FactoryConfigError
from simulators.programs import KINDS

_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_HM_RE = re.compile(r"([01]?[0-9]|2[0-4]):([0-5][0-9])")
_DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}


@dataclass(frozen=True, slots=True)
class MachineSpec:
    """One machine: its id (a topic level), kind name and the program names it may run."""

    machine_id: str
    kind: str
    programs: tuple[str, ...]


@dataclass(frozen=True)
class Factory:
    """A site with a calendar and its machines (ids unique within the site)."""

    site: str
    calendar: ShiftCalendar
    machines: tuple[MachineSpec, ...]


def default_factory(
    n: int, site: str = "sim", calendar: ShiftCalendar = DEFAULT_CALENDAR
) -> Factory:
    """``n`` machines ``m0001 ...``, kinds in the repeating mix mill, five_axis, lathe, mill."""
    if n < 1:
        raise ValueError("a factory needs at least one machine")
    mix = ("mill", "five_axis", "lathe", "mill")
    machines = []
    for i in range(n):
        kind = mix[i % len(mix)]
        machines.append(
            MachineSpec(f"m{i + 1:04d}", kind, tuple(p.name for p in KINDS[kind].programs))
        )
    return Factory(site, calendar, tuple(machines))


def _hm(value: Any, where: str, errors: list[str]) -> float:
    if not isinstance(value, str) or not _HM_RE.fullmatch(value):
        errors.append(f"{where}: expected a time 'HH:MM', got {value!r}")
        return 0.0
    h, m = value.split(":")
    return int(h) * 3600.0 + int(m) * 60.0


def _interval(item: Any, where: str, errors: list[str]) -> tuple[float, float]:
    if not isinstance(item, dict):
        errors.append(f"{where}: expected a table with start and end")
        return 0.0, 1.0
    start = _hm(item.get("start"), f"{where}.start", errors)
    end = _hm(item.get("end"), f"{where}.end", errors)
    if end <= start:
        end += 86400.0
    return start, end


def _calendar(raw: Any, errors: list[str]) -> ShiftCalendar:
    if raw is None:
        return DEFAULT_CALENDAR
    if not isinstance(raw, dict):
        errors.append("calendar: expected a table")
        return DEFAULT_CALENDAR
    days = raw.get("workdays", ["mon", "tue", "wed", "thu", "fri"])
    workdays: set[int] = set()
    if not isinstance(days, list):
        errors.append("calendar.workdays: expected a list of day names")
    else:
        for d in days:
            if d not in _DAYS:
                errors.append(f"calendar.workdays: unknown day {d!r} (use {', '.join(_DAYS)})")
            else:
                workdays.add(_DAYS[d])
    shifts = []
    raw_shifts = raw.get("shifts", [])
    if not isinstance(raw_shifts, list) or not raw_shifts:
        errors.append("calendar.shifts: expected a non-empty list of shifts")
        raw_shifts = []
    for i, s in enumerate(raw_shifts):
        a, b = _interval(s, f"calendar.shifts[{i}]", errors)
        name = s.get("name", f"shift{i + 1}") if isinstance(s, dict) else f"shift{i + 1}"
        shifts.append(Shift(str(name), a, b))
    breaks = []
    raw_breaks = raw.get("breaks", [])
    if not isinstance(raw_breaks, list):
        errors.append("calendar.breaks: expected a list")
        raw_breaks = []
    for i, s in enumerate(raw_breaks):
        a, b = _interval(s, f"calendar.breaks[{i}]", errors)
        breaks.append(Break(a, b))
    if not shifts:
        return DEFAULT_CALENDAR
    return ShiftCalendar(tuple(shifts), tuple(breaks), frozenset(workdays))


def parse_factory(data: dict[str, Any], source: str = "<config>") -> Factory:
    """Validate a parsed TOML document; raise :class:`FactoryConfigError` with every problem."""
    errors: list[str] = []
    site = data.get("site", "sim")
    if not isinstance(site, str) or not _ID_RE.fullmatch(site):
        errors.append(f"site: {site!r} is not a valid id ([a-z0-9][a-z0-9_-]{{0,63}})")
        site = "sim"
    unknown = set(data) - {"site", "calendar", "machines"}
    errors += [f"{k}: unknown key" for k in sorted(unknown)]
    calendar = _calendar(data.get("calendar"), errors)
    groups = data.get("machines")
    machines: list[MachineSpec] = []
    if not isinstance(groups, list) or not groups:
        errors.append("machines: expected at least one [[machines]] table")
        groups = []
    seen: set[str] = set()
    for gi, g in enumerate(groups):
        where = f"machines[{gi}]"
        if not isinstance(g, dict):
            errors.append(f"{where}: expected a table")
            continue
        errors += [
            f"{where}.{k}: unknown key"
            for k in sorted(set(g) - {"kind", "count", "prefix", "programs", "ids"})
        ]
        kind = g.get("kind")
        if kind not in KINDS:
            errors.append(f"{where}.kind: {kind!r} is not one of {', '.join(KINDS)}")
            continue
        library = [p.name for p in KINDS[kind].programs]
        programs = g.get("programs", library)
        if not isinstance(programs, list) or not programs:
            errors.append(f"{where}.programs: expected a non-empty list of program names")
            programs = library
        bad = [p for p in programs if p not in library]
        if bad:
            errors.append(f"{where}.programs: {bad} not in the {kind} library ({library})")
            programs = library
        ids = g.get("ids")
        if ids is None:
            count = g.get("count", 1)
            prefix = g.get("prefix", kind.replace("_", ""))
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                errors.append(f"{where}.count: expected a positive integer, got {count!r}")
                continue
            width = max(3, len(str(count)))
            ids = [f"{prefix}-{i + 1:0{width}d}" for i in range(count)]
        if not isinstance(ids, list):
            errors.append(f"{where}.ids: expected a list of machine ids")
            continue
        for mid in ids:
            if not isinstance(mid, str) or not _ID_RE.fullmatch(mid):
                errors.append(f"{where}: machine id {mid!r} is not a valid id")
            elif mid in seen:
                errors.append(f"{where}: machine id {mid!r} is used twice")
            else:
                seen.add(mid)
                machines.append(MachineSpec(mid, kind, tuple(programs)))
    if errors:
        raise FactoryConfigError(source, errors)
    return Factory(site, calendar, tuple(machines))


def load_factory(path: str | Path) -> Factory:
    """Read and validate a factory TOML file."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FactoryConfigError(str(p), [str(exc)]) from exc
    return parse_factory(data, str(p))
