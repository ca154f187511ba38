"""The agents' wire formats: a readings batch, its score events and an incident survive the
trip; a body no handler can read is a MessageError (a dead letter), never a crash; and
`analysis.advance`, the analysis worker's fast fold over a message's events, equals stepping
each event."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firepipe.core.agents import messages
from firepipe.core.agents.analysis import AnalysisPolicy, DeviceState, Phase, advance, step
from firepipe.core.agents.messages import MessageError, ScoreBatch
from firepipe.core.agents.response import IncidentChange
from firepipe.core.serving.engine import ReadingColumns, Scored
from firepipe.core.serving.online import CHANNEL_INDEX

START = datetime(2026, 5, 1, tzinfo=UTC)
EPOCH_US = int(START.timestamp()) * 1_000_000


def readings_body(n: int = 3, batch_id: str = "b1") -> str:
    rows = [
        {"device_id": f"d{k % 2}", "ts": f"2026-05-01T00:00:0{k}Z", "temperature_c": 20.0 + k}
        for k in range(n)
    ]
    return messages.encode_readings(batch_id, rows, {"d0": ["temperature_c"]}, sent_at=12.5)


def scored(readings: ReadingColumns, positions: list[int]) -> Scored:
    """Made-up predictions of `readings[positions]`: score 0.1 k, alarm at k = 4, warm after 2."""
    at = np.array(positions, dtype=np.int64)
    return Scored(
        at,
        [readings.device_id[k] for k in positions],
        [readings.ts_text[k] for k in positions],
        readings.ts_us[at],
        0.1 * at,
        at == 4,
        np.full(at.size, 0.5),
        at > 2,
        "m/3",
    )


def test_readings_round_trip() -> None:
    batch = messages.decode_readings(readings_body())
    assert batch.batch_id == "b1"
    assert batch.sent_at == 12.5
    readings = batch.readings
    assert readings.device_id == ["d0", "d1", "d0"]
    temperature = CHANNEL_INDEX["temperature_c"]
    assert readings.values[2, temperature] == 22.0
    assert np.isnan(np.delete(readings.values[2], temperature)).all()  # not sent
    assert readings.ts_us.tolist() == [EPOCH_US + k * 1_000_000 for k in range(3)]
    assert readings.ts_text[1] == "2026-05-01T00:00:01Z"
    assert batch.profiles == {"d0": ("temperature_c",)}


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"readings": []}', "batch_id"),
        ('{"batch_id": "a:b", "readings": []}', "batch_id"),
        ('{"batch_id": "b", "readings": []}', "non-empty list"),
        ('{"batch_id": "b", "readings": [{"device_id": "d", "ts": "yesterday"}]}', "ISO 8601"),
        (
            '{"batch_id": "b", "readings": [{"device_id": "d", "ts": "2026-05-01T00:00:00Z"}],'
            ' "profiles": {"d": ["smell"]}}',
            "profiles",
        ),
        (
            '{"batch_id": "b", "readings": [{"device_id": "d", "ts": "2026-05-01T00:00:00Z"}],'
            ' "sent_at": "noon"}',
            "sent_at",
        ),
    ],
)
def test_unreadable_readings_are_message_errors(body: str, why: str) -> None:
    with pytest.raises(MessageError, match=why):
        messages.decode_readings(body)


def test_scores_round_trip_keep_positions_and_split_large_batches() -> None:
    batch = messages.decode_readings(readings_body(5))
    positions = [0, 2, 3, 4]  # reading 1 was too late to score
    (body,) = messages.encode_scores(batch, scored(batch.readings, positions))
    scores = messages.decode_scores(body)
    assert scores.index == positions
    assert scores.model_version == "m/3"
    assert [scores.event_id(k) for k in range(4)] == ["b1:0", "b1:2", "b1:3", "b1:4"]
    assert scores.alarm == [False, False, False, True]
    assert scores.warm == [False, False, True, True]
    event = scores.event(3)
    assert event.ts == START + timedelta(seconds=4)
    assert event.score == pytest.approx(0.4)
    assert event.threshold == 0.5
    assert event.device_id == "d0"
    assert event.warm
    by_device = scores.by_device()
    assert by_device["d1"].index == [3]
    assert by_device["d0"].index == [0, 2, 4]
    many = scored(batch.readings, [0] * (messages.MAX_EVENTS_PER_MESSAGE + 1))
    bodies = messages.encode_scores(batch, many)
    assert [len(messages.decode_scores(b)) for b in bodies] == [messages.MAX_EVENTS_PER_MESSAGE, 1]


@pytest.mark.parametrize(
    "change",
    [
        {"ts_us": [1, 2]},  # columns of different lengths
        {"score": [None]},
        {"device_id": [""]},
        {"index": ["x"]},
    ],
)
def test_unreadable_scores_are_message_errors(change: dict[str, object]) -> None:
    document = {
        "batch_id": "b",
        "model_version": "m/1",
        "index": [0],
        "device_id": ["d"],
        "ts_us": [1],
        "score": [0.1],
        "alarm": [False],
        "threshold": [0.5],
        "warm": [True],
    }
    document.update(change)
    with pytest.raises(MessageError, match="scores batch b"):
        messages.decode_scores(json.dumps(document))


def test_a_nan_literal_is_not_json() -> None:
    with pytest.raises(MessageError, match="scores message is not JSON"):
        messages.decode_scores('{"batch_id": "b", "score": [NaN]}')


def test_incident_round_trip_and_refusal() -> None:
    change = IncidentChange(
        device_id="d1",
        incident_id="inc-1",
        phase=Phase.ALARM,
        ts=START,
        reason="the alarm sounds",
        model_version="m/3",
    )
    body = messages.encode_incident(messages.IncidentMessage(change, "b1:4", 3.0))
    assert messages.decode_incident(body) == messages.IncidentMessage(change, "b1:4", 3.0)
    with pytest.raises(MessageError, match="not an incident"):
        messages.decode_incident(body.replace("ALARM", "ON FIRE"))


POLICY = AnalysisPolicy(clear_s=3.0, quiet_s=4.0)
# (seconds offset, may repeat or go back; score; alarm; warm)
EVENTS = st.lists(
    st.tuples(
        st.integers(-2, 3),
        st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 0.9]),
        st.booleans(),
        st.booleans(),
    ),
    min_size=1,
    max_size=60,
)


def columns(rows: list[tuple[int, float, bool, bool]]) -> ScoreBatch:
    t, ts = 0, []
    for offset, *_ in rows:
        t += offset
        ts.append(EPOCH_US + t * 1_000_000)
    return ScoreBatch(
        "b",
        "m/1",
        list(range(len(rows))),
        ["d"] * len(rows),
        ts,
        [r[1] for r in rows],
        [r[2] for r in rows],
        [0.5] * len(rows),
        [r[3] for r in rows],
    )


@settings(max_examples=300, deadline=None)
@given(EVENTS, st.sampled_from([None, Phase.NORMAL, Phase.ALARM, Phase.RESOLVED]))
def test_advance_equals_stepping_each_event(
    rows: list[tuple[int, float, bool, bool]], phase: Phase | None
) -> None:
    batch = columns(rows)
    state = None
    if phase is not None:
        state = DeviceState(
            device_id="d",
            phase=phase,
            last_ts=START - timedelta(seconds=1),
            last_event_id="earlier",
            incident_id=None if phase == Phase.NORMAL else "inc-0",
            incident_started=None if phase == Phase.NORMAL else START - timedelta(seconds=9),
        )
    folded, transitions = state, []
    for k in range(len(batch)):
        decision = step(folded, batch.event(k), POLICY)
        folded = decision.state
        if decision.applied and decision.transition is not None:
            transitions.append(decision)
    split = len(batch) // 2  # a worker resuming from an event after a conflict
    middle, first = advance(state, batch, 0, split, POLICY)
    final, second = advance(middle, batch, split, len(batch), POLICY)
    assert final == folded
    assert first + second == transitions
