"""The response agent's decisions: one alert per incident, escalation due once and stopped by an
ack, acks refused where there is nothing to acknowledge, records that survive the store."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from firepipe.core.agents.analysis import AnalysisPolicy, DeviceState, Phase, ScoreEvent, step
from firepipe.core.agents.response import (
    AlertError,
    AlertRecord,
    EscalationLevel,
    EscalationPolicy,
    IncidentChange,
    acknowledge,
    due_escalations,
    escalation_notice,
    incident_change,
    mark_escalated,
    open_alert,
    require_alert,
    resolution_notice,
    resolve,
)

START = datetime(2026, 5, 1, tzinfo=UTC)
POLICY = EscalationPolicy(ack_timeout_s=300, levels=((300, "on-call"), (900, "site-manager")))
# Quick to clear, so one test walks a device through two incidents.
ANALYSIS = AnalysisPolicy(clear_fraction=0.5, clear_s=2, quiet_s=3)


def event(i: int, t_s: float, score: float, alarm: bool, device: str = "d1") -> ScoreEvent:
    ts = START + timedelta(seconds=t_s)
    return ScoreEvent(device, ts, score, alarm, 0.5, "detector/3", f"{device}-{i}")


def changes(rows: Sequence[tuple[float, float, bool]]) -> list[IncidentChange]:
    """The incident changes analysis makes on the (t_s, score, alarm) rows, in order."""
    state: DeviceState | None = None
    found = []
    for i, (t_s, score, alarm) in enumerate(rows):
        e = event(i, t_s, score, alarm)
        decision = step(state, e, ANALYSIS)
        state = decision.state
        if (change := incident_change(decision, e)) is not None:
            found.append(change)
    return found


def alarm_at(t_s: float, incident: str = "inc-1") -> IncidentChange:
    return IncidentChange(
        device_id="d1",
        incident_id=incident,
        phase=Phase.ALARM,
        ts=START + timedelta(seconds=t_s),
        reason="the alarm sounds",
        model_version="detector/3",
    )


def at(t_s: float) -> datetime:
    return START + timedelta(seconds=t_s)


def test_one_alert_per_incident_whatever_the_redeliveries() -> None:
    first, again = event(0, 10, 0.9, True), event(0, 10, 0.9, True)
    a = incident_change(step(None, first, ANALYSIS), first)
    b = incident_change(step(None, again, ANALYSIS), again)
    assert a is not None
    assert b is not None
    alert_a, alert_b = open_alert(a, POLICY), open_alert(b, POLICY)
    assert alert_a == alert_b
    assert alert_a.alert_id == a.incident_id
    assert alert_a.notification().dedup_key == alert_a.alert_id
    assert alert_a.notification() == alert_b.notification()
    assert alert_a.created_at == START + timedelta(seconds=10)
    assert alert_a.ack_deadline == START + timedelta(seconds=310)
    assert alert_a.severity == "critical"
    assert "d1" in alert_a.subject
    assert a.reason in alert_a.text
    assert f"firepipe alerts ack {alert_a.alert_id}" in alert_a.text


def test_two_incidents_of_one_device_are_two_alerts_and_resolutions() -> None:
    # Alarm at 1 s, clear from 2 s (resolved at 4 s), quiet to NORMAL at 7 s, alarm again at 8 s.
    rows = [(0, 0.1, False), (1, 0.9, True), (2, 0.1, False), (3, 0.1, False), (4, 0.1, False)]
    rows += [(5, 0.1, False), (6, 0.1, False), (7, 0.1, False), (8, 0.9, True)]
    found = changes(rows)
    assert [(c.phase, c.ts) for c in found] == [
        (Phase.ALARM, START + timedelta(seconds=1)),
        (Phase.RESOLVED, START + timedelta(seconds=4)),
        (Phase.ALARM, START + timedelta(seconds=8)),
    ]
    first, resolved, second = found
    alerts = [open_alert(first, POLICY), open_alert(second, POLICY)]
    assert alerts[0].alert_id != alerts[1].alert_id
    assert len({a.notification().dedup_key for a in alerts}) == 2
    notice = resolution_notice(resolved)
    assert resolved.incident_id == alerts[0].alert_id
    assert notice.dedup_key == f"{alerts[0].alert_id}/resolved"
    assert notice.attributes["alert_id"] == alerts[0].alert_id
    assert notice.severity == "info"


def test_transitions_that_are_no_incident_change_give_nothing() -> None:
    # NORMAL then SUSPECTED: nothing for the response agent.
    assert changes([(0, 0.1, False), (1, 0.7, False)]) == []
    with pytest.raises(ValueError, match="ALARM"):
        resolution_notice(alarm_at(0))


def test_escalation_steps_fall_due_at_their_times_and_never_twice() -> None:
    record = AlertRecord(alert=open_alert(alarm_at(0), POLICY))
    assert due_escalations(record, at(299.9)) == []
    due = due_escalations(record, at(300))
    assert [(s.level, s.target, s.due_at) for s in due] == [(0, "on-call", at(300))]
    notice = escalation_notice(record.alert, due[0])
    assert notice.dedup_key == f"{record.alert.alert_id}/escalation/0"
    assert notice.attributes["target"] == "on-call"
    record = mark_escalated(record, due)
    assert due_escalations(record, at(899)) == []
    later = due_escalations(record, at(900))
    assert [(s.level, s.target) for s in later] == [(1, "site-manager")]
    assert escalation_notice(record.alert, later[0]).dedup_key.endswith("/escalation/1")
    record = mark_escalated(record, later)
    assert due_escalations(record, at(10_000)) == []
    assert record.escalated == (0, 1)


def test_a_timer_that_slept_sends_every_missed_level_once() -> None:
    record = AlertRecord(alert=open_alert(alarm_at(0), POLICY))
    due = due_escalations(record, START + timedelta(hours=1))
    assert [s.level for s in due] == [0, 1]
    assert due_escalations(mark_escalated(record, due), START + timedelta(hours=2)) == []


def test_no_escalation_after_ack_or_resolution() -> None:
    record = AlertRecord(alert=open_alert(alarm_at(0), POLICY))
    acked = acknowledge(record, "ana", START + timedelta(seconds=100))
    assert acked.status == "acknowledged"
    assert due_escalations(acked, START + timedelta(hours=1)) == []
    # An ack after the first escalation stops the second.
    sent = mark_escalated(record, due_escalations(record, START + timedelta(seconds=301)))
    acked = acknowledge(sent, "ana", START + timedelta(seconds=400))
    assert due_escalations(acked, START + timedelta(seconds=901)) == []
    closed = replace(alarm_at(500), phase=Phase.RESOLVED)
    assert due_escalations(resolve(record, closed), START + timedelta(hours=1)) == []


def test_acks_refused_for_unknown_and_resolved_alerts_and_kept_once() -> None:
    with pytest.raises(AlertError, match="no alert 'inc-x'"):
        require_alert(None, "inc-x")
    record = AlertRecord(alert=open_alert(alarm_at(0), POLICY))
    assert require_alert(record, "inc-1") is record
    resolved = resolve(record, replace(alarm_at(50), phase=Phase.RESOLVED))
    assert resolved.status == "resolved"
    with pytest.raises(AlertError, match="resolved at 2026-05-01T00:00:50"):
        acknowledge(resolved, "ana", START + timedelta(seconds=60))
    first = acknowledge(record, "ana", START + timedelta(seconds=10))
    # The first ack stands; a second is a no-op, not a takeover.
    assert acknowledge(first, "bo", START + timedelta(seconds=20)) == first
    assert (first.acknowledged_by, first.acknowledged_at) == ("ana", START + timedelta(seconds=10))
    with pytest.raises(AlertError, match="who acknowledges"):
        acknowledge(record, " ", START)


@pytest.mark.parametrize(
    ("ack_timeout_s", "levels", "message"),
    [
        (0, (), "ack_timeout_s"),
        (float("nan"), (), "ack_timeout_s"),
        (300, ((299, "on-call"),), ">= ack_timeout_s"),
        (300, ((600, "a"), (600, "b")), "strictly later"),
        (300, ((600, "a"), (400, "b")), "strictly later"),
        (300, ((float("inf"), "a"),), "finite"),
        (300, ((600, ""),), "needs a target"),
    ],
)
def test_policy_refuses_bad_escalation(
    ack_timeout_s: float, levels: tuple[tuple[float, str], ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        EscalationPolicy(ack_timeout_s=ack_timeout_s, levels=levels)


def test_policy_keeps_levels_as_named_pairs() -> None:
    assert POLICY.levels == (
        EscalationLevel(300.0, "on-call"),
        EscalationLevel(900.0, "site-manager"),
    )
    assert EscalationPolicy(ack_timeout_s=60).levels == ()


def test_record_round_trips_through_json() -> None:
    record = AlertRecord(alert=open_alert(alarm_at(0), POLICY))
    record = mark_escalated(record, due_escalations(record, START + timedelta(seconds=300)))
    record = acknowledge(record, "ana", START + timedelta(seconds=301))
    for kept in (AlertRecord(alert=record.alert), record):
        assert AlertRecord.from_dict(json.loads(json.dumps(kept.to_dict()))) == kept
    with pytest.raises(ValueError, match="not an alert record"):
        AlertRecord.from_dict({"alert_id": "inc-1"})
