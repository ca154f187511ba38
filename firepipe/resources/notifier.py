"""The notifier port: where run failures (and, later, the response agent's alerts) are sent. An
SNS topic in AWS; locally a durable outbox, a SQLite file under FIREPIPE_HOME that
`firepipe notifications list` reads.

Both are idempotent on the notification's dedup key, each as far as its system allows: the
outbox keeps one row per key for good; a FIFO topic (its name ends in `.fifo`) drops a repeat
within SNS's 5-minute deduplication interval; a standard topic delivers every publish, and its
subscribers see the key in the `dedup_key` message attribute.

The outbox can also POST each new notification to a webhook (a chat room, an on-call tool):
at least once, never at the cost of the row. A failed POST is logged and kept on the row with
its reason; `redeliver_webhooks` (the response worker calls it periodically) tries again.
Receivers deduplicate on the body's `dedup_key`.
"""

import hashlib
import json
import logging
import re
import sqlite3
import time
import uuid
from abc import ABC, abstractmethod
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, field_validator

from firepipe.core.history import parse_timestamp, timestamp_text
from firepipe.core.notifications import Notification, NotificationError, NotificationRecord
from firepipe.lib import sqlite_state
from firepipe.lib.webhook import check_webhook_url, post_json, webhook_host

logger = logging.getLogger(__name__)

# SNS: a subject under 100 characters with no line breaks or control characters (moto and SNS
# both accept exactly 100, see getmoto/moto#1503); MessageDeduplicationId and MessageGroupId
# up to 128 printable ASCII characters.
SNS_SUBJECT_MAX_CHARS = 100
_SNS_TOKEN = re.compile(r"[!-~]{1,128}")

# The outbox's webhook bookkeeping, added to an older outbox file on first open. webhook_status
# is NULL for a row stored while no webhook was set (nothing owed), else 'undelivered' or
# 'delivered'; webhook_claimed_until (epoch s) keeps a row to the sender now POSTing it.
_WEBHOOK_COLUMNS = {
    "webhook_status": "TEXT",
    "webhook_attempts": "INTEGER NOT NULL DEFAULT 0",
    "webhook_error": "TEXT",
    "webhook_delivered_at": "TEXT",
    "webhook_claimed_until": "REAL",
}


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")


class Notifier(dg.ConfigurableResource, ABC):
    """Where notifications go."""

    @abstractmethod
    def notify(self, notification: Notification) -> str:
        """Send `notification` and return its id; the same dedup key again is not a second
        notification (see the module docstring for how far each system takes that)."""

    @abstractmethod
    def recent(self, limit: int = 20, since: datetime | None = None) -> list[NotificationRecord]:
        """The latest `limit` notifications, newest first, created at or after `since`; raises
        NotificationError where the system cannot list what it sent."""

    @abstractmethod
    def describe(self) -> str:
        """Where the notifications go, for people."""


@dataclass(frozen=True)
class UndeliveredWebhook:
    """A notification the webhook still owes: how often it was tried and the last failure."""

    id: str
    dedup_key: str
    attempts: int
    error: str | None


