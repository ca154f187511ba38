"""Agents and messaging: the agents' queues, topics and tables (agents_messaging.py), the agents
as Lambda functions and as ECS services, and the escalation state machine (escalation.py).

Both deployment modes are deployed; `mode` says which consumes the queues, the other is idle
(the ECS services at zero tasks, or the Lambda event source mappings disabled), so a switch is
one deploy. The escalate function is the state machine's task in either mode.

What firepipe expects (the agents, their queues, the topic's subscriptions, the handlers, the
worker's command) is read from firepipe's sources (agents_source.py): a rename there fails the
synthesis here, not a deployment.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from aws_cdk import Acknowledgment, ArnFormat, Duration, Stack, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from constructs import Construct

from firepipe_infra.agents_messaging import FIFO, MAX_RECEIVES, Messaging
from firepipe_infra.agents_source import read_agents_source
from firepipe_infra.config import EnvironmentConfig
from firepipe_infra.env_names import env_name
from firepipe_infra.escalation import Escalation
from firepipe_infra.grants import grant_vpc_function
from firepipe_infra.naming import IN_AWS
from firepipe_infra.network import Network
from firepipe_infra.registry import Registry
from firepipe_infra.security import Security


class AgentsMode(StrEnum):
    """Which deployment consumes the agents' queues."""

    ECS = "ecs"
    LAMBDA = "lambda"


# The monitoring agent keeps each device's feature window in its process (the serving engine's
# buffers): one long-lived worker keeps every device warm, where Lambda's execution environments
# would split a device's batches between them and score partial windows after each scale-out
# (scores with warm: false, which cannot end an incident).
DEFAULT_MODE = AgentsMode.ECS
ESCALATE = "escalate"  # the state machine's task, a function beside the agents'
# AWS asks an SQS queue's visibility timeout to be at least six times its function's timeout
# (lambdas.py): a batch stays hidden while a retried invocation may still hold it.
SQS_FUNCTION_TIMEOUT = Duration.seconds(60)
ESCALATE_TIMEOUT = Duration.seconds(30)
VISIBILITY_TIMEOUT = Duration.seconds(6 * SQS_FUNCTION_TIMEOUT.to_seconds())
# A FIFO event source takes at most 10 messages and no batching window: a batch goes as soon
# as it is there, which is what an alarm's latency wants anyway.
BATCH_SIZE = 10


class FunctionSizing(NamedTuple):
    memory_mib: int
    # The event source's maximum concurrency and the function's reserved concurrency alike: the
    # event source never outruns the reservation, so no batch is throttled (a throttled batch
    # counts as a receive towards the dead-letter queue).
    concurrency: int


class TaskSizing(NamedTuple):
    cpu: int  # Fargate CPU units
    memory_mib: int


FUNCTION_SIZING = {
    "monitoring": FunctionSizing(2048, 2),  # the model and its compiled trees in process
    "analysis": FunctionSizing(1024, 5),
    "response": FunctionSizing(512, 2),
    ESCALATE: FunctionSizing(512, 5),
}
TASK_SIZING = {
    "monitoring": TaskSizing(1024, 2048),
    "analysis": TaskSizing(512, 1024),
    "response": TaskSizing(256, 512),
}
# The tables each agent's code reads and writes (runtime.py builds every port, but each agent
# uses its own): the idempotency records of its messages; the state store for the analysis
# agent's devices and the response agent's alerts (escalate loads and updates the alert).
AGENT_TABLES = {
    "monitoring": ["idempotency"],
    "analysis": ["idempotency", "state", "state_history"],
    "response": ["idempotency", "state", "state_history"],
    ESCALATE: ["state", "state_history"],
}
_NO_ENV_SECRETS = (
    "The worker's environment holds resource names only (queue prefix, topic ARNs, table "
    "names, the state machine's ARN), set by this stack: nothing secret, and a change to any "
    "of them is a deployment of this stack anyway."
)
_LAMBDA_WILDCARDS = (
    "X-Ray (xray:PutTraceSegments) and the VPC network interfaces Lambda manages for the "
    "function (ec2:CreateNetworkInterface, DescribeNetworkInterfaces, ...) take no resource: "
    "AWS documents them on '*'. Everything else names its queue, topic, table, key or log group."
)


