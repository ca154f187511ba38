"""The notifier: the local outbox (durable, deduplicated, listed newest first) and SNS on moto,
read back through SQS queues subscribed to the topic."""

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from firepipe.core.notifications import Notification, NotificationError
from firepipe.resources import resource_for
from firepipe.resources.notifier import LocalNotifier, SnsNotifier, sns_subject, sns_token
from firepipe.settings import Environment, LocalPaths


def note(key: str, severity: str = "error", **changes: Any) -> Notification:
    fields: dict[str, Any] = {
        "subject": f"firepipe: job end_to_end failed ({key})",
        "body": f"Job end_to_end failed.\nRun: {key}",
        "severity": severity,
        "source": "dagster/run_failure",
        "dedup_key": key,
        "attributes": {"job": "end_to_end", "run_id": key},
    }
    return Notification(**{**fields, **changes})


# -- the local outbox ---------------------------------------------------------------------------


def test_outbox_survives_a_reopen_and_keeps_every_field(tmp_path: Path) -> None:
    path = str(tmp_path / "state" / "notifications.db")
    sent = note("run-1", severity="critical", attributes={"job": "end_to_end", "device": "d-7"})
    notification_id = LocalNotifier(path=path).notify(sent)

    [record] = LocalNotifier(path=path).recent()  # a new resource, as the next process opens it
    assert record.id == notification_id
    assert record.notification == sent
    assert record.notification.attributes["device"] == "d-7"
    assert abs(record.created_at - datetime.now(UTC)) < timedelta(minutes=1)


def test_the_same_dedup_key_twice_is_one_row_with_one_id(tmp_path: Path) -> None:
    outbox = LocalNotifier(path=str(tmp_path / "notifications.db"))
    first = outbox.notify(note("run-1"))
    again = outbox.notify(note("run-1", body="reported again by a retried tick"))
    other = outbox.notify(note("run-2"))

    assert again == first
    assert other != first
    records = outbox.recent()
    assert [r.notification.dedup_key for r in records] == ["run-2", "run-1"]
    assert records[1].notification.body == "Job end_to_end failed.\nRun: run-1"  # the first kept


def test_outbox_lists_newest_first_with_limit_and_since(tmp_path: Path) -> None:
    outbox = LocalNotifier(path=str(tmp_path / "notifications.db"))
    assert outbox.recent() == []  # no file yet: empty, and none created
    assert not (tmp_path / "notifications.db").exists()
    for key in ("a", "b", "c"):
        outbox.notify(note(key))
    cut = datetime.now(UTC)
    time.sleep(0.01)
    outbox.notify(note("d"))

    assert [r.notification.dedup_key for r in outbox.recent()] == ["d", "c", "b", "a"]
    assert [r.notification.dedup_key for r in outbox.recent(limit=2)] == ["d", "c"]
    assert [r.notification.dedup_key for r in outbox.recent(since=cut)] == ["d"]
    with pytest.raises(ValueError, match="limit must be >= 1"):
        outbox.recent(limit=0)


def test_the_environment_table_picks_the_outbox_or_sns(tmp_path: Path) -> None:
    paths = LocalPaths(home=tmp_path)
    local = resource_for("notifier", Environment.LOCAL, paths)
    assert isinstance(local, LocalNotifier)
    assert local.path == str(tmp_path / "notifications.db")
    assert isinstance(resource_for("notifier", Environment.AWS, paths), SnsNotifier)


def test_a_notification_refuses_what_sns_would_refuse() -> None:
    with pytest.raises(NotificationError, match="severity must be one of"):
        note("k", severity="fatal")
    with pytest.raises(NotificationError, match="non-empty dedup_key"):
        note(" ")
    with pytest.raises(NotificationError, match="set from the notification's field"):
        note("k", attributes={"severity": "info"})
    with pytest.raises(NotificationError, match="at most 7 attributes"):
        note("k", attributes={f"a{i}": "v" for i in range(8)})
    with pytest.raises(NotificationError, match="letters, digits"):
        note("k", attributes={"run id": "r"})
    with pytest.raises(NotificationError, match="non-empty text value"):
        note("k", attributes={"job": ""})


def test_subject_and_tokens_fit_sns() -> None:
    long = "firepipe: job " + "x" * 200 + "\nfailed"
    subject = sns_subject(long)
    assert len(subject) == 100
    assert subject.endswith("...")
    assert "\n" not in subject
    assert sns_subject("two\nlines\t here") == "two lines here"
    assert sns_token("0b1c-run-id") == "0b1c-run-id"
    hashed = sns_token("a key with spaces")
    assert len(hashed) == 64
    assert hashed == sns_token("a key with spaces")


