"""Agents and messaging: queues, topics and subscriptions, tables, the agents as Lambda functions
and as ECS services, their grants, and cdk-nag. Dev is synthesised in the default mode (ECS
workers consume), prod in Lambda mode, so one synthesis shows both modes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk.assertions import Template
from cfn_refs import imported
from firepipe_infra.agents import DEFAULT_MODE, Agents, AgentsMode
from firepipe_infra.agents_source import read_agents_source
from firepipe_infra.config import ENVIRONMENTS
from firepipe_infra.stacks import (
    NetworkStack,
    RegistryStack,
    SecurityStack,
    _EnvironmentStack,
    cdk_context,
)

QUEUES = {"monitoring": "readings", "analysis": "scores", "response": "incidents"}
HANDLERS = {
    agent: f"firepipe.services.agents.lambdas.{agent}"
    for agent in ("monitoring", "analysis", "response", "escalate")
}


@pytest.fixture(scope="module")
def template(synthesised) -> Template:
    return synthesised.template("firepipe-dev-agents")


@pytest.fixture(scope="module")
def lambda_template() -> Template:
    """prod's agents in Lambda mode: the wired app deploys the default mode (ECS workers) in
    every environment, so this mode is built alone on prod's base stacks in a scratch App
    (without cdk-nag: test_app.py's whole-app synthesis checks the construct)."""
    config = ENVIRONMENTS["prod"]
    app = App(context=cdk_context())
    security = SecurityStack(app, config).security
    stack = _EnvironmentStack(app, "agents", config)
    Agents(
        stack,
        "Agents",
        config=config,
        security=security,
        network=NetworkStack(app, config, security).network,
        registry=RegistryStack(app, config).registry,
        mode=AgentsMode.LAMBDA,
    )
    return Template.from_stack(stack)


@pytest.fixture(scope="module")
def run_role(synthesised) -> list[dict[str, Any]]:
    """The statements of Dagster's run role (its default and overflow policies), which the
    orchestration stack grants `Agents.grant_use`."""
    template = synthesised.template("firepipe-dev-orchestration")
    role = synthesised.stacks["dev"].orchestration.orchestration.run_role
    role_id = Stack.of(role).resolve(role.node.default_child.logical_id)
    return [
        s
        for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
        for p in _resources(template, kind).values()
        if {"Ref": role_id} in p.get("Roles", [])
        for s in p["PolicyDocument"]["Statement"]
    ]


def _resources(template: Template, kind: str) -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in template.find_resources(kind).items()}


