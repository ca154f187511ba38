"""The agents' Lambda entry points on recorded events: SQS events as AWS delivers them
(events/*.json) and the escalation state machine's lambda:invoke payload.

In AWS (FIREPIPE_ENV=aws, every port on moto): the response function opens one alert and a
redelivery does nothing more; a batch reports only its failed record; exhausted and unreadable
records end in the dead-letter queue with their reason instead; the analysis function's incident
reaches the incidents queue through the topic's filter policy; `escalate` escalates once. Locally
(the monitoring function needs a registered champion): readings through all three functions to
one alert. And what the handlers print: EMF metrics, JSON logs, an X-Ray subsegment.

A recorded record is delivered as the event source mapping would: its body and attributes are
sent to the queue and received ApproximateReceiveCount times, and the record carries that
message's id and receipt handle, so dead-lettering deletes a real message.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import polars as pl
import pytest

from firepipe.core.agents import messages
from firepipe.core.agents.analysis import from_epoch_us
from firepipe.core.agents.escalation import (
    execution_input,
    execution_name,
    state_machine_definition,
)
from firepipe.core.agents.response import AlertRecord
from firepipe.lib import aws_env
from firepipe.names import MODEL_NAME
from firepipe.resources.escalation import LocalEscalationTimer
from firepipe.resources.queue import REASON_ATTRIBUTE, Message, MessageQueue
from firepipe.resources.registry import LocalModelRegistry
from firepipe.resources.state_store import DynamoStateStore
from firepipe.services.agents import lambdas
from firepipe.services.agents import observability as obs
from firepipe.services.agents.analysis import device_key
from firepipe.services.agents.response import alert_key, alert_records
from firepipe.services.agents.runtime import (
    ESCALATION_LEVELS_VAR,
    MAX_RECEIVES_VAR,
    Ports,
    ports,
    wire,
)
from firepipe_tests.services.detector_sample import register_detector
from firepipe_tests.services.inference.serving_sample import FEATURES

EVENTS = Path(__file__).parent / "events"
REGION = "eu-west-1"
ACCOUNT = "123456789012"  # moto's account
PREFIX = "firepipe-"
MAX_RECEIVES = 3
ALERT_7 = "inc-5d0c3e9a41b27f68c1e4a0d3"  # the incident of events/incidents_alarm.json


def recorded(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return document


@dataclass(frozen=True)
class LambdaContext:
    """What the Lambda runtime passes, the fields Powertools reads."""

    function_name: str
    aws_request_id: str = "3e9f1c2a-7b4d-4e8f-a1c6-0d2b5e8f9a71"
    memory_limit_in_mb: int = 1024
    function_version: str = "$LATEST"
    remaining_ms: int = 60_000

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def context(agent: str) -> LambdaContext:
    return LambdaContext(function_name=f"firepipe-{agent}")


def sqs_record(template: dict[str, Any], message: Message, queue: str) -> dict[str, Any]:
    """`template` (a recorded record) as the event source mapping delivers `message`, received
    from `queue`."""
    sent_ms = int(message.sent_at.timestamp() * 1000)
    return {
        **template,
        "messageId": message.id,
        "receiptHandle": message.receipt,
        "body": message.body,
        "attributes": {
            **template["attributes"],
            "ApproximateReceiveCount": str(message.receive_count),
            "SentTimestamp": str(sent_ms),
            "ApproximateFirstReceiveTimestamp": str(sent_ms),
        },
        "md5OfBody": hashlib.md5(message.body.encode()).hexdigest(),
        "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{PREFIX}{queue}",
    }


def arrive(event: dict[str, Any], queues: MessageQueue, queue: str) -> dict[str, Any]:
    """`event`'s records sent to `queue` and received as often as each says, as one event."""
    records = []
    for template in event["Records"]:
        attributes = {k: v["stringValue"] for k, v in template["messageAttributes"].items()}
        sent = queues.send(queue, template["body"], attributes)
        receives = int(template["attributes"]["ApproximateReceiveCount"])
        for n in range(1, receives + 1):
            # visible again at once until the last receive, which holds it as a Lambda's does
            (message,) = queues.receive(queue, 1, 0, 60 if n == receives else 0)
            assert (message.id, message.receive_count) == (sent, n)
        records.append(sqs_record(template, message, queue))
    return {"Records": records}


