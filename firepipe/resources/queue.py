"""The queue port: the agents' named queues (readings, scores, alarms), each with a dead-letter
queue. SQS in AWS; locally a durable SQLite file under FIREPIPE_HOME (firepipe.lib.sqlite_queue).

One resource serves every queue of the deployment, so a worker that reads one queue and writes
another holds one resource; methods take the queue's short name ("readings"). SQS names it
`<prefix><name>` and its dead-letter queue `<prefix><name>-dlq` (FIFO: both end in .fifo); the
CDK app creates them.

Semantics both keep (the contract suite checks them on both):
- At-least-once, no order promised. A received message is invisible for its visibility
  timeout, then reappears unless deleted; each receive counts and issues a new receipt.
- Message groups, as SQS FIFO: messages with the same `message_group` attribute are received
  in send order, and while one of them is in flight (received, neither deleted, dead-lettered
  nor past its visibility timeout) no other message of its group is handed out, so a message
  that comes back after a crash comes back before the later ones of its group. One receive
  may return several messages of a group, in order. The local queue applies this to any
  message with the attribute; in AWS it takes a FIFO queue (`SqsQueue.fifo`), where every
  message needs the attribute, and a standard queue only carries it.
- Only the latest receipt is sure to delete a message: locally an older one deletes nothing;
  SQS says it "might not" (moto deletes with any receipt the message had).
- A message received `max_receives` times without being deleted goes to the dead-letter queue
  on the next receive (SQS: the redrive policy's maxReceiveCount), with the reason
  "received N times without being deleted"; `dead_letter` sends it there at once with the
  consumer's reason; `redrive` moves every dead letter back with a fresh receive count.
"""

import json
import re
import sqlite3
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import dagster as dg
from pydantic import Field

from firepipe.lib import sqlite_queue

# The SQS limits that both implementations keep, so a message the local queue accepts also
# goes through SQS (and through SNS, whose payload limit is also 256 KiB).
MAX_BATCH = 10
MAX_WAIT_S = 20
MAX_VISIBILITY_TIMEOUT_S = 43_200
MAX_PAYLOAD_BYTES = 256 * 1024
# SQS allows 10 attributes; one is kept for the dead-letter reason.
MAX_ATTRIBUTES = 9
REASON_ATTRIBUTE = "dead_letter_reason"
# The reserved attribute naming a message's group (SQS FIFO's MessageGroupId).
MESSAGE_GROUP = "message_group"
DLQ_SUFFIX = "-dlq"
FIFO_SUFFIX = ".fifo"
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,60}")
_ATTRIBUTE_NAME = re.compile(r"(?!\.)(?!.*\.\.)(?!(?i:aws\.|amazon\.))[A-Za-z0-9_.-]{1,256}(?<!\.)")
# What SQS and SNS accept as a MessageGroupId: 1-128 ASCII letters, digits and punctuation.
_GROUP_ID = re.compile(r"[!-~]{1,128}")
# The characters SQS accepts in a body or attribute value.
_SQS_TEXT = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")


class QueueError(RuntimeError):
    """The queue system refused or could not do what was asked."""


class ReceiptError(QueueError):
    """The receipt no longer holds its message: it was deleted, or received again since."""


@dataclass(frozen=True)
class Message:
    """A received message; `receipt` (this receive's) deletes it or changes its visibility."""

    id: str
    body: str
    attributes: Mapping[str, str]
    receipt: str
    receive_count: int
    sent_at: datetime


@dataclass(frozen=True)
class DeadLetter:
    """A message in a dead-letter queue and why it is there."""

    id: str
    body: str
    attributes: Mapping[str, str]
    reason: str
    sent_at: datetime


@dataclass(frozen=True)
class QueueDepth:
    """Approximate message counts (SQS's are estimates)."""

    visible: int
    in_flight: int
    dead: int


OutgoingMessage = tuple[str, Mapping[str, str]]