def _by(template: Template, kind: str, field: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Resources of `kind` by the value of `field`: {value: (logical id, properties)}."""
    return {p[field]: (k, p) for k, p in _resources(template, kind).items()}


def _arn(logical_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def _statements(template: Template, role_prefix: str) -> list[dict[str, Any]]:
    [policy] = [
        p for k, p in _resources(template, "AWS::IAM::Policy").items() if k.startswith(role_prefix)
    ]
    return policy["PolicyDocument"]["Statement"]


def _granted(statements: list[dict[str, Any]], action: str) -> list[Any]:
    """The resources of every statement that allows `action`."""
    found = []
    for s in statements:
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        if action in actions:
            found += s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
    return found


# --- firepipe's expectations, read from its sources ----------------------------------------------


def test_the_agents_queues_and_handlers_are_read_from_firepipe():
    source = read_agents_source()
    assert source.queue_of == QUEUES
    assert source.subscriptions == {
        "scores": {"kind": ["scores"]},
        "incidents": {"kind": ["incident"]},
    }
    assert source.handlers == HANDLERS
    assert source.worker_command("analysis") == [
        "python",
        "-m",
        "firepipe.services.agents.worker",
        "analysis",
    ]
    with pytest.raises(KeyError, match="no agent 'escalate'"):
        source.worker_command("escalate")


# --- queues, topics, subscriptions ---------------------------------------------------------------


def test_queues_are_fifo_named_as_firepipe_names_them_with_a_redrive_to_their_dlq(template):
    queues = _by(template, "AWS::SQS::Queue", "QueueName")
    [(key_id, _)] = template.find_resources("AWS::KMS::Key").items()
    function_timeout = max(
        p["Timeout"] for p in _resources(template, "AWS::Lambda::Function").values()
    )
    assert sorted(queues) == sorted(
        f"firepipe-dev-{name}{suffix}.fifo" for name in QUEUES.values() for suffix in ("", "-dlq")
    )
    for name in QUEUES.values():
        _, queue = queues[f"firepipe-dev-{name}.fifo"]
        dlq_id, dlq = queues[f"firepipe-dev-{name}-dlq.fifo"]
        for q in (queue, dlq):
            assert q["FifoQueue"] is True
            assert q["ContentBasedDeduplication"] is False  # firepipe sends its own ids
            assert (q["DeduplicationScope"], q["FifoThroughputLimit"]) == (
                "messageGroup",
                "perMessageGroupId",
            )
            assert q["KmsMasterKeyId"] == _arn(key_id)
        assert queue["RedrivePolicy"] == {"deadLetterTargetArn": _arn(dlq_id), "maxReceiveCount": 5}
        assert queue["VisibilityTimeout"] >= 6 * function_timeout == 360
        assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_every_queue_and_topic_refuses_plain_http(template):
    denied = set()
    for kind, listed in (("AWS::SQS::QueuePolicy", "Queues"), ("AWS::SNS::TopicPolicy", "Topics")):
        for policy in _resources(template, kind).values():
            for s in policy["PolicyDocument"]["Statement"]:
                if s["Effect"] == "Deny" and s["Condition"] == {
                    "Bool": {"aws:SecureTransport": "false"}
                }:
                    denied |= {ref["Ref"] for ref in policy[listed]}
    assert denied == set(template.find_resources("AWS::SQS::Queue")) | set(
        template.find_resources("AWS::SNS::Topic")
    )


def test_the_events_topic_fans_out_to_the_queues_runtime_wire_subscribes(template):
    topics = _by(template, "AWS::SNS::Topic", "TopicName")
    queues = _by(template, "AWS::SQS::Queue", "QueueName")
    events_id, events = topics["firepipe-dev-agent-events.fifo"]
    assert events["FifoTopic"] is True
    assert events["FifoThroughputScope"] == "MessageGroup"
    subscriptions = {
        p["Endpoint"]["Fn::GetAtt"][0]: p
        for p in _resources(template, "AWS::SNS::Subscription").values()
    }
    assert subscriptions == {
        queues["firepipe-dev-scores.fifo"][0]: {
            "Endpoint": _arn(queues["firepipe-dev-scores.fifo"][0]),
            "Protocol": "sqs",
            "RawMessageDelivery": True,
            "FilterPolicy": {"kind": ["scores"]},
            "TopicArn": {"Ref": events_id},
        },
        queues["firepipe-dev-incidents.fifo"][0]: {
            "Endpoint": _arn(queues["firepipe-dev-incidents.fifo"][0]),
            "Protocol": "sqs",
            "RawMessageDelivery": True,
            "FilterPolicy": {"kind": ["incident"]},
            "TopicArn": {"Ref": events_id},
        },
    }
    # SNS may send to each subscribed queue, from this topic only; the readings queue is fed by
    # producers, not the topic.
    senders = {}
    for policy in _resources(template, "AWS::SQS::QueuePolicy").values():
        for s in policy["PolicyDocument"]["Statement"]:
            if s.get("Principal") == {"Service": "sns.amazonaws.com"}:
                assert s["Action"] == "sqs:SendMessage"
                assert s["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Ref": events_id}}}
                senders[policy["Queues"][0]["Ref"]] = s
    assert set(senders) == {
        queues["firepipe-dev-scores.fifo"][0],
        queues["firepipe-dev-incidents.fifo"][0],
    }


def test_sns_may_use_the_messaging_key_for_the_events_topic_only(template):
    [key] = _resources(template, "AWS::KMS::Key").values()
    assert key["EnableKeyRotation"] is True
    [sns_statement] = [
        s
        for s in key["KeyPolicy"]["Statement"]
        if s["Principal"] == {"Service": "sns.amazonaws.com"}
    ]
    assert sns_statement["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]
    # The topic's ARN as CloudFormation will make it (by name: a Ref would be a cycle).
    assert sns_statement["Condition"] == {
        "ArnEquals": {
            "aws:SourceArn": "arn:aws:sns:eu-west-1:111111111111:firepipe-dev-agent-events.fifo"
        }
    }
    template.has_resource_properties(
        "AWS::KMS::Alias", {"AliasName": "alias/firepipe-dev-messaging"}
    )


def test_the_notifications_topic_is_standard_encrypted_and_left_without_subscribers(template):
    topics = _by(template, "AWS::SNS::Topic", "TopicName")
    notifications_id, notifications = topics["firepipe-dev-notifications"]
    assert "FifoTopic" not in notifications  # e-mail, SMS and chat take standard topics only
    [(key_id, _)] = template.find_resources("AWS::KMS::Key").items()
    assert notifications["KmsMasterKeyId"] == _arn(key_id)
    subscribed = {
        p["TopicArn"]["Ref"] for p in _resources(template, "AWS::SNS::Subscription").values()
    }
    assert notifications_id not in subscribed


# --- tables --------------------------------------------------------------------------------------


TABLE_KEYS = {
    "firepipe-dev-agent-state": [("key", "S", "HASH")],
    "firepipe-dev-agent-history": [("key", "S", "HASH"), ("version", "N", "RANGE")],
    "firepipe-dev-agent-idempotency": [("id", "S", "HASH")],
    "firepipe-dev-generation-history": [("asset_key", "S", "HASH"), ("record_id", "S", "RANGE")],
}


def test_tables_have_the_keys_firepipes_adapters_create(template):
    tables = _by(template, "AWS::DynamoDB::Table", "TableName")
    assert sorted(tables) == sorted(TABLE_KEYS)
    for name, keys in TABLE_KEYS.items():
        _, table = tables[name]
        types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
        assert [
            (k["AttributeName"], types[k["AttributeName"]], k["KeyType"])
            for k in table["KeySchema"]
        ] == keys
    _, generation = tables["firepipe-dev-generation-history"]
    [lsi] = generation["LocalSecondaryIndexes"]
    [gsi] = generation["GlobalSecondaryIndexes"]
    assert (lsi["IndexName"], lsi["KeySchema"]) == (
        "by_started_at",
        [
            {"AttributeName": "asset_key", "KeyType": "HASH"},
            {"AttributeName": "started_at", "KeyType": "RANGE"},
        ],
    )
    assert (gsi["IndexName"], gsi["KeySchema"]) == (
        "all_by_started_at",
        [
            {"AttributeName": "entity", "KeyType": "HASH"},
            {"AttributeName": "started_at", "KeyType": "RANGE"},
        ],
    )
    assert tables["firepipe-dev-agent-idempotency"][1]["TimeToLiveSpecification"] == {
        "AttributeName": "expiration",
        "Enabled": True,
    }


@pytest.mark.parametrize(
    ("env", "protected", "policy"), [("dev", False, "Delete"), ("prod", True, "Retain")]
)
def test_tables_are_on_demand_recoverable_encrypted_and_protected_per_environment(
    synthesised, env, protected, policy
):
    tables = synthesised.template(f"firepipe-{env}-agents").find_resources("AWS::DynamoDB::Table")
    assert len(tables) == 4
    for table in tables.values():
        props = table["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props["SSESpecification"]["SSEType"] == "KMS"
        assert "DataKey" in props["SSESpecification"]["KMSMasterKeyId"]["Fn::ImportValue"]
        assert props["DeletionProtectionEnabled"] is protected
        assert table["DeletionPolicy"] == policy


# --- the agents as Lambda functions and ECS services ---------------------------------------------


def test_each_function_runs_its_handler_from_the_agents_lambda_image(template):
    functions = _by(template, "AWS::Lambda::Function", "FunctionName")
    assert sorted(functions) == sorted(f"firepipe-dev-agents-{a}" for a in HANDLERS)
    for agent, handler in HANDLERS.items():
        _, f = functions[f"firepipe-dev-agents-{agent}"]
        assert f["ImageConfig"] == {"Command": [handler]}
        uri = f["Code"]["ImageUri"]["Fn::Join"][1]
        assert "RegistryAgentsLambda" in uri[-2]["Fn::ImportValue"]  # the repository's name
        assert uri[-1] == ":unpublished"  # the registry's tag (no imageTag in the context)
        assert f["TracingConfig"] == {"Mode": "Active"}
        assert len(f["VpcConfig"]["SubnetIds"]) == 2
        assert all("privateSubnet" in s["Fn::ImportValue"] for s in f["VpcConfig"]["SubnetIds"])
        assert f["ReservedConcurrentExecutions"] >= 2
        log_group = template.find_resources("AWS::Logs::LogGroup")[
            f["LoggingConfig"]["LogGroup"]["Ref"]
        ]
        assert "LogsKey" in log_group["Properties"]["KmsKeyId"]["Fn::ImportValue"]
        env = f["Environment"]["Variables"]
        assert env["FIREPIPE_ENV"] == "aws"
        assert env["POWERTOOLS_SERVICE_NAME"] == "firepipe-agents"
        assert env["FIREPIPE_QUEUE_PREFIX"] == "firepipe-dev-"
        assert env["FIREPIPE_QUEUE_FIFO"] == "true"
        assert env["FIREPIPE_MAX_RECEIVES"] == "5"  # as the redrive's maxReceiveCount
        assert "AWS_REGION" not in env  # Lambda's own, and refused as a variable


# The wired app's dev (the default mode, ECS workers) and prod built in Lambda mode.
MODES = [("template", "dev", AgentsMode.ECS), ("lambda_template", "prod", AgentsMode.LAMBDA)]


def test_the_wired_app_deploys_the_default_mode_ecs_workers(synthesised):
    assert DEFAULT_MODE is AgentsMode.ECS
    assert {s.agents.agents.mode for s in synthesised.stacks.values()} == {AgentsMode.ECS}


@pytest.mark.parametrize(("fixture", "env", "mode"), MODES)
def test_event_sources_report_batch_item_failures_and_run_in_lambda_mode_only(
    request, fixture, env, mode
):
    t, enabled = request.getfixturevalue(fixture), mode is AgentsMode.LAMBDA
    queues = {k: p["QueueName"] for k, p in _resources(t, "AWS::SQS::Queue").items()}
    functions = {k: p for k, p in _resources(t, "AWS::Lambda::Function").items()}
    mappings = _resources(t, "AWS::Lambda::EventSourceMapping").values()
    read = {}
    for m in mappings:
        assert m["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert m["BatchSize"] == 10
        assert m["Enabled"] is enabled
        function = functions[m["FunctionName"]["Ref"]]
        assert m["ScalingConfig"]["MaximumConcurrency"] == function["ReservedConcurrentExecutions"]
        read[function["FunctionName"]] = queues[m["EventSourceArn"]["Fn::GetAtt"][0]]
    assert read == {
        f"firepipe-{env}-agents-{agent}": f"firepipe-{env}-{name}.fifo"
        for agent, name in QUEUES.items()
    }


@pytest.mark.parametrize(("fixture", "env", "mode"), MODES)
def test_each_agent_runs_as_an_ecs_worker_scaled_by_mode(request, fixture, env, mode):
    t, desired = request.getfixturevalue(fixture), 1 if mode is AgentsMode.ECS else 0
    tasks = _resources(t, "AWS::ECS::TaskDefinition")
    services = _by(t, "AWS::ECS::Service", "ServiceName")
    assert sorted(services) == sorted(f"firepipe-{env}-agents-{a}" for a in QUEUES)
    for agent in QUEUES:
        _, service = services[f"firepipe-{env}-agents-{agent}"]
        assert service["DesiredCount"] == desired
        assert service["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {
            "Enable": True,
            "Rollback": True,
        }
        assert (
            service["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
        )
        assert "NetworkCluster" in service["Cluster"]["Fn::ImportValue"]
        [container] = tasks[service["TaskDefinition"]["Ref"]]["ContainerDefinitions"]
        assert container["Command"] == ["python", "-m", "firepipe.services.agents.worker", agent]
        assert "RegistryAgents1" in json.dumps(container["Image"])  # the worker image, not Lambda's
        variables = {v["Name"]: v["Value"] for v in container["Environment"]}
        assert variables["AWS_REGION"] == "eu-west-1"
        assert variables["FIREPIPE_ENV"] == "aws"
        logging = container["LogConfiguration"]
        assert logging["LogDriver"] == "awslogs"
        group = t.find_resources("AWS::Logs::LogGroup")[logging["Options"]["awslogs-group"]["Ref"]]
        assert "LogsKey" in group["Properties"]["KmsKeyId"]["Fn::ImportValue"]


def test_add_environment_reaches_every_function_and_worker(synthesised, template):
    """The agents stack hands every agent the ML concern's tracking server (the champion's
    registry), imported from the ML stack's export."""
    ml = synthesised.template("firepipe-dev-ml")
    [server_id] = ml.find_resources("AWS::SageMaker::MlflowTrackingServer")
    tracking = imported(ml, {"Fn::GetAtt": [server_id, "TrackingServerArn"]})
    functions = _resources(template, "AWS::Lambda::Function").values()
    assert [
        f["Environment"]["Variables"]["FIREPIPE_MLFLOW_TRACKING_SERVER_ARN"] for f in functions
    ] == [tracking] * 4
    tasks = _resources(template, "AWS::ECS::TaskDefinition").values()
    for task in tasks:
        [container] = task["ContainerDefinitions"]
        assert {"Name": "FIREPIPE_MLFLOW_TRACKING_SERVER_ARN", "Value": tracking} in container[
            "Environment"
        ]
    assert len(tasks) == 3


