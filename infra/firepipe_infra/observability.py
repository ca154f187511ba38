"""Observability: one dashboard per environment (cdk-monitoring-constructs), alarms per
service into an encrypted SNS topic that e-mails the environment's alarm address, and failure
events of the batch work that CloudWatch has no metric for (Batch jobs, EMR Serverless runs).

Each `watch_*` method adds one service's section and alarms; every alarm is named
`<prefix>-<service>-<what>` and carries the link to its section of docs/runbooks/alarms.md, so
the e-mail tells the on-call engineer where to start.
"""

from __future__ import annotations

import re

from aws_cdk import Duration, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_rds as rds
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from cdk_monitoring_constructs import (
    AlarmFactoryDefaults,
    DefaultDashboardFactory,
    ErrorCountThreshold,
    ErrorRateThreshold,
    LatencyThreshold,
    MaxIncomingMessagesCountThreshold,
    MaxMessageAgeThreshold,
    MonitoringFacade,
    SnsAlarmActionStrategy,
    ThrottledEventsThreshold,
    UsageThreshold,
)
from constructs import Construct

from firepipe_infra.config import EnvironmentConfig
from firepipe_infra.naming import pascal

# Where each alarm's runbook is: the section of docs/runbooks/alarms.md named after its kind.
RUNBOOKS = "https://github.com/firepipe/firepipe/blob/main/docs/runbooks/alarms.md"
# The kinds of alarm, each a section of the runbook (the tests hold the two together).
ALARM_KINDS = (
    "service",
    "function",
    "queue",
    "table",
    "state-machine",
    "database",
    "api",
    "glue-job",
    "batch-job",
    "emr-job",
)
_CRITICAL = "Critical"


def runbook(kind: str) -> str:
    if kind not in ALARM_KINDS:
        raise KeyError(f"no runbook section for alarm kind {kind!r}")
    return f"{RUNBOOKS}#{kind}"