class Agents(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        security: Security,
        network: Network,
        registry: Registry,
        mode: AgentsMode = DEFAULT_MODE,
    ) -> None:
        super().__init__(scope, id)
        self.mode = mode
        self._config, self._security, self._registry = config, security, registry
        self._private = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        source = read_agents_source()
        self.messaging = m = Messaging(
            self,
            "Messaging",
            config=config,
            data_key=security.data_key,
            source=source,
            visibility_timeout=VISIBILITY_TIMEOUT,
        )
        self.queues, self.dead_letter_queues = m.queues, m.dead_letter_queues
        self.events_topic, self.notifications_topic = m.events_topic, m.notifications_topic
        self.tables = m.tables
        self.state_machine_name = f"{config.prefix}-escalation"
        # Formatted, not referenced: the escalate function's environment names the machine,
        # which references the function (a reference back would be a cycle).
        self.state_machine_arn = Stack.of(self).format_arn(
            service="states",
            resource="stateMachine",
            resource_name=self.state_machine_name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.environment = {
            env_name("QUEUE_PREFIX_VAR"): m.queue_prefix,
            env_name("QUEUE_FIFO_VAR"): "true" if FIFO else "false",
            env_name("EVENTS_TOPIC_ARN_VAR"): m.events_topic.topic_arn,
            env_name("NOTIFICATIONS_TOPIC_ARN_VAR"): m.notifications_topic.topic_arn,
            env_name("STATE_TABLE_VAR"): m.tables["state"].table_name,
            env_name("STATE_HISTORY_TABLE_VAR"): m.tables["state_history"].table_name,
            env_name("IDEMPOTENCY_TABLE_VAR"): m.tables["idempotency"].table_name,
            env_name("GENERATION_HISTORY_TABLE_VAR"): m.tables["generation_history"].table_name,
            env_name("ESCALATION_STATE_MACHINE_ARN_VAR"): self.state_machine_arn,
            source.max_receives_var: str(MAX_RECEIVES),  # as the queues' redrive
        }
        # The agents' processes build every port from these (runtime.ports), with the AWS
        # twins, and name their Powertools service (observability.py). The generation history
        # is the generation assets' table, not theirs.
        agent_environment = {
            **{
                k: v
                for k, v in self.environment.items()
                if k != env_name("GENERATION_HISTORY_TABLE_VAR")
            },
            **IN_AWS,
            "POWERTOOLS_SERVICE_NAME": source.service,
            "POWERTOOLS_METRICS_NAMESPACE": source.namespace,
        }
        self.functions: dict[str, lambda_.DockerImageFunction] = {}
        self.function_roles: dict[str, iam.Role] = {}
        self.function_log_groups: dict[str, logs.LogGroup] = {}
        for agent in (*source.agents, ESCALATE):
            self._function(agent, network, agent_environment)
        self.execution_role = iam.Role(
            self,
            "TaskExecutionRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description=f"{config.prefix}: pulls the agents image, writes the workers' logs",
        )
        self.services: dict[str, ecs.FargateService] = {}
        self.containers: dict[str, ecs.ContainerDefinition] = {}
        self.task_roles: dict[str, iam.IRole] = {}
        self.service_log_groups: dict[str, logs.LogGroup] = {}
        # Lambda sets AWS_REGION itself (and refuses it as a variable); a task needs it set.
        task_environment = {**agent_environment, env_name("AWS_REGION_VAR"): Stack.of(self).region}
        for agent in source.agents:
            self._service(agent, network, task_environment)
        # The task definitions wrote the pulls and the workers' log groups into it.
        Validations.of(self.execution_role.node.find_child("DefaultPolicy")).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="ecr:GetAuthorizationToken takes no resource: AWS documents it on '*'; "
                "the pulls themselves name the agents repository.",
            )
        )
        self.escalation = Escalation(
            self,
            "Escalation",
            config=config,
            logs_key=security.logs_key,
            function=self.functions[ESCALATE],
            state_machine_name=self.state_machine_name,
        )
        self.state_machine = self.escalation.state_machine

    def _log_group(self, id: str) -> logs.LogGroup:
        return logs.LogGroup(
            self,
            id,
            encryption_key=self._security.logs_key,
            retention=self._config.log_retention,
            removal_policy=self._config.removal_policy,
        )

    def _function(self, agent: str, network: Network, environment: dict[str, str]) -> None:
        title, config = agent.capitalize(), self._config
        handler = read_agents_source().handlers[agent]
        sizing = FUNCTION_SIZING[agent]
        log_group = self._log_group(f"{title}FunctionLogs")
        # A role of its own, without AWS's managed execution policies (logs of every group):
        # the function writes its one log group, and manages its network interfaces.
        role = iam.Role(
            self,
            f"{title}FunctionRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{config.prefix}: the {agent} Lambda function",
        )
        log_group.grant_write(role)
        grant_vpc_function(role)
        self._grant_agent(role, agent)
        function = lambda_.DockerImageFunction(
            self,
            f"{title}Function",
            function_name=f"{config.prefix}-agents-{agent}",
            description=f"firepipe's {agent} handler ({handler})",
            # The agents image's Lambda stage: ENTRYPOINT the runtime interface client, the
            # handler as CMD.
            code=lambda_.DockerImageCode.from_ecr(
                self._registry.repository("agents-lambda"),
                tag_or_digest=self._registry.tag,
                cmd=[handler],
            ),
            role=role,
            vpc=network.vpc,
            vpc_subnets=self._private,
            tracing=lambda_.Tracing.ACTIVE,
            timeout=ESCALATE_TIMEOUT if agent == ESCALATE else SQS_FUNCTION_TIMEOUT,
            memory_size=sizing.memory_mib,
            reserved_concurrent_executions=sizing.concurrency,
            log_group=log_group,
            environment=environment,
        )
        if agent != ESCALATE:
            function.add_event_source(
                sources.SqsEventSource(
                    self.queues[agent],
                    batch_size=BATCH_SIZE,
                    # lambdas.py's batch processors answer the failed records only.
                    report_batch_item_failures=True,
                    max_concurrency=sizing.concurrency,
                    enabled=self.mode is AgentsMode.LAMBDA,
                )
            )
        Validations.of(role.node.find_child("DefaultPolicy")).acknowledge(
            Acknowledgment(id="AwsSolutions-IAM5[Resource::*]", reason=_LAMBDA_WILDCARDS)
        )
        self.functions[agent] = function
        self.function_roles[agent] = role
        self.function_log_groups[agent] = log_group

    def _service(self, agent: str, network: Network, environment: dict[str, str]) -> None:
        title, config = agent.capitalize(), self._config
        sizing = TASK_SIZING[agent]
        log_group = self._log_group(f"{title}WorkerLogs")
        task = ecs.FargateTaskDefinition(
            self,
            f"{title}Task",
            family=f"{config.prefix}-agents-{agent}",
            cpu=sizing.cpu,
            memory_limit_mib=sizing.memory_mib,
            execution_role=self.execution_role,
        )
        self.containers[agent] = task.add_container(
            "worker",
            image=self._registry.image("agents"),
            command=read_agents_source().worker_command(agent),
            environment=environment,
            logging=ecs.LogDrivers.aws_logs(stream_prefix=agent, log_group=log_group),
        )
        self._grant_agent(task.task_role, agent)
        Validations.of(task).acknowledge(
            Acknowledgment(id="AwsSolutions-ECS2", reason=_NO_ENV_SECRETS)
        )
        self.services[agent] = ecs.FargateService(
            self,
            f"{title}Service",
            service_name=f"{config.prefix}-agents-{agent}",
            cluster=network.cluster,
            task_definition=task,
            # One worker per agent: the monitoring agent's device windows live in its process.
            desired_count=1 if self.mode is AgentsMode.ECS else 0,
            min_healthy_percent=100,
            max_healthy_percent=200,
            vpc_subnets=self._private,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
        )
        self.task_roles[agent] = task.task_role
        self.service_log_groups[agent] = log_group

    def _grant_agent(self, grantee: iam.IGrantable, agent: str) -> None:
        """What one agent's code calls: its queue (and dead-letter queue), its tables, and the
        topic it publishes to; the response agent also starts escalations."""
        m = self.messaging
        m.grant_tables(grantee, AGENT_TABLES[agent])
        if agent != ESCALATE:
            m.grant_consume(grantee, [agent])
        if agent in ("monitoring", "analysis"):
            m.grant_publish(grantee, [m.events_topic])
        if agent in ("response", ESCALATE):
            m.grant_publish(grantee, [m.notifications_topic])
        if agent == "response":
            self._grant_start_escalation(grantee)

    def _grant_start_escalation(self, grantee: iam.IGrantable) -> None:
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["states:StartExecution"],
            resource_arns=[self.state_machine_arn],
        )

    def grant_use(self, grantee: iam.IGrantable) -> None:
        """Everything firepipe's code does with this concern outside the agents (`firepipe
        agents status|feed`, `replay`, `alerts`, the generation assets): send to, read and
        redrive every queue, publish to both topics, read and write every table, and start
        escalations. Each statement goes into the grantee's own policy."""
        m, agents = self.messaging, list(self.queues)
        m.grant_consume(grantee, agents)
        m.grant_send(grantee, agents)
        m.grant_publish(grantee, [m.events_topic, m.notifications_topic])
        m.grant_tables(grantee, list(m.tables))
        self._grant_start_escalation(grantee)

    def grant_generation_history(self, grantee: iam.IGrantable) -> None:
        """The generation history's table (the action API reads it back, runs write it)."""
        self.messaging.grant_tables(grantee, ["generation_history"])

    def add_environment(self, name: str, value: str) -> None:
        """A variable for every agent function and worker (the model registry's, which the
        monitoring agent reads its champion from: the ML concern's)."""
        for function in self.functions.values():
            function.add_environment(name, value)
        for container in self.containers.values():
            container.add_environment(name, value)