def test_the_environment_names_every_resource_firepipe_reads(synthesised, template):
    agents = synthesised.stacks["dev"].agents.agents
    resolve = agents.node.scope.resolve  # the agents stack
    env = {name: resolve(value) for name, value in agents.environment.items()}
    tables = {p["TableName"]: k for k, p in _resources(template, "AWS::DynamoDB::Table").items()}
    topics = {p["TopicName"]: k for k, p in _resources(template, "AWS::SNS::Topic").items()}
    assert env == {
        "FIREPIPE_QUEUE_PREFIX": "firepipe-dev-",
        "FIREPIPE_QUEUE_FIFO": "true",
        "FIREPIPE_EVENTS_TOPIC_ARN": {"Ref": topics["firepipe-dev-agent-events.fifo"]},
        "FIREPIPE_NOTIFICATIONS_TOPIC_ARN": {"Ref": topics["firepipe-dev-notifications"]},
        "FIREPIPE_STATE_TABLE": {"Ref": tables["firepipe-dev-agent-state"]},
        "FIREPIPE_STATE_HISTORY_TABLE": {"Ref": tables["firepipe-dev-agent-history"]},
        "FIREPIPE_IDEMPOTENCY_TABLE": {"Ref": tables["firepipe-dev-agent-idempotency"]},
        "FIREPIPE_GENERATION_HISTORY_TABLE": {"Ref": tables["firepipe-dev-generation-history"]},
        "FIREPIPE_ESCALATION_STATE_MACHINE_ARN": (
            "arn:aws:states:eu-west-1:111111111111:stateMachine:firepipe-dev-escalation"
        ),
        "FIREPIPE_MAX_RECEIVES": "5",
    }
    template.has_resource_properties(
        "AWS::StepFunctions::StateMachine", {"StateMachineName": "firepipe-dev-escalation"}
    )