def check_queue_name(name: str) -> str:
    if not _QUEUE_NAME.fullmatch(name) or name.endswith(DLQ_SUFFIX):
        raise ValueError(
            f"queue name {name!r}: 1-60 letters, digits, '-' or '_', not ending in {DLQ_SUFFIX!r}"
        )
    return name


def check_message(body: str, attributes: Mapping[str, str]) -> None:
    """Raise ValueError for a message SQS or SNS would refuse."""
    if not body:
        raise ValueError("a message body must not be empty")
    if len(attributes) > MAX_ATTRIBUTES:
        raise ValueError(f"at most {MAX_ATTRIBUTES} attributes, got {len(attributes)}")
    size = len(body.encode())
    for name, value in attributes.items():
        if not _ATTRIBUTE_NAME.fullmatch(name) or name == REASON_ATTRIBUTE:
            raise ValueError(f"attribute name {name!r} is not allowed")
        if not isinstance(value, str) or not value:
            raise ValueError(f"attribute {name!r} must be a non-empty string, got {value!r}")
        size += len(name.encode()) + len(value.encode())
    group = attributes.get(MESSAGE_GROUP)
    if group is not None and not _GROUP_ID.fullmatch(group):
        raise ValueError(
            f"{MESSAGE_GROUP} {group!r}: 1-128 ASCII letters, digits or punctuation (no spaces)"
        )
    if not all(_SQS_TEXT.fullmatch(text) for text in (body, *attributes.values())):
        raise ValueError("the message holds characters SQS does not accept")
    if size > MAX_PAYLOAD_BYTES:
        raise ValueError(f"message of {size} bytes exceeds {MAX_PAYLOAD_BYTES}")


def _check_receive(max_messages: int, wait_s: int, visibility_timeout_s: int) -> None:
    if not 1 <= max_messages <= MAX_BATCH:
        raise ValueError(f"max_messages must be 1-{MAX_BATCH}, got {max_messages}")
    if not 0 <= wait_s <= MAX_WAIT_S:
        raise ValueError(f"wait_s must be 0-{MAX_WAIT_S}, got {wait_s}")
    _check_visibility(visibility_timeout_s)


def _check_visibility(timeout_s: int) -> None:
    if not 0 <= timeout_s <= MAX_VISIBILITY_TIMEOUT_S:
        raise ValueError(f"visibility timeout must be 0-{MAX_VISIBILITY_TIMEOUT_S} s")


def exhausted_reason(receives: int) -> str:
    return f"received {receives} times without being deleted"


class MessageQueue(dg.ConfigurableResource, ABC):
    """The deployment's named queues, each with its dead-letter queue."""

    max_receives: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="receives before a message is dead-lettered, set when ensure_queue "
        "creates a queue (in AWS the CDK app's redrive policy decides)",
    )

    def send(self, queue: str, body: str, attributes: Mapping[str, str] | None = None) -> str:
        """Enqueue one message; returns its id."""
        return self.send_batch(queue, [(body, attributes or {})])[0]

    def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Enqueue `messages` (body, attributes), any number; returns their ids in order."""
        check_queue_name(queue)
        for body, attributes in messages:
            check_message(body, attributes)
        return self._send_batch(queue, messages) if messages else []

    def receive(
        self, queue: str, max_messages: int = 10, wait_s: int = 0, visibility_timeout_s: int = 30
    ) -> list[Message]:
        """Up to `max_messages` visible messages, each hidden for `visibility_timeout_s`;
        waits up to `wait_s` for the first to arrive."""
        check_queue_name(queue)
        _check_receive(max_messages, wait_s, visibility_timeout_s)
        return self._receive(queue, max_messages, wait_s, visibility_timeout_s)

    @abstractmethod
    def ensure_queue(self, queue: str) -> None:
        """Create `queue` and its dead-letter queue if missing (tests and local use; in AWS the
        CDK app owns them)."""

    @abstractmethod
    def _send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]: ...

    @abstractmethod
    def _receive(
        self, queue: str, max_messages: int, wait_s: int, visibility_timeout_s: int
    ) -> list[Message]: ...

    @abstractmethod
    def delete(self, queue: str, receipt: str) -> None:
        """Remove the message `receipt` holds; deleting twice is no error."""

    @abstractmethod
    def delete_batch(self, queue: str, receipts: Sequence[str]) -> None:
        """`delete` for each of `receipts`."""

    @abstractmethod
    def change_visibility(self, queue: str, receipt: str, timeout_s: int) -> None:
        """Hide the message for `timeout_s` from now (0: visible at once); ReceiptError when
        the receipt no longer holds it."""

    @abstractmethod
    def dead_letter(self, queue: str, message: Message, reason: str) -> None:
        """Give up on `message`: it leaves `queue` for the dead-letter queue with `reason`.
        Locally a receipt replaced by a later receive raises ReceiptError; SQS cannot tell, so
        the dead letter is sent and the stale delete may leave the message queued too."""

    @abstractmethod
    def dead_letters(self, queue: str, max_messages: int = 10) -> list[DeadLetter]:
        """A look at up to `max_messages` of `queue`'s dead letters; they stay there."""

    @abstractmethod
    def redrive(self, queue: str) -> int:
        """Move every dead letter of `queue` back to it; returns how many moved."""

    @abstractmethod
    def depth(self, queue: str) -> QueueDepth: ...


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