# -- SNS on moto ------------------------------------------------------------------------------


@pytest.fixture
def aws(moto_endpoint: str, aws_credentials: None) -> dict[str, Any]:
    return {"region_name": "eu-west-1", "endpoint_url": moto_endpoint}


def topic_and_queue(
    aws: dict[str, Any], fifo: bool = False, filter_policy: dict[str, Any] | None = None
) -> tuple[SnsNotifier, Any, str]:
    """A fresh topic with one SQS queue subscribed (optionally filtered)."""
    sns, sqs = boto3.client("sns", **aws), boto3.client("sqs", **aws)
    name = f"notes-{uuid.uuid4().hex[:8]}" + (".fifo" if fifo else "")
    fifo_attributes = {"FifoTopic": "true"} if fifo else {}
    topic_arn = sns.create_topic(Name=name, Attributes=fifo_attributes)["TopicArn"]
    queue_attributes = {"FifoQueue": "true"} if fifo else {}
    queue_url = sqs.create_queue(QueueName=name, Attributes=queue_attributes)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    subscription = {"FilterPolicy": json.dumps(filter_policy)} if filter_policy else {}
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes=subscription)
    notifier = SnsNotifier(
        topic_arn=topic_arn, region=aws["region_name"], endpoint_url=aws["endpoint_url"]
    )
    return notifier, sqs, queue_url


def delivered(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """The SNS envelopes waiting in the queue."""
    response = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
    return [json.loads(m["Body"]) for m in response.get("Messages", [])]


@pytest.mark.aws
def test_sns_delivers_the_message_and_its_attributes(aws: dict[str, Any]) -> None:
    notifier, sqs, queue_url = topic_and_queue(aws)
    sent = note("run-9", subject="firepipe: job " + "x" * 150)
    message_id = notifier.notify(sent)

    [envelope] = delivered(sqs, queue_url)
    assert envelope["MessageId"] == message_id
    assert envelope["Message"] == sent.body
    assert envelope["Subject"] == "firepipe: job " + "x" * 83 + "..."
    attributes = {name: a["Value"] for name, a in envelope["MessageAttributes"].items()}
    assert attributes == {
        "severity": "error",
        "source": "dagster/run_failure",
        "dedup_key": "run-9",
        "job": "end_to_end",
        "run_id": "run-9",
    }


@pytest.mark.aws
def test_sns_fifo_topic_drops_a_repeated_dedup_key(aws: dict[str, Any]) -> None:
    notifier, sqs, queue_url = topic_and_queue(aws, fifo=True)
    request = notifier.publish_request(note("run-1"))
    assert request["MessageDeduplicationId"] == "run-1"
    assert request["MessageGroupId"] == "dagster/run_failure"

    notifier.notify(note("run-1"))
    notifier.notify(note("run-1"))
    notifier.notify(note("run-2"))

    assert sorted(
        m["MessageAttributes"]["dedup_key"]["Value"] for m in delivered(sqs, queue_url)
    ) == [
        "run-1",
        "run-2",
    ]


@pytest.mark.aws
def test_a_filter_policy_on_severity_routes_only_matching_ones(aws: dict[str, Any]) -> None:
    notifier, sqs, queue_url = topic_and_queue(aws, filter_policy={"severity": ["critical"]})
    notifier.notify(note("run-1", severity="error"))
    notifier.notify(note("fire-1", severity="critical"))
    notifier.notify(note("run-2", severity="warning"))

    assert [m["MessageAttributes"]["dedup_key"]["Value"] for m in delivered(sqs, queue_url)] == [
        "fire-1"
    ]
    assert (
        notifier.publish_request(note("run-1"))
        .keys()
        .isdisjoint(
            {"MessageDeduplicationId", "MessageGroupId"}  # a standard topic refuses them
        )
    )


@pytest.mark.aws
def test_sns_errors_are_clear_and_listing_is_refused(aws: dict[str, Any]) -> None:
    missing = "arn:aws:sns:eu-west-1:123456789012:no-such-topic"
    notifier = SnsNotifier(topic_arn=missing, region="eu-west-1", endpoint_url=aws["endpoint_url"])
    with pytest.raises(
        NotificationError, match=f"SNS refused the notification for topic {missing}"
    ):
        notifier.notify(note("run-1"))
    with pytest.raises(NotificationError, match="SNS does not keep what it published"):
        notifier.recent()
