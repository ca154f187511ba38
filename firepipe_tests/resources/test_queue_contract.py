"""The queue contract, run against both implementations: the SQLite queue on a temporary file and
SQS on moto. No order is promised, so no test asserts one, except within a message group, whose
cases run on the SQLite queue and a FIFO SQS queue on moto (moto keeps FIFO groups as SQS does:
send order, a group held while one of its messages is in flight, several of a group in one
receive). Then what only the local queue can show: a receipt replaced by a later receive deletes
nothing, concurrent processes never share a message, messages outlive the connection that sent
them, and messages without a group are never held by a group."""

import json
import multiprocessing
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from firepipe.resources import resource_for
from firepipe.resources.queue import (
    MESSAGE_GROUP,
    LocalQueue,
    Message,
    MessageQueue,
    QueueDepth,
    QueueError,
    ReceiptError,
    SqsQueue,
)
from firepipe.settings import Environment, LocalPaths
from firepipe_tests.resources.conftest import REGION

MAX_RECEIVES = 3


def _work_queue(
    request: pytest.FixtureRequest, tmp_path: Path, *, fifo: bool
) -> Iterator[MessageQueue]:
    """The implementation `request.param` names with a queue "work" (and its dead-letter
    queue) ready: local (which keeps message groups either way) or SQS, FIFO when asked."""
    queue: MessageQueue
    if request.param == "local":
        queue = LocalQueue(path=str(tmp_path / "queues.db"), max_receives=MAX_RECEIVES)
        queue.ensure_queue("work")
        yield queue
        return
    from moto import mock_aws

    request.getfixturevalue("aws_credentials")
    with mock_aws():
        prefix = f"t{uuid.uuid4().hex[:8]}-"
        queue = SqsQueue(prefix=prefix, region=REGION, max_receives=MAX_RECEIVES, fifo=fifo)
        queue.ensure_queue("work")
        yield queue


@pytest.fixture(params=["local", pytest.param("sqs", marks=pytest.mark.aws)])
def queues(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MessageQueue]:
    """Both implementations with a queue "work" (and its dead-letter queue) ready."""
    yield from _work_queue(request, tmp_path, fifo=False)


@pytest.fixture(params=["local", pytest.param("sqs-fifo", marks=pytest.mark.aws)])
def grouped(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MessageQueue]:
    """A queue "work" that keeps message groups: the local one, or a FIFO SQS queue."""
    yield from _work_queue(request, tmp_path, fifo=True)


def in_group(group: str, *bodies: str) -> list[tuple[str, dict[str, str]]]:
    return [(body, {MESSAGE_GROUP: group}) for body in bodies]


def bodies_of(messages: list[Message]) -> list[str]:
    return [m.body for m in messages]


def receive_all(queues: MessageQueue) -> list[Message]:
    """Every visible message of "work", received in batches (not deleted)."""
    received: list[Message] = []
    while batch := queues.receive("work", max_messages=10, visibility_timeout_s=60):
        assert len(batch) <= 10
        received.extend(batch)
    return received