_GROUP_OF = f"json_extract(attributes, '$.{MESSAGE_GROUP}')"
# The oldest visible messages, less those whose group has a message in flight (not dead,
# hidden until later); no group reads as '', which no group is. The in-flight groups are an
# uncorrelated subquery, evaluated once per claim from the few in-flight rows the (queue, dead,
# visible_at) index finds. A free group has no message in flight, so all its messages are
# visible and its share of the LIMIT is its oldest. Measured against the claim without groups,
# one receive of 1 plus its delete, 500 (3,000) visible messages: 0.36 (1.7) ms, was 0.20 (0.69).
# ?1: hidden until, ?2: queue, ?3: now, ?4: how many.
_CLAIM = (
    "UPDATE queue_messages SET receive_count = receive_count + 1, visible_at = ?1, "
    "receipt = lower(hex(randomblob(16))) WHERE seq IN (SELECT seq FROM queue_messages "
    f"WHERE queue = ?2 AND dead = 0 AND visible_at <= ?3 AND ifnull({_GROUP_OF}, '') NOT IN "
    f"(SELECT {_GROUP_OF} FROM queue_messages WHERE queue = ?2 AND dead = 0 AND visible_at > ?3 "
    f"AND {_GROUP_OF} IS NOT NULL) ORDER BY seq LIMIT ?4) "
    "RETURNING seq, id, attributes, receipt, receive_count, sent_at"
)
# Whether a receive has anything to claim (visible, or due for the dead-letter queue): read
# without the write lock, so an idle worker's polls do not queue behind the busy ones.
_ANY_VISIBLE = (
    "SELECT EXISTS (SELECT 1 FROM queue_messages WHERE queue = ? AND dead = 0 AND visible_at <= ?)"
)
# An empty queue is polled this often: no wake-up crosses processes. A poll of an empty queue is
# a read (_ANY_VISIBLE, about 20 us), so it can be short: it bounds what each of the agents'
# three queues adds to an alarm's latency.
_POLL_S = 0.01


