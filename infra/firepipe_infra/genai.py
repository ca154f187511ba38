"""Generative AI: the Bedrock agent that turns requests in words into calls of firepipe's
action API, over the knowledge base of firepipe's documents (knowledge_base.py). Its action
group is the committed OpenAPI document (docs/openapi/actions.json, as text) served by the
action-group Lambda function (the agents' Lambda image with the Bedrock handler).

firepipe's side (firepipe/resources/knowledge_base.py, agent_runtime.py) reads the ids of
`environment` and needs `grant_use`: `sync` uploads the documents and starts ingestion jobs,
`search` retrieves, `firepipe agent ask` invokes the agent's alias.
"""

from __future__ import annotations

import hashlib

from aws_cdk import Acknowledgment, Duration, Stack, Validations
from aws_cdk import aws_bedrock as bedrock
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from firepipe_infra.config import EnvironmentConfig
from firepipe_infra.env_names import AWS_ENV_MODULE, env_name
from firepipe_infra.grants import grant_vpc_function
from firepipe_infra.knowledge_base import KnowledgeBase, bedrock_principal, foundation_model_arn
from firepipe_infra.naming import IN_AWS
from firepipe_infra.network import Network
from firepipe_infra.registry import Registry
from firepipe_infra.security import Security

OPENAPI_DOCUMENT = AWS_ENV_MODULE.parents[2] / "docs" / "openapi" / "actions.json"
# Claude Sonnet 4.5 through the EU cross-region inference profile: Anthropic's current models
# are invoked on demand through a profile only, and this one keeps requests from eu-west-1 in
# EU regions.
AGENT_MODEL = "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"
AGENT_FOUNDATION_MODEL = AGENT_MODEL.removeprefix("eu.")
ACTION_HANDLER = "firepipe.services.actions.bedrock_lambda.handler"
AGENT_INSTRUCTION = (
    "You are firepipe's synthetic-data assistant. Turn each request into calls of the "
    "firepipe actions: generateSyntheticData for a table of rows from a schema (data_type "
    "custom) or for fire-sensor scenarios of the nuisance, smouldering, flaming and baseline "
    "families (data_type fire_scenarios, landed in the lake by Dagster runs); validateSchema "
    "to check a schema, with GDPR, HIPAA or PCI-DSS notes when asked; calculateQualityMetrics "
    "to measure rows or a fire generation; getGeneration and listGenerations to follow "
    "generations; searchKnowledgeBase for questions about firepipe, its sensors, the fire "
    "physics and the NIST tests. Leave out what the user did not give so the action's own "
    "defaults apply, and say which defaults were used. Never invent a generation id, a count "
    "or a metric: report what the actions answered, with their warnings. When a generation "
    "is still running, give its id and say that its status can be asked for."
)
ACTION_TIMEOUT = Duration.minutes(2)  # a quality measure of a fire generation reads the lake
ACTION_MEMORY_MIB = 2048