class LocalNotifier(Notifier):
    """A durable outbox: a SQLite file under FIREPIPE_HOME, one row per dedup key; optionally
    each new row POSTed to a webhook."""

    path: str = Field(description="the SQLite outbox file; created on first notification")
    webhook_url: str | None = Field(
        default=None, description="http(s) URL each new notification is POSTed to as JSON"
    )
    webhook_timeout_s: float = Field(default=5.0, gt=0, description="per POST")

    @field_validator("webhook_url")
    @classmethod
    def _http_only(cls, url: str | None) -> str | None:
        return None if url is None else check_webhook_url(url)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite_state.connect(
            self.path,
            "CREATE TABLE IF NOT EXISTS notifications (id TEXT PRIMARY KEY, "
            "dedup_key TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL, severity TEXT NOT NULL, "
            "source TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL, "
            "attributes TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS notifications_by_time ON notifications (created_at)",
        )
        _add_webhook_columns(connection)
        connection.row_factory = sqlite3.Row
        return connection

    def notify(self, notification: Notification) -> str:
        n = notification
        created_at = timestamp_text(datetime.now(UTC))
        row = [
            uuid.uuid4().hex,
            n.dedup_key,
            created_at,
            n.severity,
            n.source,
            n.subject,
            n.body,
            json.dumps(dict(n.attributes), sort_keys=True),
            "undelivered" if self.webhook_url else None,
            # Held for this POST, so a redelivery pass meanwhile does not send it a second time.
            self._claim_deadline() if self.webhook_url else None,
        ]
        # One transaction: a second process notifying the same key at once finds the first row.
        with closing(self._connect()) as connection, connection:
            inserted = connection.execute(
                "INSERT INTO notifications (id, dedup_key, created_at, severity, source, "
                "subject, body, attributes, webhook_status, webhook_claimed_until) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedup_key) DO NOTHING",
                row,
            ).rowcount
            (kept,) = connection.execute(
                "SELECT id FROM notifications WHERE dedup_key = ?", [n.dedup_key]
            ).fetchone()
        if inserted and self.webhook_url:
            record = NotificationRecord(str(kept), parse_timestamp(created_at), n)
            self._post(self.webhook_url, record)
        return str(kept)

    def redeliver_webhooks(self, limit: int = 100) -> int:
        """POST the undelivered notifications again, those tried least first, and return how
        many were delivered. A pass stops at the first failure (the webhook is likely down:
        the next pass tries again) and skips rows another sender holds."""
        _check_limit(limit)
        url = self.webhook_url
        if not url or not Path(self.path).exists():
            return 0
        with closing(self._connect()) as connection:
            ids = [
                row["id"]
                for row in connection.execute(
                    "SELECT id FROM notifications WHERE webhook_status = 'undelivered' "
                    "ORDER BY webhook_attempts, created_at LIMIT ?",
                    [limit],
                )
            ]
        delivered = 0
        for notification_id in ids:
            record = self._claim(notification_id)
            if record is None:
                continue
            if not self._post(url, record):
                break
            delivered += 1
        return delivered

    def undelivered_webhooks(self, limit: int = 20) -> list[UndeliveredWebhook]:
        """The notifications the webhook still owes, oldest first."""
        _check_limit(limit)
        if not Path(self.path).exists():
            return []
        with closing(self._connect()) as connection:
            rows = connection.execute(
                "SELECT id, dedup_key, webhook_attempts, webhook_error FROM notifications "
                "WHERE webhook_status = 'undelivered' ORDER BY created_at, rowid LIMIT ?",
                [limit],
            ).fetchall()
        return [UndeliveredWebhook(r[0], r[1], int(r[2]), r[3]) for r in rows]

    def _claim_deadline(self) -> float:
        return time.time() + self.webhook_timeout_s + 1.0

    def _claim(self, notification_id: str) -> NotificationRecord | None:
        """The row, held for this sender; None when delivered or held meanwhile."""
        with closing(self._connect()) as connection, connection:
            claimed = connection.execute(
                "UPDATE notifications SET webhook_claimed_until = ? WHERE id = ? AND "
                "webhook_status = 'undelivered' AND "
                "(webhook_claimed_until IS NULL OR webhook_claimed_until < ?)",
                [self._claim_deadline(), notification_id, time.time()],
            ).rowcount
            row = connection.execute(
                "SELECT * FROM notifications WHERE id = ?", [notification_id]
            ).fetchone()
        return _record(row) if claimed else None

    def _post(self, url: str, record: NotificationRecord) -> bool:
        """POST `record` to the webhook at `url` and keep the outcome on its row; True when
        delivered."""
        error = post_json(url, webhook_payload(record), self.webhook_timeout_s)
        if error is not None:
            logger.warning(
                "webhook %s did not take notification %s (%s): %s; kept for redelivery",
                webhook_host(url),
                record.id,
                record.notification.dedup_key,
                error,
            )
        with closing(self._connect()) as connection, connection:
            connection.execute(
                "UPDATE notifications SET webhook_attempts = webhook_attempts + 1, "
                "webhook_claimed_until = NULL, webhook_status = ?, webhook_error = ?, "
                "webhook_delivered_at = ? WHERE id = ?",
                [
                    "undelivered" if error else "delivered",
                    error,
                    None if error else timestamp_text(datetime.now(UTC)),
                    record.id,
                ],
            )
        return error is None

    def recent(self, limit: int = 20, since: datetime | None = None) -> list[NotificationRecord]:
        _check_limit(limit)
        if not Path(self.path).exists():
            return []
        where, params = ("WHERE created_at >= ?", [timestamp_text(since)]) if since else ("", [])
        query = f"SELECT * FROM notifications {where} ORDER BY created_at DESC, rowid DESC LIMIT ?"
        with closing(self._connect()) as connection:
            rows = connection.execute(query, [*params, limit]).fetchall()
        return [_record(row) for row in rows]

    def describe(self) -> str:
        webhook = f", webhook to {webhook_host(self.webhook_url)}" if self.webhook_url else ""
        return f"outbox at {self.path}{webhook}"


