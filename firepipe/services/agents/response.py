"""The response agent: incidents in, one alert per incident out through the notifier, escalated
while nobody acknowledges it.

The alert's record is kept in the state store under `alert/<id>` (its history says when it was
opened, escalated, acknowledged, resolved). Redelivery is safe at every step: the record's put
is guarded by the incident id (a second open changes nothing), and the notification is sent
again whatever the put said, keyed on the alert (the outbox keeps one, a FIFO topic drops the
repeat), so a worker that died between the put and the send still sends it. An escalation is
sent before its level is recorded, for the same reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from firepipe.core.agents import messages
from firepipe.core.agents.analysis import Phase
from firepipe.core.agents.response import (
    AlertRecord,
    EscalationPolicy,
    IncidentChange,
    acknowledge,
    due_escalations,
    escalation_notice,
    mark_escalated,
    open_alert,
    require_alert,
    resolution_notice,
    resolve,
)
from firepipe.resources.escalation import EscalationScheduler
from firepipe.resources.notifier import Notifier
from firepipe.resources.state_store import (
    DuplicateEventError,
    StaleVersionError,
    StateStore,
    Transition,
)

log = logging.getLogger(__name__)
ALERT_PREFIX = "alert/"
_RETRIES = 20  # conflicting writers on one alert (an ack beside an escalation) settle fast


class IncidentNotOpenError(RuntimeError):
    """A resolution that arrived before its incident's alert: retried later."""


def alert_key(alert_id: str) -> str:
    return ALERT_PREFIX + alert_id


class ResponseAgent:
    def __init__(
        self,
        store: StateStore,
        notifier: Notifier,
        scheduler: EscalationScheduler,
        policy: EscalationPolicy,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.notifier, self.scheduler, self.policy = store, notifier, scheduler, policy
        self.clock = clock
        self.alarm_latencies_s: list[float] = []  # enqueue of the reading -> alert sent

    def handle(self, body: str) -> None:
        message = messages.decode_incident(body)
        if message.change.phase == Phase.ALARM:
            self._open(message.change)
            if message.sent_at is not None:
                self.alarm_latencies_s.append(self.clock() - message.sent_at)
        else:
            self._resolve(message.change)

    def _open(self, change: IncidentChange) -> None:
        alert = open_alert(change, self.policy)
        record = AlertRecord(alert=alert)
        opened = Transition(
            from_state=None, to_state="open", reason=change.reason, event_id=alert.alert_id
        )
        try:
            self.store.put(alert_key(alert.alert_id), record.to_dict(), 0, opened)
        except (DuplicateEventError, StaleVersionError):
            log.info("alert %s was opened before: sending it again (deduplicated)", alert.alert_id)
        self.notifier.notify(alert.notification())
        self.scheduler.schedule(alert)

    def _resolve(self, change: IncidentChange) -> None:
        alert_id = change.incident_id

        def resolved(record: AlertRecord) -> AlertRecord:
            return resolve(record, change)

        if self.store.get(alert_key(alert_id)) is None:
            raise IncidentNotOpenError(f"alert {alert_id} is not open yet: retrying")
        self._update(alert_id, resolved, change.reason, f"{alert_id}/resolved")
        self.notifier.notify(resolution_notice(change))

    def escalate(self, alert_id: str, level: int) -> str:
        """Send escalation `level` of `alert_id` (and any level before it not sent yet) if the
        alert is still open; returns its status. What a timer or the state machine calls."""
        record = self.record(alert_id)
        alert = record.alert
        if not 0 <= level < len(alert.escalation):
            raise ValueError(f"alert {alert_id} has no escalation level {level}")
        at = alert.created_at + timedelta(seconds=alert.escalation[level].after_s)
        steps = due_escalations(record, at)
        for step in steps:
            self.notifier.notify(escalation_notice(alert, step))
        if steps:
            sent = ", ".join(str(s.level) for s in steps)

            def escalated(current: AlertRecord) -> AlertRecord:
                return mark_escalated(current, steps)

            self._update(alert_id, escalated, f"escalated: level {sent}", f"{alert_id}/esc/{level}")
        return self.record(alert_id).status

    def acknowledge(self, alert_id: str, by: str) -> AlertRecord:
        at = datetime.now(UTC)

        def acked(record: AlertRecord) -> AlertRecord:
            return acknowledge(record, by, at)

        return self._update(alert_id, acked, f"acknowledged by {by}", None)

    def record(self, alert_id: str) -> AlertRecord:
        item = self.store.get(alert_key(alert_id))
        return require_alert(None if item is None else AlertRecord.from_dict(item.state), alert_id)

    def _update(
        self,
        alert_id: str,
        change: Callable[[AlertRecord], AlertRecord],
        reason: str,
        event_id: str | None,
    ) -> AlertRecord:
        """`change` applied to the stored record under its version, read again on a conflict;
        a change that leaves the record as it is writes nothing."""
        key = alert_key(alert_id)
        for _ in range(_RETRIES):
            item = self.store.get(key)
            record = require_alert(
                None if item is None else AlertRecord.from_dict(item.state), alert_id
            )
            assert item is not None
            new = change(record)
            if new == record:
                return record
            transition = Transition(
                from_state=record.status, to_state=new.status, reason=reason, event_id=event_id
            )
            try:
                self.store.put(key, new.to_dict(), item.version, transition)
                return new
            except DuplicateEventError:
                return self.record(alert_id)
            except StaleVersionError:
                continue
        raise RuntimeError(f"alert {alert_id}: {_RETRIES} conflicting writes in a row")


def alert_records(store: StateStore) -> Iterator[AlertRecord]:
    """Every alert in `store`, in no promised order."""
    cursor = None
    while True:
        page = store.scan(limit=500, cursor=cursor)
        for item in page.items:
            if item.key.startswith(ALERT_PREFIX):
                yield AlertRecord.from_dict(item.state)
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