class GenerativeAi(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        security: Security,
        network: Network,
        registry: Registry,
        knowledge_base: KnowledgeBase,
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        self._security = security
        # The knowledge base is a stack of its own, before Dagster's (whose runs sync it); the
        # agent comes after Dagster's, whose instance its action group queues runs on.
        self.knowledge_base = knowledge_base
        self.action_log_group = logs.LogGroup(
            self,
            "ActionFunctionLogs",
            encryption_key=security.logs_key,
            retention=config.log_retention,
            removal_policy=config.removal_policy,
        )
        self.action_function = self._action_function(config, network, registry)
        self.openapi_text = OPENAPI_DOCUMENT.read_text()
        self.agent_role = iam.Role(
            self,
            "AgentRole",
            assumed_by=bedrock_principal(stack, "agent"),
            description=f"{config.prefix}: the agent calls its model and the knowledge base",
        )
        self._grant_agent_role(stack)
        self.agent = bedrock.CfnAgent(
            self,
            "Agent",
            agent_name=f"{config.prefix}-generator",
            description="Synthetic data from requests in words (firepipe's action API)",
            agent_resource_role_arn=self.agent_role.role_arn,
            foundation_model=AGENT_MODEL,
            instruction=AGENT_INSTRUCTION,
            idle_session_ttl_in_seconds=1800,
            auto_prepare=True,
            customer_encryption_key_arn=security.data_key.key_arn,
            action_groups=[
                bedrock.CfnAgent.AgentActionGroupProperty(
                    action_group_name="firepipe-actions",
                    description="Generate, validate and measure synthetic data; follow "
                    "generations; search firepipe's documents",
                    action_group_state="ENABLED",
                    action_group_executor=bedrock.CfnAgent.ActionGroupExecutorProperty(
                        lambda_=self.action_function.function_arn
                    ),
                    api_schema=bedrock.CfnAgent.APISchemaProperty(payload=self.openapi_text),
                )
            ],
            knowledge_bases=[
                bedrock.CfnAgent.AgentKnowledgeBaseProperty(
                    knowledge_base_id=self.knowledge_base.knowledge_base.attr_knowledge_base_id,
                    description="firepipe's documents: how the platform, its sensors, the "
                    "fire scenarios and the NIST tests work",
                    knowledge_base_state="ENABLED",
                )
            ],
        )
        # Prepared on creation: its role must already hold its grants.
        self.agent.node.add_dependency(self.agent_role)
        # An alias without a routing configuration gets a new version of the agent whenever
        # the alias changes: its description carries a digest of what defines the agent, so
        # a new instruction, model or OpenAPI document reaches the alias in the same deploy.
        self.agent_alias = bedrock.CfnAgentAlias(
            self,
            "AgentAlias",
            agent_id=self.agent.attr_agent_id,
            agent_alias_name="live",
            description=f"firepipe {config.name}, agent {self.definition_digest}",
        )
        self.action_function.add_permission(
            "BedrockAgent",
            principal=iam.ServicePrincipal("bedrock.amazonaws.com"),
            action="lambda:InvokeFunction",
            source_account=stack.account,
            source_arn=self.agent.attr_agent_arn,
        )
        for resource in (self.agent, self.agent_alias):
            resource.apply_removal_policy(config.removal_policy)
        self.environment: dict[str, str] = {
            **self.knowledge_base.environment,
            env_name("AGENT_ID_VAR"): self.agent.attr_agent_id,
            env_name("AGENT_ALIAS_ID_VAR"): self.agent_alias.attr_agent_alias_id,
        }

    @property
    def definition_digest(self) -> str:
        text = "\n".join((AGENT_MODEL, AGENT_INSTRUCTION, self.openapi_text))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def grant_use(self, grantee: iam.IGrantable) -> None:
        """What firepipe's code calls: the knowledge base's Retrieve and `sync` (documents and
        ingestion jobs), and InvokeAgent on the alias (with the agent's key)."""
        self.knowledge_base.grant_retrieve(grantee)
        self.knowledge_base.grant_sync(grantee)
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["bedrock:InvokeAgent"],
            resource_arns=[self.agent_alias.attr_agent_alias_arn],
        )
        self._grant_agent_key(grantee, self.agent.attr_agent_arn)

    def _grant_agent_key(self, grantee: iam.IGrantable, agent_arn: str) -> iam.Grant:
        """The data key for what Bedrock encrypts for this agent (sessions, its definition):
        only in that agent's encryption context."""
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["kms:GenerateDataKey", "kms:Decrypt"],
            resource_arns=[self._security.data_key.key_arn],
            conditions={"StringLike": {"kms:EncryptionContext:aws:bedrock:arn": agent_arn}},
        )

    def _grant_agent_role(self, stack: Stack) -> None:
        role = self.agent_role
        profile_arn = (
            f"arn:{stack.partition}:bedrock:{stack.region}:{stack.account}:"
            f"inference-profile/{AGENT_MODEL}"
        )
        invoke = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]
        iam.Grant.add_to_principal(
            grantee=role,
            actions=[*invoke, "bedrock:GetInferenceProfile"],
            resource_arns=[profile_arn],
        )
        # The profile routes each request to one of its EU regions' copy of the model: any
        # region's, but only through this profile.
        iam.Grant.add_to_principal(
            grantee=role,
            actions=invoke,
            resource_arns=[foundation_model_arn(stack, AGENT_FOUNDATION_MODEL, region="*")],
            conditions={"StringEquals": {"bedrock:InferenceProfileArn": profile_arn}},
        )
        self.knowledge_base.grant_retrieve(role)
        # Any agent of this account's: naming this agent's ARN would make the role's policy
        # wait for the agent, which needs the policy when it is prepared.
        agents = f"arn:{stack.partition}:bedrock:{stack.region}:{stack.account}:agent/*"
        self._grant_agent_key(role, agents)
        any_region = foundation_model_arn(stack, AGENT_FOUNDATION_MODEL, region="*")
        Validations.of(role.node.find_child("DefaultPolicy")).acknowledge(
            Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::{any_region}]",
                reason="A cross-region inference profile sends each request to the model in "
                "one of its regions: every region's copy of this one model, and only through "
                "the profile (the bedrock:InferenceProfileArn condition).",
            ),
        )

    def _action_function(
        self, config: EnvironmentConfig, network: Network, registry: Registry
    ) -> lambda_.DockerImageFunction:
        """The action group's executor: the agents' Lambda image with the Bedrock handler, in
        the VPC (it reaches the Dagster instance's database), traced, its own log group."""
        role = iam.Role(
            self,
            "ActionFunctionRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{config.prefix}: the Bedrock agent's action group",
        )
        grant_vpc_function(role)
        self.action_log_group.grant_write(role)
        self.knowledge_base.grant_retrieve(role)  # searchKnowledgeBase
        function = lambda_.DockerImageFunction(
            self,
            "ActionFunction",
            function_name=f"{config.prefix}-actions",
            description="The Bedrock agent's action group: firepipe's action API",
            code=lambda_.DockerImageCode.from_ecr(
                registry.repository("agents-lambda"),
                tag_or_digest=registry.tag,
                cmd=[ACTION_HANDLER],
            ),
            architecture=lambda_.Architecture.X86_64,
            role=role,
            vpc=network.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.action_log_group,
            timeout=ACTION_TIMEOUT,
            memory_size=ACTION_MEMORY_MIB,
            environment={**IN_AWS, **self.knowledge_base.environment},
            environment_encryption=self._security.data_key,
        )
        Validations.of(role.node.find_child("DefaultPolicy")).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="Network interfaces (the function is in the VPC) and X-Ray's trace "
                "segments have no resource ARN to name.",
            )
        )
        return function
