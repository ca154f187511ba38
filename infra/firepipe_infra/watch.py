"""The stacks that watch and protect an environment's services, after every other: the
dashboards and alarms (observability.py), one section and alarm set per service, and the
backup plans (recovery.py) of what firepipe cannot rebuild."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration, Stack
from constructs import Construct

from firepipe_infra.config import EnvironmentConfig
from firepipe_infra.observability import Observability
from firepipe_infra.recovery import Recovery

if TYPE_CHECKING:  # the stacks module imports this one
    from firepipe_infra.stacks import (
        AgentsStack,
        AgentStack,
        ApiStack,
        Base,
        ComputeStack,
        KnowledgeBaseStack,
        MlStack,
        OrchestrationStack,
    )

# The oldest message an agent's queue may hold before its consumers count as behind.
QUEUE_MAX_AGE = Duration.minutes(5)
API_P99_LATENCY = Duration.seconds(2)


def watch_environment(
    scope: Construct,
    config: EnvironmentConfig,
    base: Base,
    *,
    compute: ComputeStack,
    ml: MlStack,
    agents: AgentsStack,
    knowledge_base: KnowledgeBaseStack,
    orchestration: OrchestrationStack,
    api: ApiStack,
    agent: AgentStack,
) -> tuple[Stack, Stack]:
    """The observability and backup stacks of one environment."""
    from firepipe_infra.stacks import _EnvironmentStack

    watched = _EnvironmentStack(scope, "observability", config)
    o = Observability(watched, "Observability", config=config)
    dagster = orchestration.orchestration
    for name, service in (
        ("dagster-webserver", dagster.webserver_service),
        ("dagster-daemon", dagster.daemon_service),
        ("dagster-code-location", dagster.code_service),
    ):
        o.watch_service(name, service)
    o.watch_database("dagster-database", dagster.database)
    for name, service in api.apis.services.items():
        o.watch_service(f"{name}-service", service)
    o.watch_api("api", api.apis.rest_api, p99_latency=API_P99_LATENCY)
    a = agents.agents
    for name, service in a.services.items():
        # In Lambda mode the workers stand at zero tasks: nothing to alarm on there.
        o.watch_service(f"{name}-worker", service, min_tasks=service_min_tasks(service))
    for name, function in a.functions.items():
        o.watch_function(f"{name}-function", function)
    for name, queue in a.messaging.queues.items():
        o.watch_queue(
            f"{name}-queue", queue, a.messaging.dead_letter_queues[name], max_age=QUEUE_MAX_AGE
        )
    for name, table in a.tables.items():
        o.watch_table(f"{name.replace('_', '-')}-table", table)
    o.watch_table("watermarks-table", base.lake.watermarks_table)
    o.watch_state_machine("escalation", a.state_machine)
    o.watch_function("bedrock-actions-function", agent.genai.action_function)
    c = compute.compute
    o.watch_glue_job("spark-features", str(c.glue_job.name))
    o.watch_batch_queue("generator-cpu", c.cpu_queue.job_queue_arn)
    o.watch_batch_queue("generator-gpu", c.gpu_queue.job_queue_arn)
    o.watch_emr_application("spark-features-emr", c.emr_application.attr_application_id)

    protected = _EnvironmentStack(scope, "backup", config)
    r = Recovery(protected, "Recovery", config=config)
    r.protect(
        "tables",
        [table.table_arn for table in (*a.tables.values(), base.lake.watermarks_table)],
        [base.security.data_key],
    )
    r.protect(
        "buckets",
        [
            base.lake.lake_bucket.bucket_arn,
            ml.ml.bucket.bucket_arn,
            knowledge_base.knowledge_base.documents_bucket.bucket_arn,
        ],
        [base.security.data_key],
    )
    r.protect("database", [dagster.database.instance_arn], [base.security.data_key])
    return watched, protected


def service_min_tasks(service: object) -> int:
    """The running tasks a service must keep: its desired count (0 for a worker whose agent
    runs as a Lambda function), read from the L1 resource the L2 service wraps."""
    resource = service.node.default_child  # type: ignore[attr-defined]
    return int(resource.desired_count or 0)
