"""The rule state machine and the webhook signature, pure (no servers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alerts.errors import RuleError
from alerts.notifiers.webhook import sign, verify
from alerts.rules import (
    Observation,
    RunState,
    advance,
    condition_observation,
    parse_rule,
    telemetry_observation,
)

T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)


def rule(kind: str = "threshold", params: dict[str, Any] | None = None, **more: Any) -> Any:
    row = {
        "id": 1,
        "name": "r",
        "kind": kind,
        "severity": "warning",
        "params": params or {"signal": "spindle_load", "op": ">", "value": 120, "for_s": 1},
    }
    return parse_rule(row | more)  # fmt: skip


def obs(*points: tuple[float, bool]) -> list[Observation]:
    return [Observation(T0 + timedelta(seconds=s), ok) for s, ok in points]


def test_fires_only_after_the_duration_in_source_time() -> None:
    r = rule()
    out = advance(r, RunState(), obs((0, True), (0.5, True)))
    assert out.fired is None
    out = advance(r, out.state, obs((1.0, True)))
    assert out.fired is not None and out.fired.ts == T0 + timedelta(seconds=1)
    assert advance(r, out.state, obs((2.0, True))).fired is None  # once per run
    cleared = advance(r, out.state, obs((3.0, False)))
    assert cleared.cleared is not None and cleared.state.true_since is None


def test_a_false_inside_the_run_restarts_it_even_when_late() -> None:
    r = rule()
    out = advance(r, RunState(), obs((0, True), (0.9, True)))
    out = advance(r, out.state, obs((0.5, False)))  # arrives late, from another worker
    assert advance(r, out.state, obs((1.2, True))).fired is None
    assert advance(r, out.state, obs((1.6, True))).fired is not None


def test_a_late_true_older_than_the_last_false_is_history() -> None:
    r = rule(params={"signal": "spindle_load", "op": ">", "value": 120})
    out = advance(r, RunState(), obs((5, False)))
    assert advance(r, out.state, obs((4, True))).fired is None


def test_repeat_count_within_the_window() -> None:
    r = rule(params={"signal": "spindle_load", "op": ">", "value": 120},
             repeat_count=3, repeat_window_s=600)  # fmt: skip
    state = RunState()
    fired = []
    for minute in (0, 4, 20, 22, 25):
        out = advance(r, state, obs((minute * 60, True), (minute * 60 + 1, False)))
        state = out.state
        fired.append(out.fired is not None)
    assert fired == [False, False, False, False, True]


def test_observations_of_samples_and_conditions() -> None:
    r = rule()
    assert telemetry_observation(r, T0, {"spindle_speed": 1.0}) is None
    assert telemetry_observation(r, T0, {"spindle_load": 121.0}) == Observation(T0, True, 121.0)
    c = rule("condition", {"code": "SP*", "levels": ["FAULT"]})
    assert condition_observation(c, T0, "spindle", "FAULT", "SP1") == Observation(T0, True)
    assert condition_observation(c, T0, "spindle", "WARNING", "SP1") == Observation(T0, False)
    assert condition_observation(c, T0, "spindle", "FAULT", "X1") is None
    assert condition_observation(c, T0, "spindle", "NORMAL", "") == Observation(T0, False)


@pytest.mark.parametrize(
    ("kind", "params", "more"),
    [
        ("nosuch", {}, {}),
        ("threshold", {"signal": "spindle_load"}, {}),
        ("silence", {"silent_s": 0}, {}),
        ("threshold", {"signal": "x", "op": ">", "value": 1}, {"repeat_count": 2}),
    ],
)
def test_malformed_rules_are_refused(kind: str, params: dict[str, Any], more: Any) -> None:
    with pytest.raises(RuleError):
        rule(kind, params, **more)


def test_signature_covers_timestamp_and_exact_body() -> None:
    body = b'{"event":"alert.opened"}'
    sig = sign("k" * 20, 1_700_000_000, body)
    assert verify("k" * 20, body, "1700000000", sig, now=1_700_000_100)
    assert not verify("k" * 20, body + b" ", "1700000000", sig, now=1_700_000_100)
    assert not verify("k" * 20, body, "1700000001", sig, now=1_700_000_100)
    assert not verify("k" * 20, body, "1700000000", sig, now=1_700_001_000)  # too old
