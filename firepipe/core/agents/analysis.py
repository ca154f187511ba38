"""The analysis agent's state machine: per device, NORMAL -> SUSPECTED -> ALARM -> RESOLVED.

ALARM is entered exactly when the serving engine's alarm sounds (`ScoreEvent.alarm`, the rule of
`evaluation.alarm_sounding` at the device's operating point), so the agents alarm when
evaluate-real does. Leaving ALARM is slower than entering it (hysteresis): the score must stay
below `clear_fraction` x threshold for `clear_s` seconds, so a fire whose score wavers around the
threshold stays one incident with one alert. RESOLVED returns to NORMAL after `quiet_s` seconds
without a score at the threshold. A score that is not warm (the monitoring worker has not held
the device's readings for the features' lookback, as after a restart) never counts toward
leaving ALARM: its windows are partial, so its low score says nothing of the fire.

`step` is pure: the worker reads the device's state from the state store, steps it and writes
the new state with the transition (fields named as the store's `Transition`) under the version
it read. An event at or before the last applied one (a redelivery, a reordering) changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from firepipe.core.features.spec import RISE_LAG_S
from firepipe.core.history import parse_timestamp, timestamp_text
from firepipe.core.serving.engine import epoch_us

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Phase(StrEnum):
    NORMAL = "NORMAL"
    SUSPECTED = "SUSPECTED"
    ALARM = "ALARM"
    RESOLVED = "RESOLVED"


@dataclass(frozen=True, slots=True)
class ScoreEvent:
    """One scored reading, as the monitoring agent publishes it."""

    device_id: str
    ts: datetime  # aware
    score: float
    alarm: bool  # the engine's alarm at the device's operating point
    threshold: float  # of that operating point
    model_version: str
    event_id: str
    # The engine held the device's readings for the features' whole lookback (False for a
    # while after a monitoring worker (re)learns a device: partial windows, unreliable scores).
    warm: bool = True

    def __post_init__(self) -> None:
        if not self.device_id or not self.event_id:
            raise ValueError(f"a score event needs a device_id and an event_id, got {self}")
        if self.ts.tzinfo is None:
            raise ValueError(f"a score event's ts must be timezone-aware, got {self.ts}")
        if not (math.isfinite(self.score) and math.isfinite(self.threshold)):
            raise ValueError(f"score and threshold must be finite numbers, got {self}")


@dataclass(frozen=True, kw_only=True)
class AnalysisPolicy:
    # Half the threshold: a score that only dips under the threshold is still a fire's.
    clear_fraction: float = 0.5
    # The gold features' rise lag: a fire that dims for less than the window its rises are
    # measured over has not been shown to be out.
    clear_s: float = float(RISE_LAG_S)
    quiet_s: float = 60.0

    def __post_init__(self) -> None:
        if not (0 < self.clear_fraction <= 1):  # NaN fails too
            raise ValueError(f"clear_fraction must be in (0, 1], got {self.clear_fraction!r}")
        for name in ("clear_s", "quiet_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class DeviceState:
    """What the machine remembers of a device; `to_dict` is what the state store keeps."""

    device_id: str
    phase: Phase
    last_ts: datetime  # of the last event applied
    last_event_id: str
    incident_id: str | None = None  # the open (ALARM) or last resolved (RESOLVED) incident
    incident_started: datetime | None = None
    # Start of the current run of clear scores: below the clear level in ALARM, below the
    # threshold in RESOLVED (from the resolution on); None while the score is not clear.
    clear_since: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "phase": self.phase.value,
            "last_ts": timestamp_text(self.last_ts),
            "last_event_id": self.last_event_id,
            "incident_id": self.incident_id,
            "incident_started": _text(self.incident_started),
            "clear_since": _text(self.clear_since),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceState:
        try:
            return cls(
                device_id=str(data["device_id"]),
                phase=Phase(data["phase"]),
                last_ts=parse_timestamp(data["last_ts"]),
                last_event_id=str(data["last_event_id"]),
                incident_id=data.get("incident_id"),
                incident_started=_time(data.get("incident_started")),
                clear_since=_time(data.get("clear_since")),
            )
        except (KeyError, ValueError, TypeError) as error:
            raise ValueError(f"not an analysis device state: {data!r} ({error!r})") from None


@dataclass(frozen=True, kw_only=True)
class PhaseChange:
    """A transition, with the state store's `Transition` field names."""

    from_state: str | None  # None: the device's first event
    to_state: str
    reason: str
    event_id: str


