"""Notifications for people and subscribers: what a run failure (and, later, a fire alert) says,
independent of where it goes (a local outbox, an SNS topic).

A notification carries a dedup key: notifying the same key twice is one notification (the local
outbox keeps one row; a FIFO topic drops the repeat). Its attributes travel as SNS message
attributes, so subscriptions can filter on them; SNS allows 10 per message, three of which
(severity, source, dedup_key) every notification sets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

SEVERITIES: tuple[str, ...] = ("info", "warning", "error", "critical")
RESERVED_ATTRIBUTES: tuple[str, ...] = ("severity", "source", "dedup_key")
MAX_ATTRIBUTES = 10 - len(RESERVED_ATTRIBUTES)
# SNS's rule for attribute names: letters, digits, '_', '-', '.', not starting with '.'.
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,255}")

RUN_FAILURE_SOURCE = "dagster/run_failure"
# A subscriber reading mail or SMS needs the first lines; the whole error is on the run's page.
MAX_ERROR_CHARS = 2000


class NotificationError(ValueError):
    """A notification that cannot be built, sent or listed; its message is for the user."""


@dataclass(frozen=True)
class Notification:
    """One message to notify: `subject` is its one-line title, `body` its text for people."""

    subject: str
    body: str
    severity: str
    source: str  # who raises it: "dagster/run_failure", later the response agent
    dedup_key: str  # the same key notified twice is one notification
    attributes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("subject", "body", "source", "dedup_key"):
            if not getattr(self, name).strip():
                raise NotificationError(f"a notification needs a non-empty {name}")
        if self.severity not in SEVERITIES:
            raise NotificationError(
                f"severity must be one of {', '.join(SEVERITIES)}, got {self.severity!r}"
            )
        _check_attributes(self.attributes)
        # Frozen means frozen: a caller's dict changed later must not change this notification.
        object.__setattr__(self, "attributes", MappingProxyType(dict(self.attributes)))

    def message_attributes(self) -> dict[str, str]:
        """Every attribute a subscriber can filter on: the reserved three, then the others."""
        return {
            "severity": self.severity,
            "source": self.source,
            "dedup_key": self.dedup_key,
            **self.attributes,
        }


def _check_attributes(attributes: Mapping[str, str]) -> None:
    if len(attributes) > MAX_ATTRIBUTES:
        raise NotificationError(
            f"at most {MAX_ATTRIBUTES} attributes (SNS allows 10 with severity, source and "
            f"dedup_key), got {len(attributes)}"
        )
    for name, value in attributes.items():
        if name in RESERVED_ATTRIBUTES:
            raise NotificationError(f"attribute {name!r} is set from the notification's field")
        if not _ATTRIBUTE_NAME.fullmatch(name) or name.lower().startswith(("aws.", "amazon.")):
            raise NotificationError(
                f"attribute name {name!r}: letters, digits, '_', '-', '.' only (as SNS requires)"
            )
        if not isinstance(value, str) or not value:
            raise NotificationError(f"attribute {name!r} needs a non-empty text value")


@dataclass(frozen=True)
class NotificationRecord:
    """A notification as a notifier kept it: its id and when it was first notified (UTC)."""

    id: str
    created_at: datetime
    notification: Notification


def run_link(run_id: str, ui_url: str | None) -> str:
    """Where the Dagster UI shows run `run_id`: a full URL under `ui_url`, else the UI's path."""
    path = f"/runs/{run_id}"
    return ui_url.rstrip("/") + path if ui_url else path


def run_failure_notification(
    job_name: str,
    run_id: str,
    error: str | None,
    failed_steps: Sequence[str],
    ui_url: str | None = None,
) -> Notification:
    """The notification for a failed Dagster run: job, run id and link, the failed steps and
    the first error. Keyed on the run, so a run reported twice is notified once."""
    error_text = (error or "").strip() or "no error message recorded"
    if len(error_text) > MAX_ERROR_CHARS:
        error_text = error_text[: MAX_ERROR_CHARS - 3] + "..."
    steps = ", ".join(failed_steps) if failed_steps else "none (the run failed outside its steps)"
    body = "\n".join(
        [
            f"Job {job_name} failed.",
            f"Run: {run_id}",
            f"Open: {run_link(run_id, ui_url)}",
            f"Failed steps: {steps}",
            f"Error: {error_text}",
        ]
    )
    return Notification(
        subject=f"firepipe: job {job_name} failed (run {run_id[:8]})",
        body=body,
        severity="error",
        source=RUN_FAILURE_SOURCE,
        dedup_key=run_id,
        attributes={"job": job_name, "run_id": run_id},
    )