def test_a_message_is_received_with_its_fields_then_deleted(queues: MessageQueue) -> None:
    sent_id = queues.send("work", '{"device": "d-1"}', {"kind": "reading", "device": "d-1"})

    [message] = queues.receive("work", visibility_timeout_s=30)
    assert message.id == sent_id
    assert message.body == '{"device": "d-1"}'
    assert dict(message.attributes) == {"kind": "reading", "device": "d-1"}
    assert message.receive_count == 1
    assert abs(message.sent_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert queues.receive("work") == []  # invisible while in flight
    assert queues.depth("work") == QueueDepth(visible=0, in_flight=1, dead=0)

    queues.delete("work", message.receipt)
    queues.delete("work", message.receipt)  # twice is no error
    assert queues.depth("work") == QueueDepth(visible=0, in_flight=0, dead=0)


def test_an_undeleted_message_reappears_after_its_visibility_timeout(
    queues: MessageQueue,
) -> None:
    sent_id = queues.send("work", "slow consumer")
    [first] = queues.receive("work", visibility_timeout_s=1)
    assert queues.receive("work") == []
    time.sleep(1.3)  # moto keeps visibility timeouts in real time

    [again] = queues.receive("work", visibility_timeout_s=30)
    assert (again.id, again.receive_count) == (sent_id, 2)
    assert again.receipt != first.receipt
    queues.delete("work", again.receipt)
    assert queues.depth("work").visible + queues.depth("work").in_flight == 0


def test_change_visibility_releases_or_extends_a_message(queues: MessageQueue) -> None:
    queues.send("work", "retry me now")
    [first] = queues.receive("work", visibility_timeout_s=30)
    queues.change_visibility("work", first.receipt, 0)  # give it back at once

    [again] = queues.receive("work", visibility_timeout_s=30)
    assert again.receive_count == 2
    queues.change_visibility("work", again.receipt, 600)  # still working on it
    assert queues.receive("work") == []

    queues.delete("work", again.receipt)
    with pytest.raises(ReceiptError):
        queues.change_visibility("work", again.receipt, 0)


def test_batches_send_receive_and_delete_more_than_ten(queues: MessageQueue) -> None:
    sent = {f"reading {i}": {"seq": str(i)} for i in range(23)}
    ids = queues.send_batch("work", list(sent.items()))
    assert len(set(ids)) == 23

    received = receive_all(queues)
    assert sorted(m.id for m in received) == sorted(ids)
    assert {m.body: dict(m.attributes) for m in received} == sent

    queues.delete_batch("work", [m.receipt for m in received])
    assert queues.depth("work") == QueueDepth(visible=0, in_flight=0, dead=0)


def test_a_message_received_too_often_moves_to_the_dead_letter_queue(
    queues: MessageQueue,
) -> None:
    queues.send("work", "poison", {"device": "d-9"})
    counts = []
    for _ in range(MAX_RECEIVES):  # a consumer that crashes before deleting, every time
        [message] = queues.receive("work", visibility_timeout_s=0)
        counts.append(message.receive_count)
    assert counts == [1, 2, 3]

    assert queues.receive("work") == []  # this receive finds it exhausted and moves it
    [letter] = queues.dead_letters("work")
    assert (letter.body, dict(letter.attributes)) == ("poison", {"device": "d-9"})
    assert letter.reason == "received 3 times without being deleted"
    assert queues.depth("work") == QueueDepth(visible=0, in_flight=0, dead=1)

    assert queues.redrive("work") == 1
    [back] = queues.receive("work")
    assert (back.body, back.receive_count) == ("poison", 1)
    assert queues.depth("work").dead == 0


def test_dead_letter_keeps_the_consumers_reason_and_redrive_returns_it(
    queues: MessageQueue,
) -> None:
    queues.send_batch("work", [("not json", {"device": "d-1"}), ("fine", {})])
    received = {m.body: m for m in receive_all(queues)}
    queues.dead_letter("work", received["not json"], "body is not JSON")
    queues.delete("work", received["fine"].receipt)

    [letter] = queues.dead_letters("work")
    assert (letter.body, dict(letter.attributes)) == ("not json", {"device": "d-1"})
    assert letter.reason == "body is not JSON"
    assert [d.body for d in queues.dead_letters("work")] == ["not json"]  # a look leaves it
    assert queues.depth("work") == QueueDepth(visible=0, in_flight=0, dead=1)
    with pytest.raises(ValueError, match="reason"):
        queues.dead_letter("work", received["fine"], "")

    assert queues.redrive("work") == 1
    assert queues.redrive("work") == 0
    [back] = queues.receive("work")
    assert (back.body, dict(back.attributes)) == ("not json", {"device": "d-1"})
    assert back.receive_count == 1
    assert queues.dead_letters("work") == []


def test_unknown_queues_and_bad_messages_are_refused(queues: MessageQueue) -> None:
    with pytest.raises(QueueError, match="nowhere"):
        queues.send("nowhere", "lost")
    with pytest.raises(ValueError, match="empty"):
        queues.send("work", "")
    with pytest.raises(ValueError, match="not allowed"):
        queues.send("work", "x", {"dead_letter_reason": "forged"})
    with pytest.raises(ValueError, match="at most 9 attributes"):
        queues.send("work", "x", {f"a{i}": "v" for i in range(10)})
    with pytest.raises(ValueError, match="characters SQS does not accept"):
        queues.send("work", "a\x00b")
    with pytest.raises(ValueError, match="queue name"):
        queues.send("work-dlq", "x")
    with pytest.raises(ValueError, match="max_messages"):
        queues.receive("work", max_messages=11)
    assert queues.depth("work") == QueueDepth(visible=0, in_flight=0, dead=0)


def test_the_environment_table_picks_the_sqlite_or_sqs_queues(tmp_path: Path) -> None:
    paths = LocalPaths(home=tmp_path)
    local = resource_for("queues", Environment.LOCAL, paths)
    assert isinstance(local, LocalQueue)
    assert local.path == str(tmp_path / "queues.db")
    assert isinstance(resource_for("queues", Environment.AWS, paths), SqsQueue)


# -- the local queue only -----------------------------------------------------------------------


def test_an_old_receipt_deletes_nothing_once_the_message_is_received_again(
    tmp_path: Path,
) -> None:
    queues = LocalQueue(path=str(tmp_path / "queues.db"))
    queues.ensure_queue("work")
    queues.send("work", "twice")
    [first] = queues.receive("work", visibility_timeout_s=0)
    [second] = queues.receive("work", visibility_timeout_s=30)

    queues.delete("work", first.receipt)  # a consumer that timed out, deleting late
    assert queues.depth("work").in_flight == 1
    with pytest.raises(ReceiptError):
        queues.dead_letter("work", first, "late")
    queues.delete("work", second.receipt)
    assert queues.depth("work").in_flight == 0


def test_messages_outlive_the_resource_that_sent_them(tmp_path: Path) -> None:
    path = str(tmp_path / "home" / "queues.db")
    sender = LocalQueue(path=path)
    sender.ensure_queue("work")
    sender.send_batch("work", [("kept 1", {}), ("kept 2", {})])
    [in_flight] = sender.receive("work", max_messages=1, visibility_timeout_s=600)
    del sender

    reopened = LocalQueue(path=path)
    assert reopened.depth("work") == QueueDepth(visible=1, in_flight=1, dead=0)
    [left] = reopened.receive("work")
    assert {left.body, in_flight.body} == {"kept 1", "kept 2"}
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def _receive_all(path: str) -> list[str]:
    """A worker: receive and delete until the queue stays empty; the ids it got."""
    queues = LocalQueue(path=path)
    got: list[str] = []
    while batch := queues.receive("work", max_messages=7, visibility_timeout_s=600):
        got.extend(m.id for m in batch)
        queues.delete_batch("work", [m.receipt for m in batch])
    return got


@pytest.mark.slow
def test_two_processes_never_receive_the_same_message(tmp_path: Path) -> None:
    path = str(tmp_path / "queues.db")
    queues = LocalQueue(path=path)
    queues.ensure_queue("work")
    sent = queues.send_batch("work", [(f"m{i}", {}) for i in range(600)])

    with multiprocessing.get_context("fork").Pool(2) as pool:
        first, second = pool.map(_receive_all, [path, path])

    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(sent)
    assert len(first) + len(second) == 600
    assert queues.depth("work") == QueueDepth(visible=0, in_flight=0, dead=0)


# -- message groups (local and FIFO SQS) --------------------------------------------------------


def test_a_group_is_received_in_send_order_across_receives(grouped: MessageQueue) -> None:
    sent = {group: [f"{group}-{i}" for i in range(5)] for group in ("d-1", "d-2", "d-3")}
    # Interleaved as a stream of three devices sends them; one body twice: the second send is
    # a message of its own (the FIFO deduplication id is not the body's hash).
    stream = [(sent[g][i], {MESSAGE_GROUP: g}) for i in range(5) for g in sent]
    grouped.send_batch("work", [*stream, ("d-2-4", {MESSAGE_GROUP: "d-2"})])

    got: dict[str, list[str]] = {group: [] for group in sent}
    while batch := grouped.receive("work", max_messages=4, visibility_timeout_s=60):
        for message in batch:
            got[message.attributes[MESSAGE_GROUP]].append(message.body)
        grouped.delete_batch("work", [m.receipt for m in batch])

    assert got == {**sent, "d-2": [*sent["d-2"], "d-2-4"]}
    assert grouped.depth("work") == QueueDepth(visible=0, in_flight=0, dead=0)


def test_a_group_is_held_while_one_of_its_messages_is_in_flight(grouped: MessageQueue) -> None:
    grouped.send_batch("work", [*in_group("d-1", "a1", "a2", "a3"), *in_group("d-2", "b1", "b2")])
    [head] = grouped.receive("work", max_messages=1, visibility_timeout_s=60)
    held, other = ("d-1", "d-2") if head.body == "a1" else ("d-2", "d-1")
    assert head.body == {"d-1": "a1", "d-2": "b1"}[held]  # a group's first message first

    # The other group goes on, the held one waits, however many are asked for.
    rest = grouped.receive("work", max_messages=10, visibility_timeout_s=60)
    assert bodies_of(rest) == {"d-1": ["a1", "a2", "a3"], "d-2": ["b1", "b2"]}[other]
    assert grouped.receive("work", max_messages=10) == []

    grouped.delete("work", head.receipt)  # done with the head: its group goes on, in order
    following = grouped.receive("work", max_messages=10, visibility_timeout_s=60)
    assert bodies_of(following) == {"d-1": ["a2", "a3"], "d-2": ["b2"]}[held]


def test_an_expired_message_comes_back_before_the_later_ones_of_its_group(
    grouped: MessageQueue,
) -> None:
    grouped.send_batch("work", in_group("d-1", "r1", "r2", "r3"))
    [first] = grouped.receive("work", max_messages=1, visibility_timeout_s=1)
    assert first.body == "r1"
    assert grouped.receive("work", max_messages=10) == []  # a worker killed while holding r1
    time.sleep(1.3)  # moto keeps visibility timeouts in real time

    again = grouped.receive("work", max_messages=10, visibility_timeout_s=60)
    assert bodies_of(again) == ["r1", "r2", "r3"]
    assert [m.receive_count for m in again] == [2, 1, 1]

    # Given back early with change_visibility: the same, first again.
    grouped.change_visibility("work", again[0].receipt, 0)
    grouped.delete_batch("work", [m.receipt for m in again[1:]])
    [back] = grouped.receive("work", max_messages=10, visibility_timeout_s=60)
    assert (back.body, back.receive_count) == ("r1", 3)


def test_a_dead_lettered_head_no_longer_holds_its_group(grouped: MessageQueue) -> None:
    grouped.send_batch("work", [*in_group("d-1", "bad", "a2"), *in_group("d-2", "crash", "b2")])
    received = grouped.receive("work", max_messages=10, visibility_timeout_s=60)
    assert bodies_of(received) == ["bad", "a2", "crash", "b2"]  # both groups free at first
    for message in received[1:]:  # all but "bad" given back; "bad" holds d-1
        grouped.change_visibility("work", message.receipt, 0)

    # Given up by its consumer: the next of its group is handed out.
    grouped.dead_letter("work", received[0], "body is not JSON")
    [a2] = grouped.receive("work", max_messages=1, visibility_timeout_s=60)
    assert a2.body == "a2"

    # Received too often: "crash" holds d-2 for each of its receives, then the receive that
    # dead-letters it hands out "b2".
    for count in range(2, MAX_RECEIVES + 1):
        [crash] = grouped.receive("work", max_messages=1, visibility_timeout_s=60)
        assert (crash.body, crash.receive_count) == ("crash", count)
        assert grouped.receive("work", max_messages=10) == []
        grouped.change_visibility("work", crash.receipt, 0)
    [b2] = grouped.receive("work", max_messages=10, visibility_timeout_s=60)
    assert b2.body == "b2"
    assert sorted(d.body for d in grouped.dead_letters("work")) == ["bad", "crash"]

    # Redriven, each goes back to the end of its group, keeping its attribute: held while
    # a2 and b2 are in flight.
    assert grouped.redrive("work") == 2
    assert grouped.receive("work", max_messages=10) == []
    grouped.delete_batch("work", [a2.receipt, b2.receipt])
    back = grouped.receive("work", max_messages=10, visibility_timeout_s=60)
    assert sorted((m.body, m.attributes[MESSAGE_GROUP]) for m in back) == [
        ("bad", "d-1"),
        ("crash", "d-2"),
    ]


def test_a_message_group_must_be_one_sqs_accepts(grouped: MessageQueue) -> None:
    with pytest.raises(ValueError, match="message_group 'd 1'"):
        grouped.send("work", "x", {MESSAGE_GROUP: "d 1"})
    with pytest.raises(ValueError, match="message_group"):
        grouped.send("work", "x", {MESSAGE_GROUP: "d" * 129})
    grouped.send("work", "x", {MESSAGE_GROUP: "site/7:d-1"})
    assert grouped.depth("work").visible == 1


@pytest.mark.aws
def test_fifo_sqs_queues_are_named_fifo_and_need_a_group(aws_credentials: None) -> None:
    from moto import mock_aws

    with mock_aws():
        queues = SqsQueue(prefix="fp-", region=REGION, fifo=True)
        queues.ensure_queue("scores")
        sqs = boto3.client("sqs", region_name=REGION)
        dlq_url = sqs.get_queue_url(QueueName="fp-scores-dlq.fifo")["QueueUrl"]
        url = sqs.get_queue_url(QueueName="fp-scores.fifo")["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert (attributes["FifoQueue"], attributes["ContentBasedDeduplication"]) == (
            "true",
            "false",
        )
        assert json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"].endswith(
            "fp-scores-dlq.fifo"
        )
        assert dlq_url.endswith("fp-scores-dlq.fifo")

        with pytest.raises(ValueError, match="SQS FIFO queues need a 'message_group'"):
            # Refused before any is sent: the first message does not go alone.
            queues.send_batch("scores", [("ok", {MESSAGE_GROUP: "d-1"}), ("lost", {})])
        assert queues.depth("scores") == QueueDepth(visible=0, in_flight=0, dead=0)


