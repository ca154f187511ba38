"""The analysis state machine: ALARM entered exactly at evaluate-real's alarm onsets, hysteresis
and confirmation on the way out, redelivered and stale events that change nothing."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firepipe.core.agents.analysis import (
    AnalysisPolicy,
    Decision,
    DeviceState,
    Phase,
    ScoreEvent,
    step,
)
from firepipe.core.readings import TIMESTAMP
from firepipe.core.training import evaluation

START = datetime(2026, 5, 1, tzinfo=UTC)
THRESHOLD = 0.5
# Scores on both sides of the threshold and of the default clear level (0.25), and exactly on
# the boundaries, where an off-by-one would show.
SCORES = st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.49, 0.5, 0.7, 1.0]) | st.floats(0.0, 1.0)
# (seconds since the previous reading, score): mostly 1 Hz, some gaps, as NIST's 2 s and 5 s.
READINGS = st.lists(st.tuples(st.sampled_from([1, 1, 1, 2, 5]), SCORES), min_size=1, max_size=80)


def event(i: int, t_s: float, score: float, alarm: bool, device: str = "d1") -> ScoreEvent:
    ts = START + timedelta(seconds=t_s)
    return ScoreEvent(device, ts, score, alarm, THRESHOLD, "detector/3", f"{device}-{i}")


def engine_events(readings: list[tuple[int, float]], persistence_s: float) -> list[ScoreEvent]:
    """Score events with the engine's alarm: evaluation's rule at (THRESHOLD, persistence_s)."""
    times = [float(sum(gap for gap, _ in readings[: i + 1])) for i in range(len(readings))]
    scores = [score for _, score in readings]
    alarms = evaluation.alarm_sounding(frame(times, scores), THRESHOLD, persistence_s)
    return [event(i, *row) for i, row in enumerate(zip(times, scores, alarms, strict=True))]


def frame(times: list[float], scores: list[float]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "device_id": ["d1"] * len(times),
            "ts": [START + timedelta(seconds=t) for t in times],
            "score": scores,
        },
        schema={"device_id": pl.String(), "ts": TIMESTAMP, "score": pl.Float64()},
    )


def run(events: list[ScoreEvent], policy: AnalysisPolicy) -> list[Decision]:
    state, decisions = None, []
    for e in events:
        decision = step(state, e, policy)
        state = decision.state
        decisions.append(decision)
    return decisions


def entries(events: list[ScoreEvent], decisions: list[Decision]) -> list[datetime]:
    return [
        e.ts
        for e, d in zip(events, decisions, strict=True)
        if d.transition is not None and d.transition.to_state == "ALARM"
    ]


def onsets(events: list[ScoreEvent], persistence_s: float) -> list[datetime]:
    times = [(e.ts - START).total_seconds() for e in events]
    found = evaluation.alarm_onsets(
        frame(times, [e.score for e in events]), THRESHOLD, persistence_s
    )
    return sorted(found["alarm_ts"].dt.replace_time_zone("UTC").to_list())


@settings(max_examples=150, deadline=None)
@given(READINGS, st.sampled_from([0, 1, 2, 4, 6]), st.sampled_from([0.0, 10.0, 60.0]))
def test_alarm_entered_exactly_at_evaluate_reals_onsets(readings, persistence_s, quiet_s):
    # With no hysteresis and no confirmation an incident lasts exactly as long as the alarm
    # sounds, so every onset evaluate-real counts opens one.
    events = engine_events(readings, persistence_s)
    policy = AnalysisPolicy(clear_fraction=1.0, clear_s=0.0, quiet_s=quiet_s)
    assert entries(events, run(events, policy)) == onsets(events, persistence_s)


@settings(max_examples=150, deadline=None)
@given(
    READINGS,
    st.sampled_from([0, 2, 4]),
    st.sampled_from([0.25, 0.5, 1.0]),
    st.sampled_from([0.0, 3.0, 10.0]),
)
def test_hysteresis_only_merges_onsets_into_open_incidents(
    readings, persistence_s, clear_fraction, clear_s
):
    events = engine_events(readings, persistence_s)
    policy = AnalysisPolicy(clear_fraction=clear_fraction, clear_s=clear_s, quiet_s=5.0)
    decisions = run(events, policy)
    entered, expected = entries(events, decisions), onsets(events, persistence_s)
    assert set(entered) <= set(expected)
    before = [None, *(d.state for d in decisions[:-1])]
    for e, prior, d in zip(events, before, decisions, strict=True):
        assert d.state is not None
        assert d.applied
        if e.alarm:  # a sounding alarm is always an incident
            assert d.state.phase == Phase.ALARM
        if e.ts in expected and e.ts not in entered:  # merged: the incident was still open
            assert prior is not None
            assert prior.phase == Phase.ALARM
        if prior is not None and prior.phase == Phase.ALARM and d.state.phase != Phase.ALARM:
            assert d.state.phase == Phase.RESOLVED
            assert_clear_for(events, e.ts, clear_fraction * THRESHOLD, clear_s)


def assert_clear_for(events: list[ScoreEvent], resolved: datetime, level: float, hold_s: float):
    """Some reading at least hold_s before `resolved` starts a run of clear readings to it."""
    run_start = resolved
    for e in reversed([e for e in events if e.ts <= resolved]):
        if e.alarm or e.score >= level:
            break
        run_start = e.ts
    assert (resolved - run_start).total_seconds() >= hold_s


def test_a_score_hovering_under_the_threshold_does_not_resolve_one_clear_for_clear_s_does():
    policy = AnalysisPolicy(clear_fraction=0.5, clear_s=30.0, quiet_s=60.0)
    scores = [(0.9, True)] * 5 + [(0.45, False)] * 200 + [(0.1, False)] * 31 + [(0.3, False)] * 60
    events = [event(i, i, score, alarm) for i, (score, alarm) in enumerate(scores)]
    decisions = run(events, policy)
    phases = [d.state.phase for d in decisions if d.state is not None]
    assert phases[:205] == [Phase.ALARM] * 205  # 200 s at 0.9 x threshold: still the fire
    assert phases[205:235] == [Phase.ALARM] * 30  # clear for 0 .. 29 s
    assert phases[235] == Phase.RESOLVED  # clear for 30 s
    resolved = decisions[235].transition
    assert resolved is not None
    assert (resolved.from_state, resolved.to_state) == (
        "ALARM",
        "RESOLVED",
    )
    assert "0.1 < 0.5 x threshold 0.5 = 0.25 for 30 s" in resolved.reason
    assert "needs 30 s" in resolved.reason
    # 0.3 is above the clear level but under the threshold: quiet, 60 s after the resolution
    assert phases[236:295] == [Phase.RESOLVED] * 59
    back = decisions[295]
    assert back.state is not None
    assert back.state.phase == Phase.NORMAL
    assert back.state.incident_id is None
    assert back.transition is not None
    assert "0.3 < threshold 0.5 for 60 s" in back.transition.reason


def test_suspected_falls_back_and_a_new_alarm_opens_a_new_incident():
    policy = AnalysisPolicy(clear_s=2.0, quiet_s=100.0)
    rows = [(0.1, False), (0.6, False), (0.2, False), (0.6, False), (0.7, True), (0.1, False)]
    rows += [(0.1, False), (0.1, False), (0.8, True)]
    events = [event(i, i, score, alarm) for i, (score, alarm) in enumerate(rows)]
    decisions = run(events, policy)
    moves = [(d.transition.from_state, d.transition.to_state) for d in decisions if d.transition]
    assert moves == [
        (None, "NORMAL"),
        ("NORMAL", "SUSPECTED"),
        ("SUSPECTED", "NORMAL"),
        ("NORMAL", "SUSPECTED"),
        ("SUSPECTED", "ALARM"),
        ("ALARM", "RESOLVED"),
        ("RESOLVED", "ALARM"),
    ]
    first, second = decisions[4].state, decisions[8].state
    assert first is not None
    assert second is not None
    assert first.incident_id != second.incident_id
    assert second.incident_started == events[8].ts
    assert decisions[1].transition is not None
    assert "score 0.6 >= threshold 0.5" in decisions[1].transition.reason
    assert decisions[8].transition is not None
    assert "score 0.8 >= threshold 0.5" in decisions[8].transition.reason


def test_a_duplicate_or_stale_event_changes_nothing():
    policy = AnalysisPolicy()
    alarm = event(1, 10, 0.9, True)
    state = step(step(None, event(0, 9, 0.6, False), policy).state, alarm, policy).state
    assert state is not None
    assert state.phase == Phase.ALARM
    again = step(state, alarm, policy)
    assert (again.state, again.transition, again.applied) == (state, None, False)
    assert again.reason == "duplicate event"
    for late in (event(7, 10, 0.0, False), event(8, 3, 0.0, False)):  # at, and before, last ts
        stale = step(state, late, policy)
        assert (stale.state, stale.transition, stale.applied) == (state, None, False)
        assert stale.reason.startswith("stale event")


def test_the_incident_id_is_deterministic_and_new_per_replay():
    policy = AnalysisPolicy()
    opened = [step(None, event(0, 5, 0.9, True), policy).state for _ in range(2)]
    assert opened[0] is not None
    assert opened[1] is not None
    assert opened[0].incident_id == opened[1].incident_id
    assert opened[0].incident_id is not None
    assert opened[0].incident_id.startswith("inc-")
    # a second replay publishes the same reading under a new event id: a new incident
    replayed = step(None, replace(event(0, 5, 0.9, True), event_id="replay2-0"), policy).state
    assert replayed is not None
    assert replayed.incident_id != opened[0].incident_id
    other = step(None, event(0, 5, 0.9, True, device="d2"), policy).state
    assert other is not None
    assert other.incident_id != opened[0].incident_id


def test_state_round_trips_through_json():
    events = [event(0, 0, 0.9, True), event(1, 1, 0.1, False)]
    state = run(events, AnalysisPolicy())[-1].state
    assert state is not None
    assert state.clear_since == events[1].ts
    stored = json.loads(json.dumps(state.to_dict()))
    assert stored["phase"] == "ALARM"
    assert DeviceState.from_dict(stored) == state
    with pytest.raises(ValueError, match="not an analysis device state"):
        DeviceState.from_dict({**stored, "phase": "ON_FIRE"})
    with pytest.raises(ValueError, match="not an analysis device state"):
        DeviceState.from_dict({"phase": "ALARM"})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("clear_fraction", 0.0, "clear_fraction must be in"),
        ("clear_fraction", 1.5, "clear_fraction must be in"),
        ("clear_fraction", float("nan"), "clear_fraction must be in"),
        ("clear_s", -1.0, "clear_s must be"),
        ("clear_s", float("inf"), "clear_s must be"),
        ("quiet_s", -0.5, "quiet_s must be"),
    ],
)
def test_bad_policies_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        AnalysisPolicy(**{field: value})


def test_bad_events_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        ScoreEvent("d1", datetime(2026, 5, 1), 0.1, False, 0.5, "m/1", "e1")
    with pytest.raises(ValueError, match="finite"):
        ScoreEvent("d1", START, float("nan"), False, 0.5, "m/1", "e1")
    with pytest.raises(ValueError, match="event_id"):
        ScoreEvent("d1", START, 0.1, False, 0.5, "m/1", "")
    state = step(None, event(0, 0, 0.1, False), AnalysisPolicy()).state
    with pytest.raises(ValueError, match="'d2' stepped on 'd1'"):
        step(state, event(1, 1, 0.1, False, device="d2"), AnalysisPolicy())
