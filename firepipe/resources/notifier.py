"""The notifier port: where run failures (and, later, the response agent's alerts) are sent. An
SNS topic in AWS; locally a durable outbox, a SQLite file under FIREPIPE_HOME that
`firepipe notifications list` reads.

Both are idempotent on the notification's dedup key, each as far as its system allows: the
outbox keeps one row per key for good; a FIFO topic (its name ends in `.fifo`) drops a repeat
within SNS's 5-minute deduplication interval; a standard topic delivers every publish, and its
subscribers see the key in the `dedup_key` message attribute.
"""

import hashlib
import json
import re
import sqlite3
import uuid
from abc import ABC, abstractmethod
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from firepipe.core.history import parse_timestamp, timestamp_text
from firepipe.core.notifications import Notification, NotificationError, NotificationRecord
from firepipe.lib import sqlite_state

# SNS: a subject under 100 characters with no line breaks or control characters (moto and SNS
# both accept exactly 100, see getmoto/moto#1503); MessageDeduplicationId and MessageGroupId
# up to 128 printable ASCII characters.
SNS_SUBJECT_MAX_CHARS = 100
_SNS_TOKEN = re.compile(r"[!-~]{1,128}")


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


class LocalNotifier(Notifier):
    """A durable outbox: a SQLite file under FIREPIPE_HOME, one row per dedup key."""

    path: str = Field(description="the SQLite outbox file; created on first notification")

    def _connect(self) -> sqlite3.Connection:
        return sqlite_state.connect(
            self.path,
            "CREATE TABLE IF NOT EXISTS notifications (id TEXT PRIMARY KEY, "
            "dedup_key TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL, severity TEXT NOT NULL, "
            "source TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL, "
            "attributes TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS notifications_by_time ON notifications (created_at)",
        )

    def notify(self, notification: Notification) -> str:
        n = notification
        row = [
            uuid.uuid4().hex,
            n.dedup_key,
            timestamp_text(datetime.now(UTC)),
            n.severity,
            n.source,
            n.subject,
            n.body,
            json.dumps(dict(n.attributes), sort_keys=True),
        ]
        # One transaction: a second process notifying the same key at once finds the first row.
        with closing(self._connect()) as connection, connection:
            connection.execute(
                "INSERT INTO notifications (id, dedup_key, created_at, severity, source, "
                "subject, body, attributes) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (dedup_key) DO NOTHING",
                row,
            )
            (kept,) = connection.execute(
                "SELECT id FROM notifications WHERE dedup_key = ?", [n.dedup_key]
            ).fetchone()
        return str(kept)

    def recent(self, limit: int = 20, since: datetime | None = None) -> list[NotificationRecord]:
        _check_limit(limit)
        if not Path(self.path).exists():
            return []
        where, params = ("WHERE created_at >= ?", [timestamp_text(since)]) if since else ("", [])
        query = f"SELECT * FROM notifications {where} ORDER BY created_at DESC, rowid DESC LIMIT ?"
        with closing(self._connect()) as connection:
            connection.row_factory = sqlite3.Row
            rows = connection.execute(query, [*params, limit]).fetchall()
        return [_record(row) for row in rows]

    def describe(self) -> str:
        return f"outbox at {self.path}"


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