def _add_webhook_columns(connection: sqlite3.Connection) -> None:
    """Bring an outbox file from before the webhook up to date (ALTER TABLE when missing)."""
    present = {row[1] for row in connection.execute("PRAGMA table_info(notifications)")}
    for name, declaration in _WEBHOOK_COLUMNS.items():
        if name in present:
            continue
        try:
            connection.execute(f"ALTER TABLE notifications ADD COLUMN {name} {declaration}")
        except sqlite3.OperationalError as error:
            if "duplicate column" not in str(error):  # else another process added it first
                raise


def webhook_payload(record: NotificationRecord) -> dict[str, Any]:
    """The JSON body POSTed for `record`."""
    n = record.notification
    return {
        "id": record.id,
        "subject": n.subject,
        "body": n.body,
        "severity": n.severity,
        "source": n.source,
        "dedup_key": n.dedup_key,
        "attributes": dict(n.attributes),
        "created_at": timestamp_text(record.created_at),
    }


def _record(row: sqlite3.Row) -> NotificationRecord:
    notification = Notification(
        subject=row["subject"],
        body=row["body"],
        severity=row["severity"],
        source=row["source"],
        dedup_key=row["dedup_key"],
        attributes=json.loads(row["attributes"]),
    )
    return NotificationRecord(row["id"], parse_timestamp(row["created_at"]), notification)


class SnsNotifier(Notifier):
    """An SNS topic; credentials from the default AWS chain. Subscriptions can filter on the
    message attributes (severity, source, dedup_key and the notification's own)."""

    topic_arn: str
    region: str
    endpoint_url: str | None = None

    def _client(self) -> Any:
        import boto3

        return boto3.client("sns", region_name=self.region, endpoint_url=self.endpoint_url)

    @property
    def fifo(self) -> bool:
        return self.topic_arn.endswith(".fifo")

    def publish_request(self, notification: Notification) -> dict[str, Any]:
        """The Publish arguments for `notification`."""
        request: dict[str, Any] = {
            "TopicArn": self.topic_arn,
            "Subject": sns_subject(notification.subject),
            "Message": notification.body,
            "MessageAttributes": {
                name: {"DataType": "String", "StringValue": value}
                for name, value in notification.message_attributes().items()
            },
        }
        if self.fifo:
            request["MessageDeduplicationId"] = sns_token(notification.dedup_key)
            # One group per source: a source's notifications stay in order without one source
            # holding up another's.
            request["MessageGroupId"] = sns_token(notification.source)
        return request

    def notify(self, notification: Notification) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client().publish(**self.publish_request(notification))
        except ClientError as error:
            details = error.response.get("Error", {})
            raise NotificationError(
                f"SNS refused the notification for topic {self.topic_arn}: "
                f"{details.get('Code', 'error')}: {details.get('Message', error)}"
            ) from error
        except BotoCoreError as error:
            raise NotificationError(f"SNS topic {self.topic_arn} unreachable: {error}") from error
        return str(response["MessageId"])

    def recent(self, limit: int = 20, since: datetime | None = None) -> list[NotificationRecord]:
        raise NotificationError(
            f"SNS does not keep what it published, so notifications cannot be listed in AWS: "
            f"read them from a subscription of {self.topic_arn} (a queue or an e-mail address)"
        )

    def describe(self) -> str:
        return f"SNS topic {self.topic_arn} ({self.region})"


def sns_subject(subject: str) -> str:
    """`subject` as SNS accepts it: one line, whitespace runs made single spaces, at most 100
    characters (cut with '...')."""
    line = " ".join("".join(c if c.isprintable() else " " for c in subject).split())
    if len(line) <= SNS_SUBJECT_MAX_CHARS:
        return line
    return line[: SNS_SUBJECT_MAX_CHARS - 3] + "..."


def sns_token(key: str) -> str:
    """`key` as a MessageDeduplicationId or MessageGroupId: itself when SNS accepts it, else
    its SHA-256 (the same key always gives the same token)."""
    if _SNS_TOKEN.fullmatch(key):
        return key
    return hashlib.sha256(key.encode()).hexdigest()
