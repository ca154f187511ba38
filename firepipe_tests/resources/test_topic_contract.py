"""The topic contract, run against both implementations: the SQLite topic fanning out into
local queues, and SNS with SQS subscriptions on moto (for message groups, a FIFO topic with
FIFO queues). Then the filter-policy subset on its own, and the local fan-out's
all-or-nothing."""

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from firepipe.lib import sqlite_queue
from firepipe.resources import resource_for
from firepipe.resources.queue import (
    MESSAGE_GROUP,
    LocalQueue,
    MessageQueue,
    QueueError,
    SqsQueue,
)
from firepipe.resources.topic import (
    LocalTopic,
    SnsTopic,
    Topic,
    normalise_policy,
    policy_matches,
)
from firepipe.settings import Environment, LocalPaths
from firepipe_tests.resources.conftest import REGION

QUEUES = ("scores", "alarms", "audit")


def _messaging(
    request: pytest.FixtureRequest, tmp_path: Path, *, fifo: bool
) -> Iterator[tuple[MessageQueue, Topic]]:
    """The implementation `request.param` names: queues "scores", "alarms" and "audit" and a
    topic with no subscribers yet; local (which keeps message groups either way) or SNS and
    SQS, FIFO when asked."""
    if request.param == "local":
        path = str(tmp_path / "queues.db")
        local = LocalQueue(path=path)
        for name in QUEUES:
            local.ensure_queue(name)
        yield local, LocalTopic(path=path)
        return
    from moto import mock_aws

    request.getfixturevalue("aws_credentials")
    with mock_aws():
        prefix = f"t{uuid.uuid4().hex[:8]}-"
        sqs = SqsQueue(prefix=prefix, region=REGION, fifo=fifo)
        for name in QUEUES:
            sqs.ensure_queue(name)
        fifo_topic = {"FifoTopic": "true", "ContentBasedDeduplication": "false"}
        arn = boto3.client("sns", region_name=REGION).create_topic(
            Name=f"{prefix}events.fifo" if fifo else f"{prefix}events",
            Attributes=fifo_topic if fifo else {},
        )
        yield sqs, SnsTopic(topic_arn=arn["TopicArn"], queue_prefix=prefix, region=REGION)


@pytest.fixture(params=["local", pytest.param("sns", marks=pytest.mark.aws)])
def messaging(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[MessageQueue, Topic]]:
    """Queues "scores", "alarms" and "audit", and a topic with no subscribers yet."""
    yield from _messaging(request, tmp_path, fifo=False)


@pytest.fixture(params=["local", pytest.param("sns-fifo", marks=pytest.mark.aws)])
def grouped_messaging(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[MessageQueue, Topic]]:
    """As `messaging`, keeping message groups: the local ones, or a FIFO topic and queues."""
    yield from _messaging(request, tmp_path, fifo=True)


def bodies(queues: MessageQueue, queue: str) -> set[str]:
    """The bodies waiting in `queue`, taken out."""
    taken: set[str] = set()
    while batch := queues.receive(queue, visibility_timeout_s=60):
        taken.update(m.body for m in batch)
        queues.delete_batch(queue, [m.receipt for m in batch])
    return taken


def test_a_publish_reaches_every_queue_whose_policy_matches(
    messaging: tuple[MessageQueue, Topic],
) -> None:
    queues, topic = messaging
    topic.subscribe("scores", {"kind": ["score"]})
    topic.subscribe("alarms", {"kind": ["alarm", "escalation"], "device": [{"prefix": "lab-"}]})
    topic.subscribe("audit", {"kind": [{"anything-but": ["score", "heartbeat"]}]})

    topic.publish("s1", {"kind": "score", "device": "lab-1"})
    topic.publish("a1", {"kind": "alarm", "device": "lab-2"})
    topic.publish("a2", {"kind": "escalation", "device": "field-3"})
    topic.publish("h1", {"kind": "heartbeat", "device": "lab-1"})
    topic.publish("n1", {"device": "lab-4"})  # no kind: no policy lets it through

    assert bodies(queues, "scores") == {"s1"}
    assert bodies(queues, "alarms") == {"a1"}
    assert bodies(queues, "audit") == {"a1", "a2"}


def test_subscribers_receive_the_body_and_attributes_as_published(
    messaging: tuple[MessageQueue, Topic],
) -> None:
    queues, topic = messaging
    topic.subscribe("scores")  # no policy: everything
    topic.subscribe("alarms", {"kind": "alarm"})  # a bare string is one alternative
    message_id = topic.publish('{"score": 0.93}', {"kind": "alarm", "device": "d-7"})
    assert message_id

    for queue in ("scores", "alarms"):
        [message] = queues.receive(queue)
        assert message.body == '{"score": 0.93}'
        assert dict(message.attributes) == {"kind": "alarm", "device": "d-7"}
    assert queues.receive("audit") == []


def test_exists_and_anything_but_prefix_policies(messaging: tuple[MessageQueue, Topic]) -> None:
    queues, topic = messaging
    topic.subscribe("scores", {"incident": [{"exists": True}]})
    topic.subscribe("alarms", {"incident": [{"exists": False}]})
    topic.subscribe("audit", {"device": [{"anything-but": {"prefix": "test-"}}]})

    topic.publish("with incident", {"incident": "i-1", "device": "test-1"})
    topic.publish("without", {"device": "lab-1"})

    assert bodies(queues, "scores") == {"with incident"}
    assert bodies(queues, "alarms") == {"without"}
    assert bodies(queues, "audit") == {"without"}