# --- grants --------------------------------------------------------------------------------------


def test_each_agent_holds_only_what_its_code_calls(template):
    queues = {p["QueueName"]: k for k, p in _resources(template, "AWS::SQS::Queue").items()}
    topics = {p["TopicName"]: k for k, p in _resources(template, "AWS::SNS::Topic").items()}
    tables = {p["TableName"]: k for k, p in _resources(template, "AWS::DynamoDB::Table").items()}
    events, notifications = (
        {"Ref": topics["firepipe-dev-agent-events.fifo"]},
        {"Ref": topics["firepipe-dev-notifications"]},
    )
    state = [_arn(tables["firepipe-dev-agent-history"]), _arn(tables["firepipe-dev-agent-state"])]
    idempotency = _arn(tables["firepipe-dev-agent-idempotency"])
    machine = "arn:aws:states:eu-west-1:111111111111:stateMachine:firepipe-dev-escalation"
    expected = {
        "Monitoring": ("readings", [events], [idempotency], []),
        "Analysis": ("scores", [events], [idempotency, *state], []),
        "Response": ("incidents", [notifications], [idempotency, *state], [machine]),
    }
    for agent, (queue, published, rows, started) in expected.items():
        for role in (f"Agents{agent}TaskTaskRole", f"Agents{agent}FunctionRole"):
            statements = _statements(template, role)
            assert _granted(statements, "sqs:ReceiveMessage") == [
                _arn(queues[f"firepipe-dev-{queue}.fifo"])
            ]
            assert _granted(statements, "sqs:SendMessage") == [
                _arn(queues[f"firepipe-dev-{queue}-dlq.fifo"])
            ]
            assert _granted(statements, "sns:Publish") == published
            assert sorted(map(json.dumps, _granted(statements, "dynamodb:PutItem"))) == sorted(
                map(json.dumps, rows)
            )
            assert _granted(statements, "states:StartExecution") == started
    escalate = _statements(template, "AgentsEscalateFunctionRole")
    assert _granted(escalate, "sqs:ReceiveMessage") == []
    assert _granted(escalate, "sns:Publish") == [notifications]
    assert sorted(map(json.dumps, _granted(escalate, "dynamodb:UpdateItem"))) == sorted(
        map(json.dumps, state)
    )


