"""The response agent's decisions: one alert per incident, its notifications, escalation, acks.

An alert is a pure function of the analysis transition that opened the incident and the policy:
its id is the incident id (so a redelivered transition gives the same alert and the same
notification dedup key, while a new incident, or a replay's, gives a new one), and its
`created_at` is the transition's ts, not the moment a worker handled it, so a redelivery gives
it to the byte. Escalation therefore runs on the events' clock: a replay that speeds time up
escalates as fast.

The worker keeps an `AlertRecord` per alert in the state store (`to_dict`/`from_dict`); what was
escalated and who acknowledged live there, so a restarted timer never escalates a level twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from firepipe.core.agents.analysis import Decision, Phase, ScoreEvent
from firepipe.core.history import parse_timestamp, timestamp_text
from firepipe.core.notifications import Notification

SOURCE = "agents/response"
ALARM_SEVERITY = "critical"  # a fire: the one severity that must wake someone


class AlertError(ValueError):
    """An alert action refused (unknown alert, ack of a resolved one); the message is for people."""


class EscalationLevel(NamedTuple):
    after_s: float  # seconds after the alert's creation
    target: str  # who is told: a notification attribute subscriptions filter on


@dataclass(frozen=True)
class EscalationPolicy:
    ack_timeout_s: float
    # Plain (after_s, target) pairs are accepted and kept as EscalationLevel.
    levels: tuple[tuple[float, str], ...] = ()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.ack_timeout_s) and self.ack_timeout_s > 0):
            raise ValueError(
                f"ack_timeout_s must be a finite number > 0, got {self.ack_timeout_s!r}"
            )
        levels = tuple(EscalationLevel(float(a), t) for a, t in self.levels)
        previous = None
        for after_s, target in levels:
            # Escalating before the ack deadline would punish an ack that is still in time.
            if not (math.isfinite(after_s) and after_s >= self.ack_timeout_s):
                raise ValueError(
                    f"escalation after {after_s!r} s: must be finite and >= ack_timeout_s "
                    f"({self.ack_timeout_s:g} s)"
                )
            if previous is not None and after_s <= previous:
                raise ValueError(f"escalation levels must be strictly later, got {levels}")
            if not (isinstance(target, str) and target.strip()):
                raise ValueError(f"an escalation level needs a target, got {target!r}")
            previous = after_s
        object.__setattr__(self, "levels", levels)


@dataclass(frozen=True, kw_only=True)
class IncidentChange:
    """An analysis transition the response agent acts on: into ALARM (opens an incident) or
    into RESOLVED (closes it)."""

    device_id: str
    incident_id: str
    phase: Phase
    ts: datetime  # aware: the event that made the transition
    reason: str
    model_version: str

    def __post_init__(self) -> None:
        if self.phase not in (Phase.ALARM, Phase.RESOLVED):
            raise ValueError(f"the response agent acts on ALARM and RESOLVED, got {self.phase}")
        if not (self.device_id and self.incident_id and self.reason):
            raise ValueError(f"an incident change needs a device, incident and reason: {self}")
        if self.ts.tzinfo is None:
            raise ValueError(f"an incident change's ts must be timezone-aware, got {self.ts}")


def incident_change(decision: Decision, event: ScoreEvent) -> IncidentChange | None:
    """What `analysis.step(..., event)` gives the response agent: None unless it moved the
    device into ALARM or RESOLVED."""
    change, incident = decision.transition, decision.state.incident_id
    if change is None or change.to_state not in (Phase.ALARM, Phase.RESOLVED):
        return None
    if incident is None:  # the machine keeps the incident through ALARM and RESOLVED
        raise ValueError(f"transition to {change.to_state} without an incident: {decision}")
    return IncidentChange(
        device_id=event.device_id,
        incident_id=incident,
        phase=Phase(change.to_state),
        ts=event.ts,
        reason=change.reason,
        model_version=event.model_version,
    )


@dataclass(frozen=True, kw_only=True)
class Alert:
    alert_id: str  # the incident id
    device_id: str
    severity: str
    subject: str
    text: str  # what people read
    model_version: str
    created_at: datetime
    ack_deadline: datetime
    # The policy's levels when raised: a policy changed later does not re-time open alerts.
    escalation: tuple[EscalationLevel, ...]

    def notification(self) -> Notification:
        # Keyed on the alert alone: however often the incident is redelivered, one notification.
        return _notify(self, self.subject, self.text, self.severity, "alarm", self.alert_id)


@dataclass(frozen=True)
class EscalationStep:
    alert_id: str
    level: int  # index into the alert's escalation levels
    target: str
    due_at: datetime


def open_alert(change: IncidentChange, policy: EscalationPolicy) -> Alert:
    """The alert for an incident opened by `change` (a transition into ALARM)."""
    if change.phase != Phase.ALARM:
        raise ValueError(f"an alert opens on ALARM, got {change.phase} for {change.incident_id}")
    deadline = change.ts + timedelta(seconds=policy.ack_timeout_s)
    text = "\n".join(
        [
            f"Fire alarm on device {change.device_id} at {change.ts.isoformat()}.",
            f"Why: {change.reason}",
            f"Model: {change.model_version or 'unknown'}",
            f"Acknowledge by {deadline.isoformat()}: firepipe alerts ack {change.incident_id}",
            "Escalates to: "
            + (", ".join(f"{t} after {a:g} s" for a, t in policy.levels) or "nobody"),
        ]
    )
    return Alert(
        alert_id=change.incident_id,
        device_id=change.device_id,
        severity=ALARM_SEVERITY,
        subject=f"FIRE ALARM: device {change.device_id} (alert {change.incident_id})",
        text=text,
        model_version=change.model_version,
        created_at=change.ts,
        ack_deadline=deadline,
        escalation=tuple(EscalationLevel(*level) for level in policy.levels),
    )


def resolution_notice(change: IncidentChange) -> Notification:
    """The notice that `change` (a transition into RESOLVED) closed its incident's alert."""
    if change.phase != Phase.RESOLVED:
        raise ValueError(f"a resolution notice needs RESOLVED, got {change.phase}")
    alert = change.incident_id
    subject = f"resolved: device {change.device_id} (alert {alert})"
    text = f"Alert {alert} on device {change.device_id} resolved at {change.ts.isoformat()}.\n"
    why = text + f"Why: {change.reason}"
    return _notify(change, subject, why, "info", "resolved", f"{alert}/resolved")


