"""The analysis agent: score events in, each device's state machine stepped, transitions into
the state store's history, incidents (ALARM, RESOLVED) out on the events topic.

Every transition is one conditional put (the version read, the event's id as its guard), so two
workers on one device never make a transition twice: the loser of a race reads the state again
and steps its events from there (stale or duplicate ones then change nothing). Between
transitions a device's progress (its last event, the start of a clear run) lives in this
worker's memory only: a worker that dies loses at most a clear run's start, which delays a
resolution and never loses or repeats an alarm.

The incident goes out after its transition is stored. A worker that dies between the two
leaves the message to be delivered again; its events are then stale, so the worker looks up
the transitions they made in the history and publishes their incidents again (the response
agent deduplicates them by incident id).
"""

from __future__ import annotations

import logging

from firepipe.core.agents import messages
from firepipe.core.agents.analysis import AnalysisPolicy, Decision, DeviceState, Phase, advance
from firepipe.core.agents.messages import IncidentMessage, ScoreBatch
from firepipe.core.agents.response import IncidentChange, incident_change
from firepipe.resources.state_store import (
    DuplicateEventError,
    StaleVersionError,
    StateStore,
    Transition,
)
from firepipe.resources.topic import Topic

log = logging.getLogger(__name__)
DEVICE_PREFIX = "device/"
# Redelivered transitions are looked for among a device's latest history records.
HISTORY_LOOKBACK = 50


def device_key(device_id: str) -> str:
    return DEVICE_PREFIX + device_id


class AnalysisAgent:
    def __init__(self, store: StateStore, topic: Topic, policy: AnalysisPolicy) -> None:
        self.store, self.topic, self.policy = store, topic, policy
        self._known: dict[str, tuple[DeviceState | None, int]] = {}  # state, version
        self.transitions = 0

    def handle(self, body: str, redelivered: bool = False) -> list[IncidentMessage]:
        """Step every device of a score message; returns the incidents published."""
        batch = messages.decode_scores(body)
        published = []
        for device, events in batch.by_device().items():
            if redelivered:
                published += self._republish(device, events)
            published += self._apply(device, events)
        return published

    def _apply(self, device: str, events: ScoreBatch) -> list[IncidentMessage]:
        published, start = [], 0
        while start < len(events):
            state, version = self._state(device)
            final, decisions = advance(state, events, start, len(events), self.policy)
            for decision in decisions:
                k = _position(events, decision)
                try:
                    version = self._put(device, decision, version)
                except (StaleVersionError, DuplicateEventError) as conflict:
                    # Another worker moved the device: read it again and step from this event
                    # (a duplicate one is passed over).
                    log.info("device %s: %s", device, conflict)
                    self._known.pop(device, None)
                    start = k + 1 if isinstance(conflict, DuplicateEventError) else k
                    break
                change = incident_change(decision, events.event(k))
                if change is not None:
                    published.append(self._publish(change, events.event_id(k), events.sent_at))
            else:
                self._known[device] = (final, version)
                return published
        return published

    def _state(self, device: str) -> tuple[DeviceState | None, int]:
        if device not in self._known:
            item = self.store.get(device_key(device))
            self._known[device] = (
                (None, 0) if item is None else (DeviceState.from_dict(item.state), item.version)
            )
        return self._known[device]

    def _put(self, device: str, decision: Decision, version: int) -> int:
        change = decision.transition
        assert change is not None  # advance returns transitions only
        transition = Transition(
            from_state=change.from_state,
            to_state=change.to_state,
            reason=change.reason,
            event_id=change.event_id,
        )
        item = self.store.put(device_key(device), decision.state.to_dict(), version, transition)
        self.transitions += 1
        return item.version

    def _publish(
        self, change: IncidentChange, event_id: str, sent_at: float | None
    ) -> IncidentMessage:
        message = IncidentMessage(change, event_id, sent_at)
        # One group per device: its incident opens before it resolves.
        attributes = {messages.KIND: messages.INCIDENT, messages.GROUP: change.device_id}
        self.topic.publish(messages.encode_incident(message), attributes)
        return message

    def _republish(self, device: str, events: ScoreBatch) -> list[IncidentMessage]:
        """The incidents of transitions this message's events already made."""
        ids = {events.event_id(k): k for k in range(len(events))}
        published = []
        for record in self.store.history(device_key(device), limit=HISTORY_LOOKBACK):
            t = record.transition
            if t.event_id in ids and t.to_state in (Phase.ALARM, Phase.RESOLVED):
                state = DeviceState.from_dict(record.state)
                k = ids[t.event_id]
                change = IncidentChange(
                    device_id=device,
                    incident_id=str(state.incident_id),
                    phase=Phase(t.to_state),
                    ts=events.event(k).ts,
                    reason=t.reason,
                    model_version=events.model_version,
                )
                published.append(self._publish(change, t.event_id, events.sent_at))
        return published


def _position(events: ScoreBatch, decision: Decision) -> int:
    assert decision.transition is not None
    position = int(decision.transition.event_id.rsplit(":", 1)[1])
    return events.index.index(position)