def test_a_standard_sqs_queue_carries_the_group_as_an_attribute(queues: MessageQueue) -> None:
    queues.send("work", "reading", {MESSAGE_GROUP: "d-1", "kind": "reading"})
    [message] = queues.receive("work")
    assert dict(message.attributes) == {MESSAGE_GROUP: "d-1", "kind": "reading"}


def test_local_messages_without_a_group_are_never_held(tmp_path: Path) -> None:
    queues = LocalQueue(path=str(tmp_path / "queues.db"))
    queues.ensure_queue("work")
    queues.send_batch("work", [*in_group("d-1", "a1", "a2"), ("free 1", {}), ("free 2", {})])
    [head] = queues.receive("work", max_messages=1, visibility_timeout_s=60)
    assert head.body == "a1"

    [free] = queues.receive("work", max_messages=1, visibility_timeout_s=60)
    assert free.body == "free 1"  # a1 in flight holds a2 but not the ungrouped messages
    assert bodies_of(queues.receive("work", max_messages=10)) == ["free 2"]


def test_a_file_with_bodies_in_the_rows_keeps_its_messages(tmp_path: Path) -> None:
    """A queue file written before bodies moved to their own table: its waiting messages and
    dead letters are still there, in order, when a LocalQueue opens it."""
    path = str(tmp_path / "queues.db")
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE queues (name TEXT PRIMARY KEY, max_receives INTEGER NOT NULL)")
        db.execute(
            "CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "id TEXT NOT NULL UNIQUE, queue TEXT NOT NULL, body TEXT NOT NULL, "
            "attributes TEXT NOT NULL, sent_at REAL NOT NULL, visible_at REAL NOT NULL, "
            "receive_count INTEGER NOT NULL DEFAULT 0, receipt TEXT UNIQUE, "
            "dead INTEGER NOT NULL DEFAULT 0, reason TEXT)"
        )
        db.execute("INSERT INTO queues VALUES ('work', 3)")
        rows = [
            ("m1", "first", '{"message_group": "g"}', 0, None),
            ("m2", "second", '{"message_group": "g"}', 0, None),
            ("m3", "poison", "{}", 1, "unreadable"),
        ]
        db.executemany(
            "INSERT INTO messages (id, queue, body, attributes, sent_at, visible_at, dead, "
            "reason) VALUES (?, 'work', ?, ?, 1.0, 1.0, ?, ?)",
            rows,
        )
    queues = LocalQueue(path=path)

    received = queues.receive("work", max_messages=10, visibility_timeout_s=60)
    assert [(m.id, m.body, m.attributes) for m in received] == [
        ("m1", "first", {MESSAGE_GROUP: "g"}),
        ("m2", "second", {MESSAGE_GROUP: "g"}),
    ]
    [letter] = queues.dead_letters("work")
    assert (letter.id, letter.body, letter.reason) == ("m3", "poison", "unreadable")
    queues.delete_batch("work", [m.receipt for m in received])
    assert queues.depth("work") == QueueDepth(visible=0, in_flight=0, dead=1)
    with sqlite3.connect(path) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        assert "messages" not in tables
        assert db.execute("SELECT count(*) FROM queue_bodies").fetchone() == (1,)
