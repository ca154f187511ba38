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


def test_failure_rules_publish_through_a_role_of_this_account_only(watched):
    """Neither the topic's nor the key's policy admits EventBridge itself (that grant would
    carry no source condition): the rules publish through a role only this account's
    EventBridge may assume, with the exact calls an encrypted topic takes."""
    observability, stack = watched
    template = Template.from_stack(stack).to_json()["Resources"]
    role_id = stack.get_logical_id(observability.events_role.node.default_child)
    assert template[role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Action": "sts:AssumeRole",
            "Condition": {
                "StringEquals": {"aws:SourceAccount": "111111111111"},
                "ArnLike": {
                    "aws:SourceArn": "arn:aws:events:eu-west-1:111111111111:rule/firepipe-dev-*"
                },
            },
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
        }
    ]
    rules = [r for r in template.values() if r["Type"] == "AWS::Events::Rule"]
    targets = [t for r in rules for t in r["Properties"].get("Targets", [])]
    assert targets
    assert all(t["RoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]} for t in targets)
    # Each rule is created after the role's policy, which it publishes with.
    policy_id = stack.get_logical_id(
        observability.events_role.node.find_child("DefaultPolicy").node.default_child
    )
    for rule in (r for r in rules if r["Properties"].get("Targets")):
        assert policy_id in rule["DependsOn"]
    [policy] = [
        r["Properties"]["PolicyDocument"]["Statement"]
        for r in template.values()
        if r["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in r["Properties"]["Roles"]
    ]
    assert sorted(
        (tuple(s["Action"]) if isinstance(s["Action"], list) else (s["Action"],)) for s in policy
    ) == [("kms:Decrypt", "kms:GenerateDataKey"), ("sns:Publish",)]
    policies = {"AWS::KMS::Key": "KeyPolicy", "AWS::SNS::TopicPolicy": "PolicyDocument"}
    for resource in (r for r in template.values() if r["Type"] in policies):
        assert "events.amazonaws.com" not in str(resource["Properties"][policies[resource["Type"]]])


def test_a_failure_rules_lost_deliveries_raise_an_alarm_of_their_own(watched):
    _, stack = watched
    template = Template.from_stack(stack)
    [rule_id] = [
        k
        for k, r in template.find_resources("AWS::Events::Rule").items()
        if r["Properties"].get("Name") == "firepipe-dev-generator-gpu-failed"
    ]
    [alarm] = [
        a["Properties"]
        for a in template.find_resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("AlarmName") == "firepipe-dev-generator-gpu-failed-deliveries"
    ]
    assert alarm["Namespace"] == "AWS/Events"
    assert alarm["MetricName"] == "FailedInvocations"
    assert alarm["Dimensions"] == [{"Name": "RuleName", "Value": {"Ref": rule_id}}]
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["Threshold"] == 0
    assert alarm["TreatMissingData"] == "notBreaching"
    assert len(alarm["AlarmActions"]) == 1
    assert runbook("batch-job") in alarm["AlarmDescription"]


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


def test_every_service_of_the_environment_has_alarms_of_its_own(synthesised):
    """Each ECS service, Lambda function, queue, table, state machine, database, API and Glue
    job the environment deploys is watched under its own name, with alarms named after it
    that notify the alarm topic; Batch and EMR Serverless by failure events."""
    observability = synthesised.stacks["dev"].observability
    [watcher] = [c for c in observability.node.children if isinstance(c, Observability)]
    templates = {
        concern: synthesised.template(f"firepipe-dev-{concern}")
        for concern in ("orchestration", "api", "agents", "bedrock-agent", "compute", "lake")
    }

    def count(kind):
        return sum(len(t.find_resources(kind)) for t in templates.values())

    watched = watcher.watched
    assert len(watched["service"]) == count("AWS::ECS::Service") == 8
    assert len(watched["function"]) == count("AWS::Lambda::Function") - _helper_functions(templates)
    assert len(watched["queue"]) == len(synthesised.stacks["dev"].agents.agents.messaging.queues)
    assert len(watched["table"]) == count("AWS::DynamoDB::Table") + count(
        "AWS::DynamoDB::GlobalTable"
    )
    assert len(watched["state-machine"]) == count("AWS::StepFunctions::StateMachine") == 1
    assert len(watched["database"]) == count("AWS::RDS::DBInstance") == 1
    assert len(watched["api"]) == count("AWS::ApiGateway::RestApi") == 1
    assert len(watched["glue-job"]) == count("AWS::Glue::Job") == 1
    assert len(watched["batch-job"]) == count("AWS::Batch::JobQueue") == 2

    template = synthesised.template("firepipe-dev-observability")
    alarms = [a["Properties"] for a in template.find_resources("AWS::CloudWatch::Alarm").values()]
    names = [a["AlarmName"] for a in alarms]
    for kind, services in watched.items():
        if kind in ("batch-job", "emr-job"):
            continue  # failure events, below
        for name in services:
            assert [n for n in names if n.startswith(f"firepipe-dev-{name}-")], (kind, name)
    topic = next(iter(template.find_resources("AWS::SNS::Topic")))
    assert all(a["AlarmActions"] == [{"Ref": topic}] for a in alarms)
    rules = [r["Properties"] for r in template.find_resources("AWS::Events::Rule").values()]
    failed = [r for r in rules if r.get("Name", "").endswith("-failed")]
    assert len(failed) == len(watched["batch-job"]) + len(watched["emr-job"]) == 3


def _helper_functions(templates) -> int:
    """Functions the CDK adds for itself (custom resources' providers), not firepipe's."""
    return sum(
        1
        for t in templates.values()
        for f in t.find_resources("AWS::Lambda::Function").values()
        if "PackageType" not in f["Properties"]
    )