def waiting(queues: MessageQueue, queue: str) -> list[Message]:
    """The messages visible in `queue`, taken out."""
    taken: list[Message] = []
    while batch := queues.receive(queue, 10, 0, 60):
        taken += batch
        queues.delete_batch(queue, [m.receipt for m in batch])
    return taken


# --- AWS on moto -------------------------------------------------------------------------------


@dataclass
class Aws:
    ports: Ports
    sqs: Any
    sfn: Any
    dynamodb: Any
    notes_url: str  # a queue subscribed to the notifications topic
    state_machine_arn: str
    idempotency_table: str

    def notes(self) -> list[dict[str, Any]]:
        """The notifications published since the last look (SNS envelopes)."""
        found = []
        while batch := self.sqs.receive_message(
            QueueUrl=self.notes_url, MaxNumberOfMessages=10
        ).get("Messages"):
            found += [json.loads(m["Body"]) for m in batch]
            for m in batch:
                self.sqs.delete_message(QueueUrl=self.notes_url, ReceiptHandle=m["ReceiptHandle"])
        return found

    def executions(self) -> list[dict[str, Any]]:
        listed = self.sfn.list_executions(stateMachineArn=self.state_machine_arn)
        return [
            self.sfn.describe_execution(executionArn=e["executionArn"])
            for e in listed["executions"]
        ]

    def idempotency_records(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.dynamodb.scan(TableName=self.idempotency_table)["Items"]
        return items


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, aws_credentials: None) -> Iterator[Aws]:
    """Every AWS resource the functions use, on moto, named by the variables the CDK app sets."""
    from moto import mock_aws

    with mock_aws():
        sns = boto3.client("sns", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        sfn = boto3.client("stepfunctions", region_name=REGION)
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        events_arn = sns.create_topic(Name=f"{PREFIX}events")["TopicArn"]
        notifications_arn = sns.create_topic(Name=f"{PREFIX}notifications")["TopicArn"]
        notes_url = sqs.create_queue(QueueName="notes")["QueueUrl"]
        notes_arn = sqs.get_queue_attributes(QueueUrl=notes_url, AttributeNames=["QueueArn"])
        sns.subscribe(
            TopicArn=notifications_arn,
            Protocol="sqs",
            Endpoint=notes_arn["Attributes"]["QueueArn"],
        )
        DynamoStateStore(
            state_table=f"{PREFIX}state", history_table=f"{PREFIX}state-history", region=REGION
        ).ensure_tables()
        dynamodb.create_table(
            TableName=f"{PREFIX}idempotency",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        )
        dynamodb.update_time_to_live(
            TableName=f"{PREFIX}idempotency",
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"},
        )
        escalate_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{PREFIX}escalate"
        machine = sfn.create_state_machine(
            name=f"{PREFIX}escalation",
            definition=json.dumps(state_machine_definition(escalate_arn)),
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/{PREFIX}escalation",
        )["stateMachineArn"]
        for name, value in {
            "FIREPIPE_ENV": "aws",
            "FIREPIPE_HOME": str(tmp_path / "home"),
            aws_env.QUEUE_PREFIX_VAR: PREFIX,
            aws_env.EVENTS_TOPIC_ARN_VAR: events_arn,
            aws_env.NOTIFICATIONS_TOPIC_ARN_VAR: notifications_arn,
            aws_env.STATE_TABLE_VAR: f"{PREFIX}state",
            aws_env.STATE_HISTORY_TABLE_VAR: f"{PREFIX}state-history",
            aws_env.IDEMPOTENCY_TABLE_VAR: f"{PREFIX}idempotency",
            aws_env.ESCALATION_STATE_MACHINE_ARN_VAR: machine,
            MAX_RECEIVES_VAR: str(MAX_RECEIVES),
            ESCALATION_LEVELS_VAR: "300:on-call,900:site-manager",
        }.items():
            monkeypatch.setenv(name, value)
        found = ports()
        wire(found.queues, found.topic)  # redrive after MAX_RECEIVES; filtered subscriptions
        lambdas._agents.cache_clear()
        yield Aws(found, sqs, sfn, dynamodb, notes_url, machine, f"{PREFIX}idempotency")
        lambdas._agents.cache_clear()


on_moto = pytest.mark.aws


@on_moto
def test_response_opens_one_alert_and_the_same_record_again_does_nothing(aws: Aws) -> None:
    event = arrive(recorded("incidents_alarm.json"), aws.ports.queues, messages.INCIDENTS_QUEUE)

    assert lambdas.response(event, context("response")) == {"batchItemFailures": []}

    store = aws.ports.store
    item = store.get(alert_key(ALERT_7))
    assert item is not None
    assert item.version == 1
    record = AlertRecord.from_dict(item.state)
    assert (record.status, record.alert.device_id) == ("open", "lab-7")
    assert [h.transition.to_state for h in store.history(alert_key(ALERT_7))] == ["open"]
    (note,) = aws.notes()
    assert note["Subject"] == f"FIRE ALARM: device lab-7 (alert {ALERT_7})"
    assert note["MessageAttributes"]["kind"]["Value"] == "alarm"
    (execution,) = aws.executions()
    assert execution["name"] == execution_name(ALERT_7)
    assert json.loads(execution["input"]) == execution_input(record.alert)
    (idempotency,) = aws.idempotency_records()
    assert idempotency["status"]["S"] == "COMPLETED"

    # The same record again (SQS delivers at least once): its idempotency record answers. The
    # handler itself would publish the alarm again (it re-sends whatever the put said).
    assert lambdas.response(event, context("response")) == {"batchItemFailures": []}
    assert aws.notes() == []
    assert len(aws.executions()) == 1
    again = store.get(alert_key(ALERT_7))
    assert again is not None
    assert again.version == 1
    assert len(aws.idempotency_records()) == 1


@on_moto
def test_a_failed_record_is_the_only_one_reported(aws: Aws) -> None:
    queues = aws.ports.queues
    event = arrive(recorded("incidents_partial.json"), queues, messages.INCIDENTS_QUEUE)
    _good, failing = event["Records"]

    answer = lambdas.response(event, context("response"))

    # the RESOLVED incident of an alert never opened: retried after the visibility timeout
    assert answer == {"batchItemFailures": [{"itemIdentifier": failing["messageId"]}]}
    (record,) = list(alert_records(aws.ports.store))
    assert record.alert.device_id == "lab-8"
    assert [n["MessageAttributes"]["kind"]["Value"] for n in aws.notes()] == ["alarm"]
    assert queues.dead_letters(messages.INCIDENTS_QUEUE) == []
    # the failure left no idempotency record behind, so the retry runs the handler again
    (idempotency,) = aws.idempotency_records()
    assert idempotency["status"]["S"] == "COMPLETED"


@on_moto
def test_exhausted_and_unreadable_records_are_dead_lettered_not_reported(aws: Aws) -> None:
    queues = aws.ports.queues
    event = arrive(recorded("incidents_dead_letters.json"), queues, messages.INCIDENTS_QUEUE)
    exhausted, unreadable = event["Records"]
    assert exhausted["attributes"]["ApproximateReceiveCount"] == str(MAX_RECEIVES)
    assert unreadable["attributes"]["ApproximateReceiveCount"] == "1"

    assert lambdas.response(event, context("response")) == {"batchItemFailures": []}

    reasons = {d.body: d.reason for d in queues.dead_letters(messages.INCIDENTS_QUEUE)}
    assert reasons.keys() == {exhausted["body"], unreadable["body"]}
    assert reasons[exhausted["body"]].startswith(
        f"failed {MAX_RECEIVES} times: IncidentNotOpenError: alert "
        "inc-77c2a0e5d9b14f3a8e6d1c20 is not open yet"
    )
    assert reasons[unreadable["body"]].startswith("unreadable: the incident message is not JSON")
    # the reason travels as the dead letter's message attribute, beside the original ones
    dlq = aws.sqs.get_queue_url(QueueName=f"{PREFIX}incidents-dlq")["QueueUrl"]
    raw = aws.sqs.receive_message(
        QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=0
    )["Messages"]
    by_body = {m["Body"]: m["MessageAttributes"] for m in raw}
    exhausted_attributes = by_body[exhausted["body"]]
    assert exhausted_attributes["kind"]["StringValue"] == "incident"
    assert exhausted_attributes[REASON_ATTRIBUTE]["StringValue"] == reasons[exhausted["body"]]
    # both gone from the source queue: no redrive will move them again, reason lost
    depth = queues.depth(messages.INCIDENTS_QUEUE)
    assert (depth.visible, depth.in_flight) == (0, 0)
    assert aws.notes() == []
    assert list(alert_records(aws.ports.store)) == []


@on_moto
def test_analysis_publishes_its_incident_to_the_incidents_queue(aws: Aws) -> None:
    queues = aws.ports.queues
    event = arrive(recorded("scores.json"), queues, messages.SCORES_QUEUE)

    assert lambdas.analysis(event, context("analysis")) == {"batchItemFailures": []}

    history = aws.ports.store.history(device_key("lab-7"))
    assert [(h.transition.from_state, h.transition.to_state) for h in history] == [
        (None, "NORMAL"),
        ("NORMAL", "SUSPECTED"),
        ("SUSPECTED", "ALARM"),
    ]
    assert [h.transition.event_id for h in history] == ["gw-0042:0", "gw-0042:1", "gw-0042:2"]
    (sent,) = waiting(queues, messages.INCIDENTS_QUEUE)
    # one FIFO group per device: its incident opens before it resolves
    assert sent.attributes == {messages.KIND: messages.INCIDENT, messages.GROUP: "lab-7"}
    incident = messages.decode_incident(sent.body)
    scores = messages.decode_scores(event["Records"][0]["body"])
    assert incident.change.phase == "ALARM"
    assert incident.change.device_id == "lab-7"
    assert incident.change.incident_id == history[-1].state["incident_id"]
    assert incident.change.ts == scores.event(2).ts
    assert incident.event_id == "gw-0042:2"
    # the filter policy keeps the incident out of the scores queue (its own record is in flight)
    assert waiting(queues, messages.SCORES_QUEUE) == []


@on_moto
def test_escalate_answers_open_and_escalates_once(aws: Aws) -> None:
    event = arrive(recorded("incidents_alarm.json"), aws.ports.queues, messages.INCIDENTS_QUEUE)
    lambdas.response(event, context("response"))
    aws.notes()
    payload = recorded("escalate_level0.json")

    assert lambdas.escalate(payload, context("escalate")) == {"status": "open"}
    (note,) = aws.notes()
    assert note["Subject"].startswith("ESCALATED to on-call: FIRE ALARM: device lab-7")
    assert note["MessageAttributes"]["kind"]["Value"] == "escalation"
    # Step Functions retries a failed task: the level is sent once
    assert lambdas.escalate(payload, context("escalate")) == {"status": "open"}
    assert aws.notes() == []
    item = aws.ports.store.get(alert_key(ALERT_7))
    assert item is not None
    assert AlertRecord.from_dict(item.state).escalated == (0,)
    with pytest.raises(ValueError, match="alert_id, level"):
        lambdas.escalate({"alert_id": ALERT_7}, context("escalate"))


# --- observability -----------------------------------------------------------------------------


@on_moto
def test_a_handler_prints_emf_metrics_and_json_logs(
    aws: Aws, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = io.StringIO()
    monkeypatch.setattr(obs.logger.registered_handler, "stream", logs)
    event = arrive(recorded("incidents_alarm.json"), aws.ports.queues, messages.INCIDENTS_QUEUE)
    capsys.readouterr()

    lambdas.response(event, context("response"))
    lambdas.escalate(recorded("escalate_level0.json"), context("escalate"))

    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    (emf,) = [p for p in printed if "_aws" in p]
    (directive,) = emf["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "firepipe/agents"
    assert directive["Dimensions"] == [["service"]]
    assert emf["service"] == "firepipe-agents"
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert units == {"messages_done": "Count", "alarm_latency": "Milliseconds"}
    assert emf["messages_done"] == [1.0]
    # from the reading's enqueue (the incident's sent_at) to the alert's publication
    sent_at = messages.decode_incident(event["Records"][0]["body"]).sent_at
    assert sent_at is not None
    (latency_ms,) = emf["alarm_latency"]
    assert 0 <= emf["_aws"]["Timestamp"] - (sent_at * 1000 + latency_ms) < 60_000

    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    (escalation,) = [line for line in lines if line["message"] == "escalation"]
    assert escalation["service"] == "firepipe-agents"
    assert escalation["status"] == "open"
    assert escalation["alert_id"] == ALERT_7
    assert escalation["escalation_level"] == 0
    assert escalation["level"] == "INFO"
    assert escalation["function_name"] == "firepipe-escalate"
    assert escalation["function_request_id"] == context("escalate").aws_request_id


@on_moto
def test_the_handler_runs_in_an_xray_subsegment_when_tracing_is_on(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aws_xray_sdk import global_sdk_config  # type: ignore[import-untyped]
    from aws_xray_sdk.core import xray_recorder  # type: ignore[import-untyped]

    # Outside Lambda (no X-Ray daemon) the tracer is off; a handler still runs under it.
    assert obs.tracer.disabled
    event = arrive(recorded("incidents_alarm.json"), aws.ports.queues, messages.INCIDENTS_QUEUE)
    assert lambdas.response(event, context("response")) == {"batchItemFailures": []}
    # In Lambda the runtime opens the invocation's segment; here the test does.
    monkeypatch.delenv("AWS_XRAY_SDK_ENABLED", raising=False)
    global_sdk_config.set_sdk_enabled(True)
    try:
        segment = xray_recorder.begin_segment("invocation")
        lambdas.response(event, context("response"))
        lambdas.escalate(recorded("escalate_level0.json"), context("escalate"))
        traced = {s.name: s.annotations for s in segment.subsegments}
        xray_recorder.end_segment()
    finally:
        global_sdk_config.set_sdk_enabled(False)
    assert traced.keys() >= {"## response", "## escalate"}
    assert traced["## escalate"]["Service"] == "firepipe-agents"


# --- locally: the monitoring function needs a champion ----------------------------------------


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, detector_dir: Path) -> Iterator[Ports]:
    """A FIREPIPE_HOME whose registry has the sample detector as champion; its local ports."""
    monkeypatch.setenv("FIREPIPE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FIREPIPE_ENV", "local")
    monkeypatch.setenv(MAX_RECEIVES_VAR, str(MAX_RECEIVES))
    registry = LocalModelRegistry(root=str(tmp_path / "home" / "mlflow"))
    example = pl.DataFrame({name: [1.0] for name in FEATURES})
    version = register_detector(registry, detector_dir, MODEL_NAME, example).version
    registry.promote(MODEL_NAME, version, "the sample detector")
    found = ports()
    found.wire()
    lambdas._agents.cache_clear()
    yield found
    if lambdas._agents.cache_info().currsize:
        agents = lambdas._agents()
        if "holder" in vars(agents):  # the champion's poller, started by the first message
            agents.holder.stop()
    lambdas._agents.cache_clear()


def test_readings_through_the_three_functions_raise_one_alert(local: Ports) -> None:
    queues = local.queues
    event = arrive(recorded("readings.json"), queues, messages.READINGS_QUEUE)

    assert lambdas.monitoring(event, context("monitoring")) == {"batchItemFailures": []}

    (scored,) = queues.receive(messages.SCORES_QUEUE, 10, 0, 60)
    scores = messages.decode_scores(scored.body)
    readings = messages.decode_readings(event["Records"][0]["body"]).readings
    assert scores.index == list(range(len(readings))) == list(range(40))
    assert scores.model_version == f"{MODEL_NAME}/1"
    first_alarm = scores.alarm.index(True)
    assert first_alarm >= 30  # the first 30 readings are quiet, the last 10 hot
    assert scores.ts_us[first_alarm] == readings.ts_us[first_alarm]
    # the same record again: its idempotency record (SQLite locally) answers, nothing is scored
    assert lambdas.monitoring(event, context("monitoring")) == {"batchItemFailures": []}
    assert queues.depth(messages.SCORES_QUEUE).visible == 0

    template = recorded("scores.json")["Records"][0]
    scores_event = {"Records": [sqs_record(template, scored, messages.SCORES_QUEUE)]}
    assert lambdas.analysis(scores_event, context("analysis")) == {"batchItemFailures": []}
    (incident,) = queues.receive(messages.INCIDENTS_QUEUE, 10, 0, 60)
    template = recorded("incidents_alarm.json")["Records"][0]
    incidents_event = {"Records": [sqs_record(template, incident, messages.INCIDENTS_QUEUE)]}
    assert lambdas.response(incidents_event, context("response")) == {"batchItemFailures": []}

    (record,) = list(alert_records(local.store))
    assert record.alert.device_id == "kitchen-2"
    assert record.status == "open"
    assert record.alert.created_at == from_epoch_us(int(readings.ts_us[first_alarm]))
    (note,) = local.notifier.recent(10)
    assert note.notification.attributes["kind"] == "alarm"
    assert isinstance(local.escalation, LocalEscalationTimer)
    (timer,) = {p.alert_id for p in local.escalation.pending()}
    assert timer == record.alert.alert_id