class Observability(Construct):
    def __init__(self, scope: Construct, id: str, *, config: EnvironmentConfig) -> None:
        super().__init__(scope, id)
        self._config = config
        # CloudWatch publishes alarms into the topic with this key, so the key policy lets the
        # service use it (a key of its own: the security stack's keys do not trust CloudWatch).
        # EventBridge's failure rules publish through a role of their own instead (below).
        account = Stack.of(self).account
        self.alarm_key = kms.Key(
            self,
            "AlarmKey",
            alias=f"alias/{config.prefix}-alarms",
            description=f"{config.prefix}: the alarm topic",
            enable_key_rotation=True,
            removal_policy=config.removal_policy,
        )
        self.alarm_key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],  # in a key policy, "*" is this key
                conditions={"StringEquals": {"aws:SourceAccount": account}},
            )
        )
        self.alarm_topic = sns.Topic(
            self,
            "AlarmTopic",
            topic_name=f"{config.prefix}-alarms",
            display_name=f"firepipe {config.name} alarms",
            master_key=self.alarm_key,
            enforce_ssl=True,
        )
        self.alarm_topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        # The rules' target would otherwise grant events.amazonaws.com, with no source
        # condition, in the topic's and the key's policies: a role of this account's rules
        # publishes instead, with exactly the calls SNS makes on an encrypted topic.
        stack = Stack.of(self)
        self.events_role = iam.Role(
            self,
            "AlarmEventsRole",
            assumed_by=iam.ServicePrincipal(
                "events.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": account},
                    # This environment's rules only (_failure_rule names them).
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{stack.partition}:events:{stack.region}:"
                        f"{account}:rule/{config.prefix}-*"
                    },
                },
            ),
            description=f"{config.prefix}: EventBridge's failure rules publish to the alarm topic",
        )
        self.events_role.add_to_policy(
            iam.PolicyStatement(actions=["sns:Publish"], resources=[self.alarm_topic.topic_arn])
        )
        self.events_role.add_to_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=[self.alarm_key.key_arn],
            )
        )
        self.facade = MonitoringFacade(
            self,
            "Monitoring",
            alarm_factory_defaults=AlarmFactoryDefaults(
                alarm_name_prefix=config.prefix,
                actions_enabled=True,
                action=SnsAlarmActionStrategy(on_alarm_topic=self.alarm_topic),
                runbook_link=RUNBOOKS,
            ),
            dashboard_factory=DefaultDashboardFactory(
                self, "Dashboards", dashboard_name_prefix=config.prefix
            ),
        )
        # The services watched, by kind: {"service": ["dagster-webserver", ...]} (the tests and
        # the runbook check that each has its alarms).
        self.watched: dict[str, list[str]] = {kind: [] for kind in ALARM_KINDS}

    def _watch(self, kind: str, name: str) -> dict[str, str]:
        if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
            raise ValueError(f"a watched service's name must be lowercase with dashes: {name!r}")
        if name in self.watched[kind]:
            raise ValueError(f"{kind} {name!r} is watched twice")
        self.watched[kind].append(name)
        return {"alarm_friendly_name": name, "human_readable_name": name}

    def watch_service(self, name: str, service: ecs.FargateService, *, min_tasks: int = 1) -> None:
        """An ECS service: fewer running tasks than it needs (Container Insights' count; none
        for a service kept at zero), CPU or memory near the limit."""
        link = runbook("service")
        self.facade.add_large_header(f"Service {name}").monitor_simple_fargate_service(
            fargate_service=service,
            add_cpu_usage_alarm={
                _CRITICAL: UsageThreshold(max_usage_percent=90, runbook_link=link)
            },
            add_memory_usage_alarm={
                _CRITICAL: UsageThreshold(max_usage_percent=90, runbook_link=link)
            },
            **self._watch("service", name),
        )
        if min_tasks < 1:
            return
        running = cloudwatch.Metric(
            namespace="ECS/ContainerInsights",
            metric_name="RunningTaskCount",
            dimensions_map={
                "ClusterName": service.cluster.cluster_name,
                "ServiceName": service.service_name,
            },
            statistic="Minimum",
            period=Duration.minutes(1),
        )
        alarm = running.create_alarm(
            self,
            f"{pascal(name)}RunningTasks",
            alarm_name=f"{self._config.prefix}-{name}-running-tasks",
            alarm_description=f"{name} runs fewer than {min_tasks} task(s). Runbook: {link}",
            threshold=min_tasks,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=5,
            datapoints_to_alarm=3,
            # No data: the service's tasks are all gone (or Container Insights is off).
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
        )
        alarm.add_alarm_action(cloudwatch_actions.SnsAction(self.alarm_topic))

    def watch_function(self, name: str, function: lambda_.IFunction) -> None:
        """A Lambda function: failing invocations (more than 5 % in 5 minutes), throttling."""
        link = runbook("function")
        self.facade.add_large_header(f"Function {name}").monitor_lambda_function(
            lambda_function=function,
            add_fault_rate_alarm={
                _CRITICAL: ErrorRateThreshold(max_error_rate=0.05, runbook_link=link)
            },
            add_throttles_count_alarm={
                _CRITICAL: ErrorCountThreshold(max_error_count=0, runbook_link=link)
            },
            **self._watch("function", name),
        )

    def watch_queue(
        self, name: str, queue: sqs.IQueue, dead_letters: sqs.IQueue, *, max_age: Duration
    ) -> None:
        """A queue: any message dead-lettered, or the oldest waiting longer than `max_age`
        (its consumers are down or behind)."""
        link = runbook("queue")
        self.facade.add_large_header(f"Queue {name}").monitor_sqs_queue_with_dlq(
            queue=queue,
            dead_letter_queue=dead_letters,
            add_dead_letter_queue_max_incoming_messages_alarm={
                _CRITICAL: MaxIncomingMessagesCountThreshold(
                    max_incoming_messages_count=0, runbook_link=link
                )
            },
            add_queue_max_message_age_alarm={
                _CRITICAL: MaxMessageAgeThreshold(
                    max_age_in_seconds=int(max_age.to_seconds()), runbook_link=link
                )
            },
            **self._watch("queue", name),
        )

    def watch_table(self, name: str, table: dynamodb.ITable) -> None:
        """A DynamoDB table: throttled reads or writes, DynamoDB's own errors."""
        link = runbook("table")

        def throttled() -> ThrottledEventsThreshold:
            return ThrottledEventsThreshold(max_throttled_events_threshold=0, runbook_link=link)

        self.facade.add_large_header(f"Table {name}").monitor_dynamo_table(
            table=table,
            add_read_throttled_events_count_alarm={_CRITICAL: throttled()},
            add_write_throttled_events_count_alarm={_CRITICAL: throttled()},
            add_system_error_count_alarm={
                _CRITICAL: ErrorCountThreshold(max_error_count=0, runbook_link=link)
            },
            **self._watch("table", name),
        )

    def watch_state_machine(self, name: str, state_machine: sfn.IStateMachine) -> None:
        """A state machine: any failed or timed-out execution."""
        link = runbook("state-machine")
        self.facade.add_large_header(f"State machine {name}").monitor_step_function(
            state_machine=state_machine,
            add_failed_execution_count_alarm={
                _CRITICAL: ErrorCountThreshold(max_error_count=0, runbook_link=link)
            },
            add_timed_out_execution_count_alarm={
                _CRITICAL: ErrorCountThreshold(max_error_count=0, runbook_link=link)
            },
            **self._watch("state-machine", name),
        )

    def watch_database(self, name: str, instance: rds.IDatabaseInstance) -> None:
        """An RDS instance: CPU above 80 %."""
        link = runbook("database")
        self.facade.add_large_header(f"Database {name}").monitor_rds_instance(
            instance=instance,
            add_cpu_usage_alarm={
                _CRITICAL: UsageThreshold(max_usage_percent=80, runbook_link=link)
            },
            **self._watch("database", name),
        )

    def watch_api(self, name: str, api: apigw.RestApi, *, p99_latency: Duration) -> None:
        """A REST API's deployed stage: server errors above 1 %, p99 latency above the bound."""
        link = runbook("api")
        self.facade.add_large_header(f"API {name}").monitor_api_gateway(
            api=api,
            api_stage=api.deployment_stage.stage_name,
            add5_xx_fault_rate_alarm={
                _CRITICAL: ErrorRateThreshold(max_error_rate=0.01, runbook_link=link)
            },
            add_latency_p99_alarm={
                _CRITICAL: LatencyThreshold(max_latency=p99_latency, runbook_link=link)
            },
            **self._watch("api", name),
        )

    def watch_glue_job(self, name: str, job_name: str) -> None:
        """A Glue job: any run that failed or timed out."""
        link = runbook("glue-job")
        self.facade.add_large_header(f"Glue job {name}").monitor_glue_job(
            job_name=job_name,
            add_job_failed_state_count_alarm={
                _CRITICAL: ErrorCountThreshold(max_error_count=0, runbook_link=link)
            },
            add_job_timeout_state_count_alarm={
                _CRITICAL: ErrorCountThreshold(max_error_count=0, runbook_link=link)
            },
            **self._watch("glue-job", name),
        )

    def watch_batch_queue(self, name: str, job_queue_arn: str) -> None:
        """A Batch job queue: Batch has no failure metric, so each FAILED job's state-change
        event goes to the alarm topic."""
        self._watch("batch-job", name)
        self._failure_rule(
            f"Batch{pascal(name)}Failed",
            name,
            "batch-job",
            events.EventPattern(
                source=["aws.batch"],
                detail_type=["Batch Job State Change"],
                detail={"status": ["FAILED"], "jobQueue": [job_queue_arn]},
            ),
        )

    def watch_emr_application(self, name: str, application_id: str) -> None:
        """An EMR Serverless application: each job run that FAILED, as Batch's."""
        self._watch("emr-job", name)
        self._failure_rule(
            f"Emr{pascal(name)}Failed",
            name,
            "emr-job",
            events.EventPattern(
                source=["aws.emr-serverless"],
                detail_type=["EMR Serverless Job Run State Change"],
                detail={"state": ["FAILED"], "applicationId": [application_id]},
            ),
        )

    def _failure_rule(
        self, id: str, name: str, kind: str, pattern: events.EventPattern
    ) -> events.Rule:
        rule = events.Rule(
            self,
            id,
            rule_name=f"{self._config.prefix}-{name}-failed",
            description=f"{name}: failures to the alarm topic (runbook: {runbook(kind)})",
            event_pattern=pattern,
        )
        # An immutable view: the target's own grant (a wildcard on the key) becomes a no-op,
        # and with it the rule's dependency on the role's policy, restored here.
        rule.add_target(
            targets.SnsTopic(self.alarm_topic, role=self.events_role.without_policy_updates())
        )
        rule.node.add_dependency(self.events_role)
        # A delivery EventBridge could not make (the role, the key) would lose the failure
        # mail itself: CloudWatch, with its own grant on the topic, reports it.
        failed = cloudwatch.Metric(
            namespace="AWS/Events",
            metric_name="FailedInvocations",
            dimensions_map={"RuleName": rule.rule_name},
            statistic="Sum",
            period=Duration.minutes(5),
        ).create_alarm(
            self,
            f"{id}Deliveries",
            alarm_name=f"{self._config.prefix}-{name}-failed-deliveries",
            alarm_description=f"{name}: failure events that did not reach the alarm topic. "
            f"Runbook: {runbook(kind)}",
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        failed.add_alarm_action(cloudwatch_actions.SnsAction(self.alarm_topic))
        return rule

    def alarm_count(self) -> int:
        return len(self.facade.created_alarms())
