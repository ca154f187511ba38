"""The queue contract, run against both implementations: the SQLite queue on a temporary file and
SQS on moto. No order is promised, so no test asserts one. Then what only the local queue
can show: a receipt replaced by a later receive deletes nothing, concurrent processes never
share a message, and messages outlive the connection that sent them."""

import multiprocessing
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from firepipe.resources import resource_for
from firepipe.resources.queue import (
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


@pytest.fixture(params=["local", pytest.param("sqs", marks=pytest.mark.aws)])
def queues(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MessageQueue]:
    """Both implementations with a queue "work" (and its dead-letter queue) ready."""
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
        queue = SqsQueue(prefix=prefix, region=REGION, max_receives=MAX_RECEIVES)
        queue.ensure_queue("work")
        yield queue


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