@dataclass(frozen=True, kw_only=True)
class Decision:
    state: DeviceState  # the state before, unchanged, when the event is not applied
    transition: PhaseChange | None
    reason: str
    applied: bool  # False: a stale or duplicate event, nothing to write


def step(state: DeviceState | None, event: ScoreEvent, policy: AnalysisPolicy) -> Decision:
    """The device's state after `event`, and the transition it makes, if any."""
    if state is not None:
        if state.device_id != event.device_id:
            raise ValueError(f"event of {event.device_id!r} stepped on {state.device_id!r}")
        if event.event_id == state.last_event_id:
            return Decision(state=state, transition=None, applied=False, reason="duplicate event")
        if event.ts <= state.last_ts:
            why = f"stale event: ts {event.ts.isoformat()} <= last {state.last_ts.isoformat()}"
            return Decision(state=state, transition=None, applied=False, reason=why)
    first = DeviceState(
        device_id=event.device_id, phase=Phase.NORMAL, last_ts=event.ts, last_event_id=""
    )
    base = replace(state or first, last_ts=event.ts, last_event_id=event.event_id)
    new, reason = _next(base, event, policy)
    moved = state is None or new.phase != state.phase
    change = PhaseChange(
        from_state=None if state is None else state.phase.value,
        to_state=new.phase.value,
        reason=reason,
        event_id=event.event_id,
    )
    return Decision(state=new, transition=change if moved else None, reason=reason, applied=True)


class EventColumns(Protocol):
    """One device's score events in columns (`messages.ScoreBatch`): the fast path reads the
    columns and builds a ScoreEvent only for an event that may change the state."""

    @property
    def ts_us(self) -> list[int]: ...  # microseconds since the Unix epoch

    @property
    def score(self) -> list[float]: ...

    @property
    def alarm(self) -> list[bool]: ...

    @property
    def threshold(self) -> list[float]: ...

    @property
    def warm(self) -> list[bool]: ...

    def event_id(self, k: int) -> str: ...

    def event(self, k: int) -> ScoreEvent: ...


def advance(
    state: DeviceState | None, events: EventColumns, start: int, stop: int, policy: AnalysisPolicy
) -> tuple[DeviceState | None, list[Decision]]:
    """`step` over events[start:stop] in order: the state after them and the decisions that made
    a transition (each with the state it produced). The same as stepping each event, faster:
    most events (a quiet device, a burning one) change nothing but the state's last event, and
    those are skipped without building an event."""
    decisions: list[Decision] = []
    last = None  # the last skipped event, applied to the state when it matters
    newest = -1  # the state's last ts in microseconds, while events are skipped
    for k in range(start, stop):
        if state is not None and _unchanged(state, events, k, policy):
            if last is None:
                newest = epoch_us(state.last_ts)
            if events.ts_us[k] > newest:  # else stale: step would not apply it either
                last, newest = k, events.ts_us[k]
            continue
        if last is not None and state is not None:
            state = _seen(state, events, last)
            last = None
        decision = step(state, events.event(k), policy)
        if decision.applied:
            state = decision.state
            if decision.transition is not None:
                decisions.append(decision)
    if last is not None and state is not None:
        state = _seen(state, events, last)
    return state, decisions