def escalation_notice(alert: Alert, step: EscalationStep) -> Notification:
    subject = f"ESCALATED to {step.target}: {alert.subject}"
    text = f"Not acknowledged by {alert.ack_deadline.isoformat()}.\n{alert.text}"
    key = f"{alert.alert_id}/escalation/{step.level}"
    return _notify(alert, subject, text, alert.severity, "escalation", key, step.target)


@dataclass(frozen=True, kw_only=True)
class AlertRecord:
    """An alert and what happened to it since; `to_dict` is what the state store keeps."""

    alert: Alert
    escalated: tuple[int, ...] = ()  # levels already sent
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None

    @property
    def status(self) -> str:
        if self.resolved_at is not None:
            return "resolved"
        return "open" if self.acknowledged_at is None else "acknowledged"

    def to_dict(self) -> dict[str, Any]:
        a = self.alert
        return {
            "alert_id": a.alert_id,
            "device_id": a.device_id,
            "severity": a.severity,
            "subject": a.subject,
            "text": a.text,
            "model_version": a.model_version,
            "created_at": timestamp_text(a.created_at),
            "ack_deadline": timestamp_text(a.ack_deadline),
            "escalation": [[after_s, target] for after_s, target in a.escalation],
            "escalated": list(self.escalated),
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": _text(self.acknowledged_at),
            "resolved_at": _text(self.resolved_at),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertRecord:
        try:
            alert = Alert(
                alert_id=str(data["alert_id"]),
                device_id=str(data["device_id"]),
                severity=str(data["severity"]),
                subject=str(data["subject"]),
                text=str(data["text"]),
                model_version=str(data["model_version"]),
                created_at=parse_timestamp(data["created_at"]),
                ack_deadline=parse_timestamp(data["ack_deadline"]),
                escalation=tuple(EscalationLevel(float(a), str(t)) for a, t in data["escalation"]),
            )
            return cls(
                alert=alert,
                escalated=tuple(int(level) for level in data["escalated"]),
                acknowledged_by=data.get("acknowledged_by"),
                acknowledged_at=_time(data.get("acknowledged_at")),
                resolved_at=_time(data.get("resolved_at")),
            )
        except (KeyError, ValueError, TypeError) as error:
            raise ValueError(f"not an alert record: {data!r} ({error!r})") from None


def due_escalations(record: AlertRecord, now: datetime) -> list[EscalationStep]:
    """The escalation steps due by `now` and not sent yet; none once acknowledged or resolved.
    Every missed level is due at once: a timer that slept through two levels sends both."""
    if record.status != "open":
        return []
    alert = record.alert
    steps = []
    for level, (after_s, target) in enumerate(alert.escalation):
        due_at = alert.created_at + timedelta(seconds=after_s)
        if due_at <= now and level not in record.escalated:
            steps.append(EscalationStep(alert.alert_id, level, target, due_at))
    return steps


def mark_escalated(record: AlertRecord, steps: list[EscalationStep]) -> AlertRecord:
    """`record` with `steps` sent, so `due_escalations` never returns them again."""
    for step in steps:
        if step.alert_id != record.alert.alert_id:
            raise ValueError(f"step of alert {step.alert_id} marked on {record.alert.alert_id}")
    levels = sorted({*record.escalated, *(step.level for step in steps)})
    return replace(record, escalated=tuple(levels))


def require_alert(record: AlertRecord | None, alert_id: str) -> AlertRecord:
    """The store's answer for `alert_id`, or a refusal naming it when there is none."""
    if record is None:
        raise AlertError(f"no alert {alert_id!r}: `firepipe alerts list` shows the alerts")
    return record


def acknowledge(record: AlertRecord, by: str, at: datetime) -> AlertRecord:
    """`record` acknowledged by `by` at `at`, which stops its escalation. Refused for a resolved
    alert (there is nothing left to act on); an alert already acknowledged is returned as it is,
    so the first ack stands and a retried ack is harmless."""
    alert_id = record.alert.alert_id
    if not by.strip():
        raise AlertError(f"an ack of alert {alert_id} needs who acknowledges it")
    if at.tzinfo is None:
        raise AlertError(f"an ack's time must be timezone-aware, got {at}")
    if record.resolved_at is not None:
        raise AlertError(
            f"alert {alert_id} was resolved at {record.resolved_at.isoformat()}: nothing to ack"
        )
    if record.acknowledged_at is not None:
        return record
    return replace(record, acknowledged_by=by, acknowledged_at=at)


def resolve(record: AlertRecord, change: IncidentChange) -> AlertRecord:
    """`record` closed by `change` (RESOLVED); a redelivered resolution keeps the first time."""
    if change.phase != Phase.RESOLVED or change.incident_id != record.alert.alert_id:
        raise ValueError(f"{change.phase} of {change.incident_id} cannot resolve {record.alert}")
    if record.resolved_at is not None:
        return record
    return replace(record, resolved_at=change.ts)


def _notify(
    about: Alert | IncidentChange,
    subject: str,
    text: str,
    severity: str,
    kind: str,
    dedup_key: str,
    target: str | None = None,
) -> Notification:
    alert_id = about.alert_id if isinstance(about, Alert) else about.incident_id
    attributes = {"kind": kind, "device_id": about.device_id, "alert_id": alert_id}
    if about.model_version:  # SNS refuses an empty attribute value
        attributes["model_version"] = about.model_version
    if target is not None:
        attributes["target"] = target
    return Notification(subject, text, severity, SOURCE, dedup_key, attributes)


def _text(moment: datetime | None) -> str | None:
    return None if moment is None else timestamp_text(moment)


def _time(text: str | None) -> datetime | None:
    return None if text is None else parse_timestamp(text)