class LocalQueue(MessageQueue):
    """Durable queues in one SQLite file, shared by the worker processes of one home."""

    path: str = Field(description="the SQLite file; created on first use")

    def ensure_queue(self, queue: str) -> None:
        check_queue_name(queue)
        with sqlite_queue.write(self.path) as db:
            db.execute(
                "INSERT INTO queues (name, max_receives) VALUES (?, ?) ON CONFLICT DO NOTHING",
                [queue, self.max_receives],
            )

    def _known(self, db: sqlite3.Connection, queue: str) -> int:
        try:
            return sqlite_queue.max_receives(db, queue)
        except KeyError:
            raise QueueError(f"no queue {queue!r} in {self.path}: ensure_queue first") from None

    def _send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        with sqlite_queue.write(self.path) as db:
            self._known(db, queue)
            return [sqlite_queue.insert(db, queue, body, attrs) for body, attrs in messages]

    def _receive(
        self, queue: str, max_messages: int, wait_s: int, visibility_timeout_s: int
    ) -> list[Message]:
        deadline = time.monotonic() + wait_s
        while True:
            messages = self._claim(queue, max_messages, visibility_timeout_s)
            if messages or time.monotonic() >= deadline:
                return messages
            time.sleep(_POLL_S)

    def _claim(self, queue: str, max_messages: int, visibility_timeout_s: int) -> list[Message]:
        reader = sqlite_queue.connection(self.path)
        self._known(reader, queue)
        if not reader.execute(_ANY_VISIBLE, [queue, time.time()]).fetchone()[0]:
            return []
        with sqlite_queue.write(self.path) as db:
            limit = self._known(db, queue)
            now = time.time()
            # As SQS: a message past its limit is dead-lettered by the receive that finds it.
            db.execute(
                "UPDATE queue_messages SET dead = 1, receipt = NULL, reason = ? WHERE queue = ? "
                "AND dead = 0 AND visible_at <= ? AND receive_count >= ?",
                [exhausted_reason(limit), queue, now, limit],
            )
            rows = db.execute(_CLAIM, [now + visibility_timeout_s, queue, now, max_messages])
            # RETURNING promises no order: sorted back into send order for the groups.
            claimed = sorted(rows.fetchall())
            seqs = [row[0] for row in claimed]
            bodies = dict(
                db.execute(
                    "SELECT seq, body FROM queue_bodies WHERE seq IN "
                    f"({','.join('?' * len(seqs))})",
                    seqs,
                ).fetchall()
            )
        return [
            Message(id_, bodies[seq], json.loads(attrs), receipt, count, _utc(sent))
            for seq, id_, attrs, receipt, count, sent in claimed
        ]

    def delete(self, queue: str, receipt: str) -> None:
        self.delete_batch(queue, [receipt])

    def delete_batch(self, queue: str, receipts: Sequence[str]) -> None:
        with sqlite_queue.write(self.path) as db:
            db.executemany(
                "DELETE FROM queue_messages WHERE queue = ? AND receipt = ?",
                [(queue, receipt) for receipt in receipts],
            )

    def change_visibility(self, queue: str, receipt: str, timeout_s: int) -> None:
        _check_visibility(timeout_s)
        with sqlite_queue.write(self.path) as db:
            changed = db.execute(
                "UPDATE queue_messages SET visible_at = ? WHERE queue = ? AND receipt = ?",
                [time.time() + timeout_s, queue, receipt],
            ).rowcount
        if not changed:
            raise ReceiptError(f"receipt {receipt!r} holds no message of queue {queue!r}")

    def dead_letter(self, queue: str, message: Message, reason: str) -> None:
        if not reason:
            raise ValueError("a dead letter needs a reason")
        with sqlite_queue.write(self.path) as db:
            moved = db.execute(
                "UPDATE queue_messages SET dead = 1, receipt = NULL, reason = ? "
                "WHERE queue = ? AND receipt = ?",
                [reason, queue, message.receipt],
            ).rowcount
        if not moved:
            raise ReceiptError(f"message {message.id} is no longer held by its receipt")

    def dead_letters(self, queue: str, max_messages: int = 10) -> list[DeadLetter]:
        _check_receive(max_messages, 0, 0)
        db = sqlite_queue.connection(self.path)  # a read: no write lock
        self._known(db, queue)
        rows = db.execute(
            "SELECT id, body, attributes, reason, sent_at FROM queue_messages "
            "JOIN queue_bodies USING (seq) WHERE queue = ? AND dead = 1 ORDER BY seq LIMIT ?",
            [queue, max_messages],
        ).fetchall()
        return [
            DeadLetter(id_, body, json.loads(attrs), reason, _utc(sent))
            for id_, body, attrs, reason, sent in rows
        ]

    def redrive(self, queue: str) -> int:
        with sqlite_queue.write(self.path) as db:
            self._known(db, queue)
            return int(
                db.execute(
                    "UPDATE queue_messages SET dead = 0, reason = NULL, receive_count = 0, "
                    "visible_at = ? WHERE queue = ? AND dead = 1",
                    [time.time(), queue],
                ).rowcount
            )

    def depth(self, queue: str) -> QueueDepth:
        # A read, in WAL beside the writers: a bench or `agents status` polling the depth every
        # few ms does not take the write lock the workers wait for.
        db = sqlite_queue.connection(self.path)
        self._known(db, queue)
        visible, in_flight, dead = db.execute(
            "SELECT coalesce(sum(dead = 0 AND visible_at <= ?1), 0), "
            "coalesce(sum(dead = 0 AND visible_at > ?1), 0), coalesce(sum(dead), 0) "
            "FROM queue_messages WHERE queue = ?2",
            [time.time(), queue],
        ).fetchone()
        return QueueDepth(visible, in_flight, dead)