def test_table_keys_are_used_through_dynamodb_and_messaging_keys_through_sqs_and_sns(template):
    [(key_id, _)] = template.find_resources("AWS::KMS::Key").items()
    data_key = {
        "Fn::ImportValue": "firepipe-dev-security:"
        "ExportsOutputFnGetAttSecurityDataKeyA8BBAEFFArnA6346D5A"
    }
    uses = set()
    for statement in _statements(template, "AgentsResponseTaskTaskRole"):
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        if any(a.startswith("kms:") for a in actions):
            assert "*" not in json.dumps(actions)
            via = statement["Condition"]["StringEquals"]["kms:ViaService"]
            uses.add((json.dumps(statement["Resource"]), json.dumps(via)))
    assert uses == {
        (json.dumps(data_key), json.dumps("dynamodb.eu-west-1.amazonaws.com")),
        (
            json.dumps(_arn(key_id)),
            json.dumps(["sqs.eu-west-1.amazonaws.com", "sns.eu-west-1.amazonaws.com"]),
        ),
        # The agents stack's grant of the ML concern's read of the champion (grant_read_models).
        (json.dumps(data_key), json.dumps("s3.eu-west-1.amazonaws.com")),
    }


def test_grant_use_writes_the_users_own_policy_with_every_queue_topic_table_and_escalation(
    run_role, template
):
    statements = run_role

    def exported(action: str) -> list[str]:
        """The agents stack's exports a statement allowing `action` names."""
        return sorted(
            json.dumps(r).split("ExportsOutput")[1].split("Arn")[0]
            for r in _granted(statements, action)
        )

    queues = [f"Agents{t}" for t in ("MessagingIncidents", "MessagingReadings", "MessagingScores")]
    assert len(exported("sqs:ReceiveMessage")) == 3
    assert all(any(q in e for q in queues) and "Queue" in e for e in exported("sqs:ReceiveMessage"))
    assert sum("DeadLetters" in e for e in exported("sqs:SendMessage")) == 3
    assert len(exported("sqs:SendMessage")) == 6
    assert len(_granted(statements, "sns:Publish")) == 2
    indexes = [r for r in _granted(statements, "dynamodb:Query") if "/index/" in json.dumps(r)]
    assert len(_granted(statements, "dynamodb:Query")) == 4 + len(indexes) == 6
    assert _granted(statements, "states:StartExecution") == [
        "arn:aws:states:eu-west-1:111111111111:stateMachine:firepipe-dev-escalation"
    ]
    # Nothing in the agents stack names the user (Dagster's run role, in a later stack).
    assert "OrchestrationRunRole" not in json.dumps(template.to_json())
    assert "orchestration" not in json.dumps(template.to_json())


# --- cdk-nag -------------------------------------------------------------------------------------


def test_the_agents_pass_cdk_nag(synthesised):
    report = json.loads((synthesised.outdir / "validation-report.json").read_text())
    assert {p["conclusion"] for p in report["pluginReports"]} == {"success"}
