"""The pure model and its ground truth: a 50-machine shift with an internally consistent summary."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from protocol import Telemetry, decode, encode, parse_timestamp, parse_topic
from simulators.calendar import DEFAULT_CALENDAR
from simulators.controllers import I5Controllers, MemorySink
from simulators.factory import default_factory
from simulators.model import EXECUTION_VALUES, Fleet, vb_of_life
from simulators.runner import run_loop
from simulators.truth import Truth

MONDAY_0545 = datetime(2025, 3, 3, 5, 45, tzinfo=UTC).timestamp()
SHIFT_S = 8 * 3600 + 15 * 60  # 05:45 to 14:00: power-on, the early shift, both of its breaks


def _ts(text: str) -> float:
    return parse_timestamp(text).timestamp()


@pytest.fixture(scope="module")
def shift() -> tuple[dict[str, Any], MemorySink, Fleet]:
    fleet = Fleet(default_factory(50, site="plant"), rate_hz=0.5, start=MONDAY_0545, seed=11)
    truth = Truth(fleet)
    sink = MemorySink()
    controllers = I5Controllers(fleet, sink, truth=truth, run_id="t1", batch_s=60.0)
    run_loop(fleet, controllers, truth, duration_s=SHIFT_S, speedup=0)
    return truth.summary(seed=11), sink, fleet


def test_state_seconds_add_up_to_the_window(
    shift: tuple[dict[str, Any], MemorySink, Fleet],
) -> None:
    summary, _, _ = shift
    assert summary["window"]["seconds"] == SHIFT_S
    assert len(summary["machines"]) == 50
    for m in summary["machines"].values():
        for key in (
            "execution_seconds",
            "controller_mode_seconds",
            "functional_mode_seconds",
            "activity_seconds",
        ):
            assert sum(m[key].values()) == pytest.approx(SHIFT_S, abs=1e-6), key
        # Off is exactly the UNAVAILABLE execution; the machine ran a good part of the shift.
        assert m["activity_seconds"]["off"] == m["execution_seconds"]["UNAVAILABLE"]
        assert m["execution_seconds"]["ACTIVE"] > 0.3 * SHIFT_S


def test_part_counts_match_cycles(shift: tuple[dict[str, Any], MemorySink, Fleet]) -> None:
    summary, _, _ = shift
    total_cycles = 0
    for m in summary["machines"].values():
        done = [c for c in m["cycles"] if c["status"] == "completed"]
        total_cycles += len(done)
        p = m["parts"]
        assert p["good"] + p["scrap"] == sum(c["parts"] for c in done)
        assert p["part_count_end"] - p["part_count_start"] == p["good"] + p["scrap"]
        assert p["part_count_bad_end"] - p["part_count_bad_start"] == p["scrap"]
        assert all(c["parts"] == 0 for c in m["cycles"] if c["status"] != "completed")
        per = m["cycles_per_program"]
        assert sum(v["completed"] for v in per.values()) == len(done)
        # Cycles do not overlap and lie inside the window.
        spans = [(_ts(c["start"]), _ts(c["end"])) for c in m["cycles"]]
        assert all(a < b for a, b in spans)
        assert all(b1 <= a2 for (_, b1), (a2, _) in itertools.pairwise(spans))
        assert all(MONDAY_0545 <= a and b <= MONDAY_0545 + SHIFT_S for a, b in spans)
    assert total_cycles > 50 * 20


def test_cycle_durations_are_at_least_ideal(
    shift: tuple[dict[str, Any], MemorySink, Fleet],
) -> None:
    summary, _, fleet = shift
    ideal = {
        name: float(fleet.seg_secs[i, : fleet.nseg[i]].sum())
        for i, name in enumerate(fleet.program_names)
    }
    for m in summary["machines"].values():
        for c in m["cycles"]:
            if c["status"] == "completed":
                # Feed override up to 120 % and whole ticks of 2 s per segment.
                assert c["duration_s"] >= ideal[c["program"]] / 1.2 - 2.0 * 8


def test_alarms_tools_and_stops_happen(shift: tuple[dict[str, Any], MemorySink, Fleet]) -> None:
    summary, _, _ = shift
    ms = list(summary["machines"].values())
    faults = [a for m in ms for a in m["alarms"] if a["level"] == "FAULT"]
    assert faults, "a shift of 50 machines has faults"
    assert sum(m["execution_seconds"]["INTERRUPTED"] for m in ms) > 0
    assert sum(m["execution_seconds"]["FEED_HOLD"] for m in ms) > 0
    changes = [t for m in ms for t in m["tool_changes"]]
    life = [t for t in changes if t["reason"] == "life_limit"]
    assert life and all(t["vb_mm"] >= 0.3 - 1e-9 for t in life)
    assert all(t["vb_mm"] < 0.6 for t in changes)
    # A FAULT stops the machine: every fault-interrupted cycle ends when a FAULT starts.
    for m in ms:
        starts = {a["start"] for a in m["alarms"] if a["level"] == "FAULT"}
        for c in m["cycles"]:
            if c["interrupted_by"] in ("fault", "breakage"):
                assert c["end"] in starts


def test_messages_seq_and_sessions(shift: tuple[dict[str, Any], MemorySink, Fleet]) -> None:
    summary, sink, fleet = shift
    ids = [m.machine_id for m in fleet.factory.machines]
    seqs: dict[str, list[int]] = {}
    births = 0
    samples = dict.fromkeys(ids, 0)
    for msg in sink.messages:
        topic = parse_topic(msg.topic)
        decoded = decode(topic, msg.payload)  # every message is valid v1
        if topic.channel.value == "status":
            births += decoded.online  # type: ignore[union-attr]
            continue
        seqs.setdefault(decoded.session, []).append(decoded.seq)  # type: ignore[union-attr]
        if isinstance(decoded, Telemetry):
            samples[topic.machine] += len(decoded.samples)
    for session, seq in seqs.items():
        assert seq == list(range(len(seq))), session
    assert births == sum(len(m["sessions"]) for m in summary["machines"].values())
    for mid, m in summary["machines"].items():
        assert m["samples"] == samples[mid]
        for s in m["sessions"]:
            assert s["last_seq"] == len(seqs[s["session"]]) - 1
            assert s["messages"] == len(seqs[s["session"]])
        online = m["execution_seconds"]["UNAVAILABLE"]
        assert m["samples"] * 2.0 == pytest.approx(SHIFT_S - online)


def test_same_seed_same_truth() -> None:
    def once() -> dict[str, Any]:
        fleet = Fleet(default_factory(8), rate_hz=1, start=MONDAY_0545, seed=5)
        truth = Truth(fleet)
        run_loop(fleet, None, truth, duration_s=3 * 3600, speedup=0)
        return truth.summary()

    assert once() == once()


def test_wear_curve_and_calendar() -> None:
    u = np.linspace(0, 1, 101)
    vb = vb_of_life(u, 0.3)
    assert vb[0] == 0 and vb[-1] == pytest.approx(0.3)
    assert np.all(np.diff(vb) > 0)
    st = DEFAULT_CALENDAR.state(datetime(2025, 3, 3, 12, 10, tzinfo=UTC).timestamp())
    assert st.in_block and st.in_break
    sat = DEFAULT_CALENDAR.state(datetime(2025, 3, 8, 12, 0, tzinfo=UTC).timestamp())
    assert not sat.in_block
    block, breaks = DEFAULT_CALENDAR.planned_seconds(MONDAY_0545, MONDAY_0545 + 86400)
    assert block == 16 * 3600 and breaks == 90 * 60


def test_power_off_nights_and_weekends() -> None:
    friday_evening = datetime(2025, 3, 7, 21, 0, tzinfo=UTC).timestamp()
    fleet = Fleet(default_factory(12), rate_hz=0.2, start=friday_evening, seed=2)
    truth = Truth(fleet)
    run_loop(fleet, None, truth, duration_s=6 * 3600, speedup=0)
    # Everything is off from about 22:20 on Friday: at most 1h40 of the 6 h powered.
    for m in truth.summary()["machines"].values():
        assert m["execution_seconds"]["UNAVAILABLE"] >= 6 * 3600 - 100 * 60
    assert (fleet.phase == 0).all()


def test_fast_telemetry_encoder_matches_protocol_codec() -> None:
    fleet = Fleet(default_factory(4), rate_hz=10, start=MONDAY_0545 + 3600, seed=1)
    sink = MemorySink()
    controllers = I5Controllers(fleet, sink, run_id="x", batch_s=1.0)
    run_loop(fleet, controllers, None, duration_s=5, speedup=0)
    tele = [p for p in sink.messages if p.topic.endswith("/telemetry")]
    assert tele
    for p in tele:
        model = Telemetry.model_validate_json(p.payload)
        assert encode(model) == p.payload


def test_execution_values_are_the_protocols() -> None:
    from protocol import EXECUTION_VALUES as PROTOCOL_EXECUTION

    assert set(EXECUTION_VALUES) == set(PROTOCOL_EXECUTION)
