"""The escalation state machine: one execution per unacknowledged alert, waiting for each level
and invoking the escalate Lambda (firepipe.core.agents.escalation).

The definition is firepipe's own, committed as `escalation.asl.json` (the infra app cannot import
firepipe): `state_machine_definition(arn)` with the function's ARN replaced by the substitution
`${EscalateFunctionArn}`. firepipe_tests/core/agents/test_escalation_asl_file.py fails when the
file and the core drift apart; regenerate it with

    .venv/bin/python -c 'import json; from firepipe.core.agents.escalation import
    state_machine_definition as d; print(json.dumps(d("arn:aws:lambda:eu-west-1:000000000000:
    function:escalate"), indent=2))'

and put the placeholder back in place of that ARN.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from firepipe_infra.config import EnvironmentConfig

ASL_FILE = Path(__file__).with_name("escalation.asl.json")
FUNCTION_ARN_SUBSTITUTION = "EscalateFunctionArn"


def definition_text() -> str:
    """The committed definition, checked to hold the function's substitution."""
    text = ASL_FILE.read_text()
    if "${" + FUNCTION_ARN_SUBSTITUTION + "}" not in text:
        raise ValueError(f"{ASL_FILE} does not invoke ${{{FUNCTION_ARN_SUBSTITUTION}}}")
    return text


class Escalation(Construct):
    """A standard workflow (an escalation waits minutes to hours; express workflows end after
    five minutes), named `state_machine_name` so that code elsewhere can know its ARN before it
    exists (the escalate function's own environment names it: a reference would be a cycle)."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        logs_key: kms.IKey,
        function: lambda_.IFunction,
        state_machine_name: str,
    ) -> None:
        super().__init__(scope, id)
        # Under /aws/vendedlogs/: Step Functions' log delivery then needs no CloudWatch Logs
        # resource policy per log group (the account's policy has a size limit).
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/vendedlogs/states/{state_machine_name}",
            encryption_key=logs_key,
            retention=config.log_retention,
            removal_policy=config.removal_policy,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("states.amazonaws.com"),
            description=f"{state_machine_name}: invokes the escalate function",
        )
        # The function itself, not `arn:*` as function.grant_invoke writes: the definition
        # invokes the unqualified ARN, so no version or alias is ever called.
        iam.Grant.add_to_principal(
            grantee=self.role,
            actions=["lambda:InvokeFunction"],
            resource_arns=[function.function_arn],
        )
        # DefinitionBody.from_file would upload the file as an S3 asset (DefinitionS3Location),
        # which needs the bootstrap bucket; the text inline is DefinitionString, reviewable in
        # the template, with CloudFormation substituting the ARN.
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=state_machine_name,
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_string(definition_text()),
            definition_substitutions={FUNCTION_ARN_SUBSTITUTION: function.function_arn},
            role=self.role,
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
            tracing_enabled=True,
        )
        default_policy = self.role.node.find_child("DefaultPolicy")
        Validations.of(default_policy).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason=(
                    "Step Functions' log delivery (logs:CreateLogDelivery and the rest) and X-Ray "
                    "(xray:PutTraceSegments) take no resource: AWS documents them on '*'. The "
                    "Lambda invoke is limited to the escalate function's ARN."
                ),
            )
        )
