"""Rules and their evaluation, as pure functions (no I/O).

A rule turns messages (or stored data) into *observations*: at source time `ts` the rule's
condition is true or false for one machine. `advance()` folds observations into a `RunState`
(the current run of true observations, and when runs were satisfied) and says whether the rule
*fires* (a run lasted `for_s`, `repeat_count` times within `repeat_window_s`) or *clears* (a false
observation after the run). The state lives in the database (`alert_rule_state`) because the
shared subscription hands one machine's messages to several workers.
"""

from __future__ import annotations

import fnmatch
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alerts.errors import RuleError

__all__ = [
    "SEVERITY_RANK",
    "AccuracyParams",
    "ConditionParams",
    "Kind",
    "Observation",
    "Outcome",
    "Rule",
    "RunState",
    "SilenceParams",
    "ThresholdParams",
    "ToolLifeParams",
    "UtilisationParams",
    "advance",
    "condition_observation",
    "parse_rule",
    "telemetry_observation",
]

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


class Kind(StrEnum):
    THRESHOLD = "threshold"
    CONDITION = "condition"
    SILENCE = "silence"
    TOOL_LIFE = "tool_life"
    ACCURACY = "accuracy"
    UTILISATION = "utilisation"


#: Kinds evaluated on the live stream; the others on stored data.
LIVE_KINDS = frozenset({Kind.THRESHOLD, Kind.CONDITION})

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}

Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ThresholdParams(_Params):
    """`signal op value` held for `for_s` seconds (source time), e.g. spindle_load > 120 for 2 s."""

    signal: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    op: Literal[">", ">=", "<", "<=", "==", "!="]
    value: Annotated[float, Field(allow_inf_nan=False)]
    for_s: Seconds = 0.0


class ConditionParams(_Params):
    """An alarm condition at one of `levels`; `code` and `component` are globs (`*` = any)."""

    code: Annotated[str, Field(max_length=64)] = "*"
    component: Annotated[str, Field(max_length=64)] = "*"
    levels: tuple[Literal["WARNING", "FAULT"], ...] = ("FAULT",)
    for_s: Seconds = 0.0


class SilenceParams(_Params):
    """No message from the machine for `silent_s` seconds (ingest's `machine.last_seen`)."""

    silent_s: Annotated[float, Field(gt=0, allow_inf_nan=False)]


class ToolLifeParams(_Params):
    """The tool in the spindle mounted for longer than `limit_s` (or `warning_s`, if set)."""

    limit_s: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    warning_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None


class AccuracyParams(_Params):
    """The machine's latest accuracy report (of `kind`, or any) failed."""

    kind: Literal["iso230-2", "circle", "s-piece"] | None = None


class UtilisationParams(_Params):
    """In-cycle share (execution ACTIVE) over the last `window_s` below `target` (0..1)."""

    target: Annotated[float, Field(gt=0, le=1)]
    window_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 8 * 3600.0


PARAMS: dict[Kind, type[_Params]] = {
    Kind.THRESHOLD: ThresholdParams,
    Kind.CONDITION: ConditionParams,
    Kind.SILENCE: SilenceParams,
    Kind.TOOL_LIFE: ToolLifeParams,
    Kind.ACCURACY: AccuracyParams,
    Kind.UTILISATION: UtilisationParams,
}


@dataclass(frozen=True)
class Rule:
    """An enabled rule as the worker uses it."""

    id: int
    name: str
    kind: Kind
    params: Any
    severity: str
    site: str | None = None
    machines: frozenset[str] | None = None
    machine_group: str | None = None
    repeat_count: int = 1
    repeat_window_s: float | None = None
    escalate_after_s: float | None = None
    auto_resolve: bool = True

    @property
    def for_s(self) -> float:
        return float(getattr(self.params, "for_s", 0.0))

    def in_scope(self, site: str, machine: str, groups: Mapping[str, frozenset[str]]) -> bool:
        """Whether the rule watches `site:machine`; `groups` maps a group to its `site:machine`s."""
        if self.site is not None and site != self.site:
            return False
        if self.machines is not None and machine not in self.machines:
            return False
        if self.machine_group is not None:
            return f"{site}:{machine}" in groups.get(self.machine_group, frozenset())
        return True

    def title(self, site: str, machine: str) -> str:
        return f"{self.name} on {site}:{machine}"


def parse_rule(row: Mapping[str, Any]) -> Rule:
    """A `Rule` from an `alert_rule` row; raises `RuleError` saying what is wrong."""
    try:
        kind = Kind(row["kind"])
    except ValueError as exc:
        raise RuleError(f"rule {row['id']}: unknown kind {row['kind']!r}") from exc
    try:
        params = PARAMS[kind].model_validate(row["params"] or {})
    except ValidationError as exc:
        raise RuleError(f"rule {row['id']}: bad params: {exc.errors()[0]['msg']}") from exc
    if row["severity"] not in SEVERITY_RANK:
        raise RuleError(f"rule {row['id']}: unknown severity {row['severity']!r}")
    repeat = int(row.get("repeat_count") or 1)
    window = row.get("repeat_window_s")
    if repeat > 1 and window is None:
        raise RuleError(f"rule {row['id']}: repeat_count > 1 needs repeat_window_s")
    machines = row.get("machines")
    return Rule(
        id=int(row["id"]),
        name=str(row["name"]),
        kind=kind,
        params=params,
        severity=str(row["severity"]),
        site=row.get("site"),
        machines=None if machines is None else frozenset(machines),
        machine_group=row.get("machine_group"),
        repeat_count=repeat,
        repeat_window_s=None if window is None else float(window),
        escalate_after_s=row.get("escalate_after_s"),
        auto_resolve=bool(row.get("auto_resolve", True)),
    )


