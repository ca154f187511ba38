"""The escalation port: after the response agent raises an alert, each of its escalation levels
fires `after_s` seconds later, at wall-clock rate. In AWS a Step Functions execution per alert
(firepipe.core.agents.escalation) waits and invokes the escalate Lambda; locally a durable
SQLite timer under FIREPIPE_HOME that the response worker polls with `claim_due`.

Both are idempotent per alert: scheduling an alert again (a redelivered ALARM) adds nothing.
A level may still fire twice (a Lambda retried, a worker killed before `done`): the response
agent sends an escalation only when its record says it is due and unsent (`due_escalations`).
"""

import json
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import dagster as dg
from pydantic import Field

from firepipe.core.agents.escalation import execution_input, execution_name
from firepipe.core.agents.response import Alert
from firepipe.lib import sqlite_state


class EscalationScheduler(dg.ConfigurableResource, ABC):
    """Fires an alert's escalation levels on time."""

    @abstractmethod
    def schedule(self, alert: Alert) -> str:
        """Start `alert`'s escalation timers and return the schedule's id (the execution ARN in
        AWS, the alert id locally); the same alert again returns the same id, adding nothing."""

    @abstractmethod
    def describe(self) -> str:
        """Where the timers run, for people."""


@dataclass(frozen=True)
class DueLevel:
    """One escalation level of one alert in the local timer."""

    alert_id: str
    level: int
    target: str
    due_wall: float  # epoch seconds
    deliveries: int  # how often claim_due has handed it out


_SCHEMA = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    # A handled level keeps its row (done_at set), so scheduling its alert again adds nothing.
    "CREATE TABLE IF NOT EXISTS escalations (alert_id TEXT NOT NULL, level INTEGER NOT NULL, "
    "target TEXT NOT NULL, due_wall REAL NOT NULL, scheduled_at REAL NOT NULL, "
    "leased_until REAL NOT NULL DEFAULT 0, deliveries INTEGER NOT NULL DEFAULT 0, "
    "done_at REAL, PRIMARY KEY (alert_id, level))",
    "CREATE INDEX IF NOT EXISTS escalations_due ON escalations (done_at, due_wall)",
)


class LocalEscalationTimer(EscalationScheduler):
    """A durable timer: one row per (alert, level) in a SQLite file. A level is handed to one
    claimer at a time under a lease; one that is not marked `done` before its lease ends (its
    worker was killed) is handed out again."""

    path: str = Field(description="the SQLite file of timers; created on first use")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock before reading: two claimers never see the same
        # level as free.
        with sqlite_state.immediate(sqlite_state.kept(self.path, *_SCHEMA)) as db:
            yield db

    def schedule(self, alert: Alert) -> str:
        now = time.time()
        rows = [
            (alert.alert_id, level, target, now + after_s, now)
            for level, (after_s, target) in enumerate(alert.escalation)
        ]
        with self._write() as db:
            db.executemany(
                "INSERT OR IGNORE INTO escalations (alert_id, level, target, due_wall, "
                "scheduled_at) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        return alert.alert_id

    def claim_due(self, now: float, lease_s: float, limit: int = 100) -> list[DueLevel]:
        """The levels due by `now` (epoch seconds) that nobody holds, each leased to this caller
        for `lease_s` seconds; earliest first, at most `limit`."""
        if not lease_s > 0:
            raise ValueError(f"lease_s must be > 0, got {lease_s!r}")
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        with self._write() as db:
            rows = db.execute(
                "UPDATE escalations SET leased_until = ?1, deliveries = deliveries + 1 "
                "WHERE rowid IN (SELECT rowid FROM escalations WHERE done_at IS NULL "
                "AND due_wall <= ?2 AND leased_until <= ?2 ORDER BY due_wall LIMIT ?3) "
                "RETURNING alert_id, level, target, due_wall, deliveries",
                [now + lease_s, now, limit],
            ).fetchall()
        return sorted((DueLevel(*row) for row in rows), key=lambda d: (d.due_wall, d.level))

    def done(self, alert_id: str, level: int) -> None:
        """Mark a level handled, so it is never handed out again; again is harmless."""
        with self._write() as db:
            found = db.execute(
                "UPDATE escalations SET done_at = coalesce(done_at, ?) "
                "WHERE alert_id = ? AND level = ?",
                [time.time(), alert_id, level],
            ).rowcount
        if not found:
            raise KeyError(f"no escalation level {level} of alert {alert_id!r} in {self.path}")

    def pending(self) -> list[DueLevel]:
        """The levels not handled yet, earliest first."""
        with self._write() as db:
            rows = db.execute(
                "SELECT alert_id, level, target, due_wall, deliveries FROM escalations "
                "WHERE done_at IS NULL ORDER BY due_wall, alert_id, level"
            ).fetchall()
        return [DueLevel(*row) for row in rows]

    def describe(self) -> str:
        return f"SQLite timer at {self.path}"


class StepFunctionsEscalation(EscalationScheduler):
    """One execution of the escalation state machine per alert, named from the alert id;
    credentials from the default AWS chain."""

    state_machine_arn: str = Field(description="the escalation state machine (the CDK app's)")
    region: str
    endpoint_url: str | None = None

    @cached_property
    def _sfn(self) -> Any:
        import boto3

        return boto3.client(
            "stepfunctions", region_name=self.region, endpoint_url=self.endpoint_url
        )

    def schedule(self, alert: Alert) -> str:
        name = execution_name(alert.alert_id)
        payload = json.dumps(execution_input(alert), sort_keys=True)
        try:
            response = self._sfn.start_execution(
                stateMachineArn=self.state_machine_arn, name=name, input=payload
            )
        except self._sfn.exceptions.ExecutionAlreadyExists:
            # The same name with the same input while running succeeds above; this is the alert's
            # execution that has ended (or an older input): it is the one schedule of this alert.
            return self._execution_arn(name)
        return str(response["executionArn"])

    def _execution_arn(self, name: str) -> str:
        # arn:<partition>:states:<region>:<account>:stateMachine:<machine>
        parts = self.state_machine_arn.split(":")
        if len(parts) != 7 or parts[5] != "stateMachine":
            raise ValueError(f"not an unqualified state machine ARN: {self.state_machine_arn!r}")
        return ":".join([*parts[:5], "execution", parts[6], name])

    def describe(self) -> str:
        return f"Step Functions state machine {self.state_machine_arn} in {self.region}"
