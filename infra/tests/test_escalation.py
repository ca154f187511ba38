"""The escalation state machine as synthesised: firepipe's definition with the escalate
function's ARN substituted, a standard workflow, its role limited to invoking that function,
tracing and full logging.

Its control flow (each level waited for, escalated while the answer is "open", stopped by
"acknowledged" or "resolved", an unknown answer failing) is firepipe's own and tested there:
firepipe_tests/core/agents/test_escalation.py walks `state_machine_definition` over a fake
escalate function, and firepipe_tests/core/agents/test_escalation_asl_file.py holds the file
committed here equal to that definition, so the walk covers what is deployed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Template
from firepipe_infra import escalation
from firepipe_infra.config import ENVIRONMENTS


@pytest.fixture(scope="module")
def template(synthesised) -> Template:
    return synthesised.template("firepipe-dev-agents")


def _one(template: Template, kind: str) -> tuple[str, dict[str, Any]]:
    [(logical_id, resource)] = template.find_resources(kind).items()
    return logical_id, resource["Properties"]


def _escalate_function(template: Template) -> str:
    [logical_id] = [
        k
        for k, f in template.find_resources("AWS::Lambda::Function").items()
        if f["Properties"]["FunctionName"] == "firepipe-dev-agents-escalate"
    ]
    return logical_id


def test_the_definition_is_the_committed_file_with_the_escalate_functions_arn(template):
    _, machine = _one(template, "AWS::StepFunctions::StateMachine")
    assert json.loads(machine["DefinitionString"]) == json.loads(escalation.ASL_FILE.read_text())
    assert machine["DefinitionSubstitutions"] == {
        "EscalateFunctionArn": {"Fn::GetAtt": [_escalate_function(template), "Arn"]}
    }
    states = json.loads(machine["DefinitionString"])["States"]
    [task] = [s for s in states.values() if s["Type"] == "Task"]
    assert task["Parameters"]["FunctionName"] == "${EscalateFunctionArn}"
    assert machine["StateMachineName"] == "firepipe-dev-escalation"
    assert machine["StateMachineType"] == "STANDARD"  # waits longer than an express run lasts


def test_the_role_may_invoke_the_escalate_function_and_nothing_else(template):
    _, machine = _one(template, "AWS::StepFunctions::StateMachine")
    role_id = machine["RoleArn"]["Fn::GetAtt"][0]
    [policy] = [
        p["Properties"]
        for p in template.find_resources("AWS::IAM::Policy").values()
        if p["Properties"]["Roles"] == [{"Ref": role_id}]
    ]
    invokes = [
        s
        for s in policy["PolicyDocument"]["Statement"]
        if any(a.startswith("lambda:") for a in _actions(s))
    ]
    assert invokes == [
        {
            "Action": "lambda:InvokeFunction",
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [_escalate_function(template), "Arn"]},
        }
    ]
    role = template.find_resources("AWS::IAM::Role")[role_id]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "states.amazonaws.com"
    }


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def test_executions_are_traced_and_logged_in_full_to_an_encrypted_group(template):
    _, machine = _one(template, "AWS::StepFunctions::StateMachine")
    assert machine["TracingConfiguration"] == {"Enabled": True}
    logging = machine["LoggingConfiguration"]
    assert logging["Level"] == "ALL"
    assert logging["IncludeExecutionData"] is True
    [destination] = logging["Destinations"]
    group_id = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
    group = template.find_resources("AWS::Logs::LogGroup")[group_id]["Properties"]
    assert group["LogGroupName"] == "/aws/vendedlogs/states/firepipe-dev-escalation"
    assert "LogsKey" in group["KmsKeyId"]["Fn::ImportValue"]
    assert group["RetentionInDays"] == ENVIRONMENTS["dev"].log_retention_days


def test_a_definition_without_the_functions_substitution_is_refused(tmp_path, monkeypatch):
    stale = tmp_path / "escalation.asl.json"
    stale.write_text(
        escalation.ASL_FILE.read_text().replace(
            "${EscalateFunctionArn}", "arn:aws:lambda:eu-west-1:000000000000:function:escalate"
        )
    )
    monkeypatch.setattr(escalation, "ASL_FILE", stale)
    with pytest.raises(ValueError, match="does not invoke"):
        escalation.definition_text()