def _unchanged(state: DeviceState, events: EventColumns, k: int, policy: AnalysisPolicy) -> bool:
    """Whether event k, applied, leaves `state` as it is but for its last event."""
    score, threshold = events.score[k], events.threshold[k]
    if state.phase == Phase.NORMAL:
        return not events.alarm[k] and score < threshold
    if state.phase == Phase.ALARM and state.clear_since is None:
        return events.alarm[k] or score >= policy.clear_fraction * threshold or not events.warm[k]
    return False


def _seen(state: DeviceState, events: EventColumns, k: int) -> DeviceState:
    # `replace`, spelt out: this runs once per device and message, and replace is slow.
    return DeviceState(
        device_id=state.device_id,
        phase=state.phase,
        last_ts=from_epoch_us(events.ts_us[k]),
        last_event_id=events.event_id(k),
        incident_id=state.incident_id,
        incident_started=state.incident_started,
        clear_since=state.clear_since,
    )


def from_epoch_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def incident_id(event: ScoreEvent) -> str:
    """The incident an alarm event opens: from the device and the event, so a redelivery opens
    the same one, while a replay, which publishes new event ids, opens new ones."""
    key = json.dumps([event.device_id, event.event_id, timestamp_text(event.ts)])
    return "inc-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _next(state: DeviceState, event: ScoreEvent, policy: AnalysisPolicy) -> tuple[DeviceState, str]:
    s, t = f"{event.score:.4g}", f"{event.threshold:.4g}"
    if event.alarm and state.phase != Phase.ALARM:
        new = replace(
            state,
            phase=Phase.ALARM,
            incident_id=incident_id(event),
            incident_started=event.ts,
            clear_since=None,
        )
        return new, (
            f"new incident: the alarm sounds, score {s} >= threshold {t} held for the "
            f"persistence (model {event.model_version})"
        )
    if state.phase == Phase.ALARM:
        clear_level = policy.clear_fraction * event.threshold
        level = f"{policy.clear_fraction:g} x threshold {t} = {clear_level:.4g}"
        # the alarm too: at a threshold <= 0 the clear level is not below the threshold
        if event.alarm or event.score >= clear_level:
            return replace(state, clear_since=None), f"alarm holds: score {s} >= {level}"
        if not event.warm:  # a score from partial windows never ends a fire
            return replace(state, clear_since=None), f"alarm holds: score {s} not warm"
        return _after_clear(state, event, policy.clear_s, Phase.RESOLVED, f"score {s} < {level}")
    if state.phase == Phase.RESOLVED:
        if event.score >= event.threshold:
            return replace(state, clear_since=None), f"not quiet: score {s} >= threshold {t}"
        new, reason = _after_clear(
            state, event, policy.quiet_s, Phase.NORMAL, f"score {s} < threshold {t}"
        )
        if new.phase == Phase.NORMAL:  # the incident is over: NORMAL holds none
            new = replace(new, incident_id=None, incident_started=None, clear_since=None)
        return new, reason
    if event.score >= event.threshold:
        return replace(state, phase=Phase.SUSPECTED), (
            f"suspected: score {s} >= threshold {t}, the alarm not sounding (persistence not met)"
        )
    return replace(state, phase=Phase.NORMAL), f"normal: score {s} < threshold {t}"


def _after_clear(
    state: DeviceState, event: ScoreEvent, hold_s: float, target: Phase, why: str
) -> tuple[DeviceState, str]:
    """Counts a clear score toward `hold_s` seconds; once held, the device moves to `target`."""
    since = state.clear_since or event.ts
    held_s = (event.ts - since).total_seconds()
    reason = f"{why} for {held_s:g} s since {since.isoformat()} (needs {hold_s:g} s)"
    if event.ts - since < timedelta(seconds=hold_s):
        return replace(state, clear_since=since), reason
    # RESOLVED counts its quiet time from the resolution itself.
    return replace(state, phase=target, clear_since=event.ts), f"{target.value.lower()}: {reason}"


def _text(moment: datetime | None) -> str | None:
    return None if moment is None else timestamp_text(moment)


def _time(text: str | None) -> datetime | None:
    return None if text is None else parse_timestamp(text)