class SqsQueue(MessageQueue):
    """SQS queues `<prefix><name>` with dead-letter queues `<prefix><name>-dlq` (FIFO:
    `<prefix><name>.fifo`, `<prefix><name>-dlq.fifo`); credentials from the default AWS chain."""

    prefix: str = Field(description="prepended to each queue's name, e.g. 'firepipe-'")
    region: str
    endpoint_url: str | None = None
    fifo: bool = Field(
        default=False,
        description="FIFO queues: the message_group attribute is each message's "
        "MessageGroupId, and every message needs one",
    )

    @cached_property
    def _sqs(self) -> Any:
        import boto3

        return boto3.client("sqs", region_name=self.region, endpoint_url=self.endpoint_url)

    @cached_property
    def _urls(self) -> dict[str, str]:
        return {}

    def _url(self, name: str) -> str:
        """The URL of the SQS queue `name` (full name), looked up once."""
        if name not in self._urls:
            try:
                self._urls[name] = self._sqs.get_queue_url(QueueName=name)["QueueUrl"]
            except self._sqs.exceptions.QueueDoesNotExist:
                raise QueueError(f"no SQS queue {name!r} in {self.region}") from None
        return self._urls[name]

    def _name(self, queue: str, suffix: str = "") -> str:
        return self.prefix + check_queue_name(queue) + suffix + (FIFO_SUFFIX if self.fifo else "")

    def _queue_url(self, queue: str) -> str:
        return self._url(self._name(queue))

    def _dlq_url(self, queue: str) -> str:
        return self._url(self._name(queue, DLQ_SUFFIX))

    def ensure_queue(self, queue: str) -> None:
        # A FIFO queue's dead-letter queue must be FIFO too. Deduplication ids are ours (see
        # fifo_fields), not a hash of the body that SQS would compute.
        kind = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if self.fifo else {}
        dlq = self._sqs.create_queue(QueueName=self._name(queue, DLQ_SUFFIX), Attributes=kind)
        redrive = {
            "deadLetterTargetArn": self._arn(dlq["QueueUrl"]),
            "maxReceiveCount": self.max_receives,
        }
        self._sqs.create_queue(
            QueueName=self._name(queue), Attributes={**kind, "RedrivePolicy": json.dumps(redrive)}
        )

    def _arn(self, url: str) -> str:
        attributes = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attributes["Attributes"]["QueueArn"])

    def allow_publisher(self, queue: str, topic_arn: str) -> str:
        """Let the SNS topic `topic_arn` send to `queue` and return the queue's ARN: for tests
        and dev accounts (it replaces the queue's policy); in AWS the CDK app grants it."""
        url = self._queue_url(queue)
        arn = self._arn(url)
        statement = {
            "Effect": "Allow",
            "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
        }
        policy = {"Version": "2012-10-17", "Statement": [statement]}
        self._sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
        return arn

    def _fifo(self, attributes: Mapping[str, str]) -> dict[str, str]:
        return fifo_fields(attributes, "SQS FIFO queues") if self.fifo else {}

    def _send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        url = self._queue_url(queue)
        fifo = [self._fifo(attrs) for _, attrs in messages]  # refused before any is sent
        ids: list[str] = []
        sent = 0
        # One SendMessageBatch per 10 messages or 256 KiB, whichever comes first; a FIFO
        # queue keeps the order of the entries within and across batches.
        for chunk in _chunks(messages):
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": body,
                    "MessageAttributes": _sqs_attributes(attrs),
                    **fifo[sent + i],
                }
                for i, (body, attrs) in enumerate(chunk)
            ]
            sent += len(chunk)
            response = self._sqs.send_message_batch(QueueUrl=url, Entries=entries)
            _raise_failed(response, f"sending to {queue!r}")
            by_entry = {item["Id"]: item["MessageId"] for item in response["Successful"]}
            ids.extend(by_entry[str(i)] for i in range(len(chunk)))
        return ids

    def _receive(
        self, queue: str, max_messages: int, wait_s: int, visibility_timeout_s: int
    ) -> list[Message]:
        response = self._sqs.receive_message(
            QueueUrl=self._queue_url(queue),
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_s,
            VisibilityTimeout=visibility_timeout_s,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            MessageAttributeNames=["All"],
        )
        return [_message(m) for m in response.get("Messages", [])]

    def delete(self, queue: str, receipt: str) -> None:
        self.delete_batch(queue, [receipt])

    def delete_batch(self, queue: str, receipts: Sequence[str]) -> None:
        url = self._queue_url(queue)
        for start in range(0, len(receipts), MAX_BATCH):
            chunk = receipts[start : start + MAX_BATCH]
            entries = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(chunk)]
            response = self._sqs.delete_message_batch(QueueUrl=url, Entries=entries)
            _raise_failed(response, f"deleting from {queue!r}")

    def change_visibility(self, queue: str, receipt: str, timeout_s: int) -> None:
        from botocore.exceptions import ClientError

        _check_visibility(timeout_s)
        try:
            self._sqs.change_message_visibility(
                QueueUrl=self._queue_url(queue), ReceiptHandle=receipt, VisibilityTimeout=timeout_s
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            # SQS answers a receipt whose message is gone with one of these.
            if code in {"ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidParameterValue"}:
                raise ReceiptError(f"{queue!r}: {error}") from error
            raise

    def dead_letter(self, queue: str, message: Message, reason: str) -> None:
        if not reason:
            raise ValueError("a dead letter needs a reason")
        # Sent first, deleted second: a crash between the two leaves a copy, never a loss.
        attributes = {**message.attributes, REASON_ATTRIBUTE: reason}
        self._sqs.send_message(
            QueueUrl=self._dlq_url(queue),
            MessageBody=message.body,
            MessageAttributes=_sqs_attributes(attributes),
            **self._fifo(message.attributes),
        )
        self.delete(queue, message.receipt)

    def _max_receive_count(self, queue: str) -> int:
        response = self._sqs.get_queue_attributes(
            QueueUrl=self._queue_url(queue), AttributeNames=["RedrivePolicy"]
        )
        policy = response.get("Attributes", {}).get("RedrivePolicy")
        if policy is None:
            raise QueueError(f"SQS queue {self.prefix}{queue} has no dead-letter queue")
        return int(json.loads(policy)["maxReceiveCount"])

    def _dead_received(self, queue: str, max_messages: int, hide_s: int) -> list[Message]:
        # A long poll, though brief: a short one samples a few SQS servers and may miss some.
        response = self._sqs.receive_message(
            QueueUrl=self._dlq_url(queue),
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=1,
            VisibilityTimeout=hide_s,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            MessageAttributeNames=["All"],
        )
        return [_message(m) for m in response.get("Messages", [])]

    def dead_letters(self, queue: str, max_messages: int = 10) -> list[DeadLetter]:
        _check_receive(max_messages, 0, 0)
        # The redrive policy moves a message without a reason: it was received too often.
        exhausted = exhausted_reason(self._max_receive_count(queue))
        letters = []
        for m in self._dead_received(queue, max_messages, hide_s=0):
            attributes = dict(m.attributes)
            reason = attributes.pop(REASON_ATTRIBUTE, exhausted)
            letters.append(DeadLetter(m.id, m.body, attributes, reason, m.sent_at))
        return letters

    def redrive(self, queue: str) -> int:
        moved = 0
        # Each batch is hidden while it is copied, so the loop ends when the DLQ is empty.
        while batch := self._dead_received(queue, MAX_BATCH, hide_s=60):
            originals = [
                (m.body, {k: v for k, v in m.attributes.items() if k != REASON_ATTRIBUTE})
                for m in batch
            ]
            self._send_batch(queue, originals)
            dlq = self._dlq_url(queue)
            entries = [{"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(batch)]
            _raise_failed(self._sqs.delete_message_batch(QueueUrl=dlq, Entries=entries), "redrive")
            moved += len(batch)
        return moved

    def depth(self, queue: str) -> QueueDepth:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        source = self._sqs.get_queue_attributes(
            QueueUrl=self._queue_url(queue), AttributeNames=names
        )["Attributes"]
        dlq = self._sqs.get_queue_attributes(QueueUrl=self._dlq_url(queue), AttributeNames=names)
        return QueueDepth(
            visible=int(source[names[0]]),
            in_flight=int(source[names[1]]),
            dead=sum(int(dlq["Attributes"][name]) for name in names),
        )


def fifo_fields(attributes: Mapping[str, str], where: str) -> dict[str, str]:
    """The MessageGroupId (the message_group attribute, which still travels as an attribute
    for the consumers) and MessageDeduplicationId of a send to SQS or SNS FIFO `where`.

    The deduplication id is a fresh uuid, not a hash of the message: SQS drops a send whose id
    it saw in the last 5 minutes, so a hash would silently lose a message redriven, or dead-
    lettered again, within 5 minutes of its first send. botocore's own retries resend the same
    request, id included, so they are still deduplicated; a duplicate a caller sends itself is
    the consumers' to absorb, as every redelivery is (they are idempotent).
    """
    group = attributes.get(MESSAGE_GROUP)
    if group is None:
        raise ValueError(f"{where} need a {MESSAGE_GROUP!r} attribute on every message")
    return {"MessageGroupId": group, "MessageDeduplicationId": str(uuid.uuid4())}


def _chunks(messages: Sequence[OutgoingMessage]) -> list[list[OutgoingMessage]]:
    chunks: list[list[OutgoingMessage]] = []
    size = 0
    for body, attrs in messages:
        message_size = len(body.encode()) + sum(len(k) + len(v.encode()) for k, v in attrs.items())
        if not chunks or len(chunks[-1]) == MAX_BATCH or size + message_size > MAX_PAYLOAD_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append((body, attrs))
        size += message_size
    return chunks


def _sqs_attributes(attributes: Mapping[str, str]) -> dict[str, dict[str, str]]:
    return {k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()}


def _message(m: Mapping[str, Any]) -> Message:
    """A ReceiveMessage result entry as a Message."""
    return Message(
        id=m["MessageId"],
        body=m["Body"],
        attributes=_plain_attributes(m),
        receipt=m["ReceiptHandle"],
        receive_count=int(m["Attributes"]["ApproximateReceiveCount"]),
        sent_at=_utc(int(m["Attributes"]["SentTimestamp"]) / 1000),
    )


def _plain_attributes(message: Mapping[str, Any]) -> dict[str, str]:
    attributes = message.get("MessageAttributes", {})
    return {k: v["StringValue"] for k, v in attributes.items() if "StringValue" in v}


def _raise_failed(response: Mapping[str, Any], doing: str) -> None:
    failed = response.get("Failed", [])
    if failed:
        reasons = "; ".join(f"{f.get('Code')}: {f.get('Message')}" for f in failed)
        raise QueueError(f"SQS failed {len(failed)} entries {doing}: {reasons}")