def test_subscribing_again_replaces_the_policy(messaging: tuple[MessageQueue, Topic]) -> None:
    queues, topic = messaging
    topic.subscribe("scores", {"kind": ["score"]})
    topic.subscribe("scores", {"kind": ["alarm"]})
    topic.publish("score", {"kind": "score"})
    topic.publish("alarm", {"kind": "alarm"})
    assert bodies(queues, "scores") == {"alarm"}

    topic.subscribe("scores")  # the policy removed: everything again
    topic.publish("heartbeat", {"kind": "heartbeat"})
    assert bodies(queues, "scores") == {"heartbeat"}


def test_unsupported_policies_and_unknown_queues_are_refused(
    messaging: tuple[MessageQueue, Topic],
) -> None:
    _, topic = messaging
    with pytest.raises(ValueError, match="not supported"):
        topic.subscribe("scores", {"score": [{"numeric": [">", 0.5]}]})
    with pytest.raises(ValueError, match="at most 5 keys"):
        topic.subscribe("scores", {f"k{i}": ["v"] for i in range(6)})
    with pytest.raises(QueueError, match="nowhere"):
        topic.subscribe("nowhere")


def test_the_environment_table_picks_the_sqlite_or_sns_topic(tmp_path: Path) -> None:
    paths = LocalPaths(home=tmp_path)
    local = resource_for("events_topic", Environment.LOCAL, paths)
    assert isinstance(local, LocalTopic)
    assert local.path == resource_for("queues", Environment.LOCAL, paths).path
    assert isinstance(resource_for("events_topic", Environment.AWS, paths), SnsTopic)


def test_a_fan_out_keeps_the_message_groups(
    grouped_messaging: tuple[MessageQueue, Topic],
) -> None:
    queues, topic = grouped_messaging
    topic.subscribe("scores")
    topic.subscribe("alarms", {"kind": ["alarm"]})
    for body, device, kind in [
        ("s1", "d-1", "score"),
        ("t1", "d-2", "score"),
        ("s2", "d-1", "alarm"),
        ("s3", "d-1", "score"),
    ]:
        topic.publish(body, {MESSAGE_GROUP: device, "kind": kind})

    [head] = queues.receive("scores", max_messages=1, visibility_timeout_s=60)
    assert (head.body, dict(head.attributes)) == ("s1", {MESSAGE_GROUP: "d-1", "kind": "score"})
    # s1 in flight holds d-1's later copies in "scores", not d-2's, nor the "alarms" copy.
    assert [m.body for m in queues.receive("scores", visibility_timeout_s=60)] == ["t1"]
    [alarm] = queues.receive("alarms")
    assert (alarm.body, alarm.attributes[MESSAGE_GROUP]) == ("s2", "d-1")
    queues.delete("scores", head.receipt)
    assert [m.body for m in queues.receive("scores")] == ["s2", "s3"]


@pytest.mark.aws
def test_a_fifo_sns_topic_needs_a_group(aws_credentials: None) -> None:
    from moto import mock_aws

    with mock_aws():
        arn = boto3.client("sns", region_name=REGION).create_topic(
            Name="fp-events.fifo", Attributes={"FifoTopic": "true"}
        )["TopicArn"]
        topic = SnsTopic(topic_arn=arn, queue_prefix="fp-", region=REGION)
        with pytest.raises(ValueError, match="SNS FIFO topics need a 'message_group'"):
            topic.publish("score", {"kind": "score"})
        assert topic.publish("score", {MESSAGE_GROUP: "d-1"})


# -- the policy subset, and the local fan-out ---------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "attributes", "expected"),
    [
        ({"kind": ["a", "b"]}, {"kind": "b"}, True),
        ({"kind": ["a", "b"]}, {"kind": "c"}, False),
        ({"kind": ["a"], "device": [{"prefix": "lab-"}]}, {"kind": "a", "device": "lab-1"}, True),
        ({"kind": ["a"], "device": [{"prefix": "lab-"}]}, {"kind": "a", "device": "lb-1"}, False),
        ({"kind": [{"anything-but": "a"}]}, {"kind": "b"}, True),
        ({"kind": [{"anything-but": "a"}]}, {"kind": "a"}, False),
        ({"kind": [{"anything-but": "a"}]}, {}, False),  # present and something else
        ({"kind": [{"anything-but": {"prefix": "a"}}]}, {"kind": "ab"}, False),
        ({"kind": [{"exists": False}]}, {}, True),
        ({"kind": ["a", {"prefix": "x"}]}, {"kind": "xy"}, True),
        ({}, {"kind": "anything"}, True),
    ],
)
def test_policy_matches(policy: dict[str, Any], attributes: dict[str, str], expected: bool) -> None:
    assert policy_matches(normalise_policy(policy), attributes) is expected


def test_local_fan_out_is_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "queues.db")
    queues, topic = LocalQueue(path=path), LocalTopic(path=path)
    for name in QUEUES:
        queues.ensure_queue(name)
        topic.subscribe(name)
    real_insert = sqlite_queue.insert
    calls = []

    def insert_then_fail(*args: Any) -> str:
        calls.append(args[1])
        if len(calls) == 2:
            raise OSError("disk full")  # the second subscriber's copy fails
        return real_insert(*args)

    monkeypatch.setattr(sqlite_queue, "insert", insert_then_fail)
    with pytest.raises(OSError, match="disk full"):
        topic.publish("half", {"kind": "score"})
    monkeypatch.undo()

    assert len(calls) == 2
    assert all(queues.depth(name).visible == 0 for name in QUEUES)
    topic.publish("whole", {"kind": "score"})
    assert all(queues.depth(name).visible == 1 for name in QUEUES)
