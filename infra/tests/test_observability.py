import re
from pathlib import Path

import pytest
from aws_cdk import Duration, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk.assertions import Template
from firepipe_infra.config import ENVIRONMENTS
from firepipe_infra.observability import ALARM_KINDS, RUNBOOKS, Observability, runbook
from firepipe_infra.stacks import _EnvironmentStack, build_app

ALARMS_RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbooks" / "alarms.md"


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    """An Observability watching one resource of a few kinds, in an app with cdk-nag."""
    config = ENVIRONMENTS["dev"]
    app, _ = build_app(tmp_path_factory.mktemp("cdk.out"), {"dev": config})
    stack = _EnvironmentStack(app, "watched", config)
    observability = Observability(stack, "Observability", config=config)
    # What it watches: the resources as imported, by name (the metrics need no more).
    function = lambda_.Function.from_function_name(stack, "Fn", "firepipe-dev-monitoring")
    queue = sqs.Queue.from_queue_arn(stack, "Queue", "arn:aws:sqs:eu-west-1:111111111111:q")
    dead = sqs.Queue.from_queue_arn(stack, "Dlq", "arn:aws:sqs:eu-west-1:111111111111:q-dlq")
    table = dynamodb.TableV2.from_table_name(stack, "Table", "firepipe-dev-state")
    machine = sfn.StateMachine.from_state_machine_name(stack, "Machine", "firepipe-dev-escalation")
    observability.watch_function("monitoring-agent", function)
    observability.watch_queue("monitoring", queue, dead, max_age=Duration.minutes(5))
    observability.watch_table("state", table)
    observability.watch_state_machine("escalation", machine)
    observability.watch_glue_job("spark-features", "firepipe-dev-spark-features")
    observability.watch_batch_queue("generator-gpu", "arn:aws:batch:eu-west-1:1:job-queue/q")
    return observability, Stack.of(observability)


def test_alarms_per_service_with_a_runbook_and_the_alarm_topic(watched):
    """Each service has alarms of its own (not one for all), each named after it, linking its
    runbook section and notifying the environment's alarm topic."""
    observability, stack = watched
    template = Template.from_stack(stack)
    alarms = template.find_resources("AWS::CloudWatch::Alarm")
    names = [a["Properties"]["AlarmName"] for a in alarms.values()]
    for service in ("monitoring-agent", "monitoring", "state", "escalation", "spark-features"):
        own = [n for n in names if n.startswith(f"firepipe-dev-{service}-")]
        assert own, f"no alarm of {service}: {names}"
    topic = stack.get_logical_id(observability.alarm_topic.node.default_child)
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic}]
        assert f"{RUNBOOKS}#" in alarm["Properties"]["AlarmDescription"]
    assert observability.watched["queue"] == ["monitoring"]
    dlq = [n for n in names if n.startswith("firepipe-dev-monitoring-") and "DLQ" in n.upper()]
    assert dlq, names


def test_the_alarm_topic_is_encrypted_and_mails_the_configured_address(watched):
    _, stack = watched
    template = Template.from_stack(stack)
    [topic] = template.find_resources("AWS::SNS::Topic").values()
    assert topic["Properties"]["TopicName"] == "firepipe-dev-alarms"
    assert "KmsMasterKeyId" in topic["Properties"]
    template.has_resource_properties(
        "AWS::SNS::Subscription",
        {"Protocol": "email", "Endpoint": ENVIRONMENTS["dev"].alarm_email},
    )


def test_batch_failures_reach_the_alarm_topic_through_an_event_rule(watched):
    _, stack = watched
    rules = Template.from_stack(stack).find_resources("AWS::Events::Rule").values()
    [rule] = [r for r in rules if r["Properties"].get("Name", "").endswith("-failed")]
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["detail"] == {
        "status": ["FAILED"],
        "jobQueue": ["arn:aws:batch:eu-west-1:1:job-queue/q"],
    }
    assert rule["Properties"]["Name"] == "firepipe-dev-generator-gpu-failed"


def test_a_service_is_watched_once_under_a_plain_name(watched):
    observability, _ = watched
    with pytest.raises(ValueError, match="watched twice"):
        observability.watch_glue_job("spark-features", "other")
    with pytest.raises(ValueError, match="lowercase with dashes"):
        observability.watch_glue_job("Spark Features", "other")
    with pytest.raises(KeyError, match="no runbook section"):
        runbook("printer")


def test_the_runbook_has_a_section_per_alarm_kind():
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("# ").strip().lower()).replace(" ", "-")
        for line in ALARMS_RUNBOOK.read_text().splitlines()
        if line.startswith("## ")
    }
    assert set(ALARM_KINDS) <= anchors