# --- observations ----------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Observation:
    """At source time `ts` the rule's condition was `true` (with `value`, when numeric)."""

    ts: datetime
    true: bool
    value: float | None = None
    detail: Mapping[str, Any] = field(default_factory=dict, compare=False)


def telemetry_observation(
    rule: Rule, ts: datetime, values: Mapping[str, Any]
) -> Observation | None:
    """A threshold rule's observation of one sample; None when the sample lacks the signal."""
    p = rule.params
    if not isinstance(p, ThresholdParams):
        return None
    raw = values.get(p.signal)
    if raw is None or isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    value = float(raw)
    return Observation(ts, _OPS[p.op](value, p.value), value, {"signal": p.signal})


def condition_observation(
    rule: Rule, ts: datetime, component: str, level: str, code: str, text: str = ""
) -> Observation | None:
    """A condition rule's observation of one condition event; None when it does not concern it.

    A matching code at one of the rule's levels is true; NORMAL of that code, or NORMAL with an
    empty code for the component (clears all), or a lower level of the same code, is false.
    """
    p = rule.params
    if not isinstance(p, ConditionParams):
        return None
    if not fnmatch.fnmatchcase(component, p.component):
        return None
    detail = {"component": component, "code": code, "level": level, "text": text}
    if level == "NORMAL" and code == "":
        return Observation(ts, False, None, detail)
    if not fnmatch.fnmatchcase(code, p.code):
        return None
    return Observation(ts, level in p.levels, None, detail)


# --- the run state machine -------------------------------------------------------------------


@dataclass(frozen=True)
class RunState:
    """One (rule, machine)'s evaluation state; mirrors a row of `alert_rule_state`."""

    true_since: datetime | None = None
    last_true: datetime | None = None
    last_false: datetime | None = None
    satisfied: bool = False
    occurrences: tuple[datetime, ...] = ()
    last_value: float | None = None


@dataclass(frozen=True)
class Outcome:
    """What `advance()` concluded: the new state, and whether the rule fired or cleared."""

    state: RunState
    fired: Observation | None = None  # the observation that completed the firing
    cleared: Observation | None = None


def advance(rule: Rule, state: RunState, observations: Iterable[Observation]) -> Outcome:
    """Fold `observations` (any order; late ones included) into `state`.

    Ordering across workers is not guaranteed, so a late observation is placed by its source
    time: a late false inside the current run restarts the run after it; a late true just before
    the run extends it backwards; a late true older than the last false is history and ignored.
    """
    s = state
    fired: Observation | None = None
    cleared: Observation | None = None
    for ob in sorted(observations, key=lambda o: o.ts):
        if ob.value is not None:
            s = replace(s, last_value=ob.value)
        if ob.true:
            if s.last_false is not None and ob.ts <= s.last_false:
                continue  # history: a run that already ended
            if s.true_since is None or ob.ts < s.true_since:
                s = replace(s, true_since=ob.ts)
            if s.last_true is None or ob.ts > s.last_true:
                s = replace(s, last_true=ob.ts)
        else:
            newest = s.last_false is None or ob.ts > s.last_false
            if newest:
                s = replace(s, last_false=ob.ts)
            if s.true_since is not None and ob.ts >= s.true_since:
                if s.last_true is not None and ob.ts < s.last_true:
                    # A late false inside the run: the run restarts after it.
                    s = replace(s, true_since=ob.ts + timedelta(microseconds=1))
                else:
                    if s.satisfied:
                        cleared = ob
                    s = replace(s, true_since=None, last_true=None, satisfied=False)
            elif s.true_since is None and s.satisfied:
                cleared = ob
                s = replace(s, satisfied=False)
        if (
            not s.satisfied
            and s.true_since is not None
            and s.last_true is not None
            and (s.last_true - s.true_since).total_seconds() >= rule.for_s
        ):
            s = replace(s, satisfied=True, occurrences=(*s.occurrences, s.last_true))
            if rule.repeat_window_s is not None:
                horizon = s.occurrences[-1] - timedelta(seconds=rule.repeat_window_s)
                s = replace(s, occurrences=tuple(t for t in s.occurrences if t >= horizon))
            else:
                s = replace(s, occurrences=s.occurrences[-1:])
            if len(s.occurrences) >= rule.repeat_count:
                fired, cleared = ob, None
    return Outcome(s, fired, cleared)
