"""The three agents together on the local stand-ins: a fire raises one alert, resolved when it
is out; a redelivered batch changes nothing; unreadable and failing messages end in the
dead-letter queue with their reason; acknowledgement stops escalation."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from firepipe.core.agents import messages
from firepipe.services.agents.analysis import device_key
from firepipe.services.agents.response import alert_records
from firepipe_tests.services.agents.chain import (
    HOT,
    QUIET,
    local_agents,
    pump,
    send,
    timeline,
    workers,
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FIREPIPE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FIREPIPE_ENV", "local")
    return tmp_path / "home"


def test_a_fire_raises_one_alert_resolved_when_out(home: Path, detector_dir: Path) -> None:
    agents = local_agents(detector_dir)
    running = workers(agents)
    fire = timeline("kitchen", [(60, QUIET), (90, HOT), (120, QUIET)])
    send(agents.ports, fire + timeline("hall", [(270, QUIET)]), "b1")
    pump(running)

    (alert,) = list(alert_records(agents.ports.store))
    assert alert.alert.device_id == "kitchen"
    assert alert.status == "resolved"
    # persistence 0: the alarm sounds at the first hot reading, a minute in
    assert alert.alert.created_at.strftime("%Y-%m-%dT%H:%M:%SZ") == fire[60]["ts"]
    history = agents.ports.store.history(device_key("kitchen"))
    phases = [h.transition.to_state for h in history]
    assert phases[:3] == ["NORMAL", "ALARM", "RESOLVED"]
    assert [h.transition.to_state for h in agents.ports.store.history(device_key("hall"))] == [
        "NORMAL"
    ]
    sent = agents.ports.notifier.recent(10)
    kinds = sorted(r.notification.attributes["kind"] for r in sent)
    assert kinds == ["alarm", "resolved"]

    # The same batches again (a producer's retry): stale events, nothing moves, nothing sent.
    send(agents.ports, fire, "b1")
    pump(running)
    assert len(agents.ports.store.history(device_key("kitchen"))) == len(history)
    assert len(agents.ports.notifier.recent(10)) == 2


def test_unreadable_and_failing_messages_are_dead_lettered_with_reason(
    home: Path, detector_dir: Path
) -> None:
    agents = local_agents(detector_dir)
    running = workers(agents)
    queues = agents.ports.queues
    queues.send(messages.READINGS_QUEUE, "{not json")
    out_of_range = timeline("d", [(1, {"temperature_c": 5000.0})])
    send(agents.ports, out_of_range, "hot")
    # A resolution for an alert never opened fails every time: after max_receives, a dead letter.
    change = messages.IncidentMessage(
        messages.decode_incident(
            '{"device_id":"d","incident_id":"inc-x","phase":"RESOLVED",'
            '"ts":"2026-03-01T12:00:00.000000Z","reason":"quiet","model_version":"m/1",'
            '"event_id":"b:1"}'
        ).change,
        "b:1",
    )
    queues.send(messages.INCIDENTS_QUEUE, messages.encode_incident(change))
    deadline = time.monotonic() + 30  # max_receives x the workers' 2 s visibility timeout
    while queues.depth(messages.INCIDENTS_QUEUE).dead == 0 and time.monotonic() < deadline:
        for worker in running.values():
            worker.poll(wait_s=0)
        time.sleep(0.1)
    readings_dead = {d.reason for d in queues.dead_letters(messages.READINGS_QUEUE)}
    assert any("unreadable" in r and "not JSON" in r for r in readings_dead)
    assert any("temperature_c=5000" in r for r in readings_dead)
    (dead,) = queues.dead_letters(messages.INCIDENTS_QUEUE)
    assert f"failed {queues.max_receives} times" in dead.reason
    assert "inc-x" in dead.reason


def test_ack_stops_escalation(home: Path, detector_dir: Path) -> None:
    agents = local_agents(detector_dir)
    running = workers(agents)
    send(agents.ports, timeline("attic", [(40, QUIET), (30, HOT)]), "b2")
    pump(running)
    (record,) = list(alert_records(agents.ports.store))
    assert record.status == "open"
    alert_id = record.alert.alert_id
    assert agents.response.escalate(alert_id, 0) == "open"
    assert agents.response.record(alert_id).escalated == (0,)
    assert agents.response.escalate(alert_id, 0) == "open"  # a timer firing twice
    escalations = [
        r
        for r in agents.ports.notifier.recent(10)
        if r.notification.attributes["kind"] == "escalation"
    ]
    assert len(escalations) == 1
    acked = agents.response.acknowledge(alert_id, "ana")
    assert acked.status == "acknowledged"
    assert acked.acknowledged_by == "ana"
