"""Ports: one resource per outside system, each with its local and AWS implementation side by
side in its own module.

`IMPLEMENTATIONS` below is the one table that maps an environment to implementations. Each cell
is a small factory that imports its module when called, so a command that needs one resource
(`firepipe history`) loads that module alone. AWS settings come through `dg.EnvVar`, named once
in `firepipe.lib.aws_env`, so the definitions load anywhere and a missing variable is reported
when a run first uses the resource.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import dagster as dg

from firepipe.lib import aws_env as var
from firepipe.settings import Environment, LocalPaths, SnowflakeAuth, snowflake_auth

LOCAL, AWS = Environment.LOCAL, Environment.AWS
# The local field table, which `firepipe seed` fills.
LOCAL_FIELD_TABLE = "field_readings"

Factory = Callable[[LocalPaths], Any]


def _local_lakehouse(paths: LocalPaths) -> Any:
    from firepipe.resources.lakehouse import LocalLakehouse

    return LocalLakehouse(root=str(paths.lake))


def _glue_lakehouse(paths: LocalPaths) -> Any:
    from firepipe.resources.lakehouse import GlueLakehouse

    return GlueLakehouse(warehouse=dg.EnvVar(var.LAKE_WAREHOUSE_VAR), region=_region())


def _region() -> Any:
    return dg.EnvVar(var.AWS_REGION_VAR)


def _optional(name: str) -> str | None:
    """A setting the resource can go without: its variable's value now, None when unset."""
    return os.environ.get(name) or None


def _io_manager(lakehouse: Factory) -> Factory:
    def build(paths: LocalPaths) -> Any:
        from firepipe.lib.lakehouse.io_manager import IcebergIOManager

        return IcebergIOManager(lakehouse=lakehouse(paths))

    return build


def _duckdb_query(paths: LocalPaths) -> Any:
    from firepipe.resources.query import DuckDBQueryEngine

    return DuckDBQueryEngine(lakehouse=_local_lakehouse(paths))


def _athena_query(paths: LocalPaths) -> Any:
    from firepipe.resources.query import AthenaQueryEngine

    return AthenaQueryEngine(
        region=_region(),
        workgroup=dg.EnvVar(var.ATHENA_WORKGROUP_VAR),
        output_location=dg.EnvVar(var.ATHENA_OUTPUT_LOCATION_VAR),
    )


def _dbt(env: Environment) -> Factory:
    def build(paths: LocalPaths) -> Any:
        from firepipe.resources.dbt import dbt_resource_for

        return dbt_resource_for(env)

    return build


def _local_compute(paths: LocalPaths) -> Any:
    from firepipe.resources.compute import LocalCompute

    return LocalCompute()


def _batch_compute(paths: LocalPaths) -> Any:
    from firepipe.resources.compute import BatchCompute

    return BatchCompute(
        region=_region(),
        job_definition=dg.EnvVar(var.BATCH_JOB_DEFINITION_VAR),
        cpu_job_queue=dg.EnvVar(var.BATCH_CPU_QUEUE_VAR),
        gpu_job_queue=dg.EnvVar(var.BATCH_GPU_QUEUE_VAR),
        # Optional: a deployment with one image for both queues leaves it unset.
        gpu_job_definition=_optional(var.BATCH_GPU_JOB_DEFINITION_VAR),
        pipes_bucket=dg.EnvVar(var.PIPES_BUCKET_VAR),
    )


def _sqlite_history(paths: LocalPaths) -> Any:
    from firepipe.resources.history import SqliteGenerationHistory

    return SqliteGenerationHistory(path=str(paths.generation_history))


def _dynamo_history(paths: LocalPaths) -> Any:
    from firepipe.resources.history import DynamoGenerationHistory

    return DynamoGenerationHistory(
        table_name=dg.EnvVar(var.GENERATION_HISTORY_TABLE_VAR), region=_region()
    )


def _duckdb_warehouse(paths: LocalPaths) -> Any:
    from firepipe.resources.warehouse import DuckDBWarehouseSource

    return DuckDBWarehouseSource(path=str(paths.field_warehouse), table=LOCAL_FIELD_TABLE)


def _snowflake_credentials(auth: SnowflakeAuth) -> dict[str, Any]:
    if auth is SnowflakeAuth.PASSWORD:
        return {"password": dg.EnvVar(var.SNOWFLAKE_PASSWORD_VAR)}
    credentials: dict[str, Any] = {"private_key": dg.EnvVar(var.SNOWFLAKE_PRIVATE_KEY_VAR)}
    if auth is SnowflakeAuth.ENCRYPTED_KEY_PAIR:
        credentials["private_key_password"] = dg.EnvVar(var.SNOWFLAKE_PRIVATE_KEY_PASSPHRASE_VAR)
    return credentials


def _snowflake_warehouse(paths: LocalPaths) -> Any:
    # dagster-snowflake is in the aws extra only.
    from dagster_snowflake import SnowflakeResource

    from firepipe.resources.warehouse import SnowflakeWarehouseSource

    snowflake = SnowflakeResource(
        account=dg.EnvVar(var.SNOWFLAKE_ACCOUNT_VAR),
        user=dg.EnvVar(var.SNOWFLAKE_USER_VAR),
        role=dg.EnvVar(var.SNOWFLAKE_ROLE_VAR),
        warehouse=dg.EnvVar(var.SNOWFLAKE_WAREHOUSE_VAR),
        database=dg.EnvVar(var.SNOWFLAKE_DATABASE_VAR),
        **_snowflake_credentials(snowflake_auth()),
    )
    return SnowflakeWarehouseSource(snowflake=snowflake, table=dg.EnvVar(var.FIELD_TABLE_VAR))


def _sqlite_watermarks(paths: LocalPaths) -> Any:
    from firepipe.resources.watermarks import SqliteWatermarkStore

    return SqliteWatermarkStore(path=str(paths.extraction_watermarks))


def _dynamo_watermarks(paths: LocalPaths) -> Any:
    from firepipe.resources.watermarks import DynamoWatermarkStore

    return DynamoWatermarkStore(table_name=dg.EnvVar(var.WATERMARKS_TABLE_VAR), region=_region())


def _local_landing(paths: LocalPaths) -> Any:
    from firepipe.resources.landing import LocalLandingZone

    return LocalLandingZone(root=str(paths.landing))


def _s3_landing(paths: LocalPaths) -> Any:
    from firepipe.resources.landing import S3LandingZone

    return S3LandingZone(
        bucket=dg.EnvVar(var.LANDING_BUCKET_VAR),
        prefix=dg.EnvVar(var.LANDING_PREFIX_VAR),
        region=_region(),
    )


def _local_spark(paths: LocalPaths) -> Any:
    from firepipe.resources.spark import LocalSparkCompute

    return LocalSparkCompute()


def _emr_spark(paths: LocalPaths) -> Any:
    from firepipe.resources.spark_emr_serverless import EmrServerlessSparkCompute

    return EmrServerlessSparkCompute(
        region=_region(),
        application_id=dg.EnvVar(var.EMR_APPLICATION_ID_VAR),
        execution_role_arn=dg.EnvVar(var.EMR_EXECUTION_ROLE_ARN_VAR),
        entry_point=dg.EnvVar(var.EMR_ENTRY_POINT_VAR),
        python=dg.EnvVar(var.EMR_PYTHON_VAR),
        pipes_bucket=dg.EnvVar(var.PIPES_BUCKET_VAR),
    )


def _emr_steps_spark(paths: LocalPaths) -> Any:
    from firepipe.resources.spark_emr import EmrStepsSparkCompute

    return EmrStepsSparkCompute(
        region=_region(),
        service_role=dg.EnvVar(var.EMR_SERVICE_ROLE_VAR),
        job_flow_role=dg.EnvVar(var.EMR_INSTANCE_PROFILE_VAR),
        # Optional settings: unset, the cluster goes without them (the default VPC's subnet,
        # no log upload, no security configuration, no bootstrap action).
        subnet_id=_optional(var.EMR_SUBNET_ID_VAR),
        log_uri=_optional(var.EMR_LOG_URI_VAR),
        security_configuration=_optional(var.EMR_SECURITY_CONFIGURATION_VAR),
        bootstrap_script=_optional(var.EMR_BOOTSTRAP_SCRIPT_VAR),
        entry_point=dg.EnvVar(var.EMR_ENTRY_POINT_VAR),
        python=dg.EnvVar(var.EMR_PYTHON_VAR),
        pipes_bucket=dg.EnvVar(var.PIPES_BUCKET_VAR),
    )


def _glue_spark(paths: LocalPaths) -> Any:
    from firepipe.resources.spark_glue import GlueSparkCompute

    return GlueSparkCompute(
        region=_region(),
        job_name=dg.EnvVar(var.GLUE_JOB_NAME_VAR),
        pipes_bucket=dg.EnvVar(var.PIPES_BUCKET_VAR),
    )


def _aws_spark(paths: LocalPaths) -> Any:
    """The AWS Spark engine that FIREPIPE_SPARK_ENGINE names."""
    from firepipe.settings import SparkEngine, spark_engine

    engines = {
        SparkEngine.EMR_SERVERLESS: _emr_spark,
        SparkEngine.EMR: _emr_steps_spark,
        SparkEngine.GLUE: _glue_spark,
    }
    return engines[spark_engine()](paths)


def _local_training(paths: LocalPaths) -> Any:
    from firepipe.resources.training import LocalTrainingBackend

    return LocalTrainingBackend(work_dir=str(paths.training))


def _sagemaker_training(paths: LocalPaths) -> Any:
    from firepipe.resources.training import SageMakerTrainingBackend

    return SageMakerTrainingBackend(
        region=_region(),
        role_arn=dg.EnvVar(var.SAGEMAKER_ROLE_ARN_VAR),
        image_uri=dg.EnvVar(var.TRAINING_IMAGE_URI_VAR),
        bucket=dg.EnvVar(var.TRAINING_BUCKET_VAR),
    )


def _mlflow_registry(paths: LocalPaths) -> Any:
    from firepipe.resources.registry import LocalModelRegistry

    return LocalModelRegistry(root=str(paths.mlflow))


def _sagemaker_registry(paths: LocalPaths) -> Any:
    from firepipe.resources.registry import SageMakerModelRegistry

    return SageMakerModelRegistry(
        tracking_server_arn=dg.EnvVar(var.MLFLOW_TRACKING_SERVER_ARN_VAR), region=_region()
    )


def _local_notifier(paths: LocalPaths) -> Any:
    from firepipe.resources.notifier import LocalNotifier

    return LocalNotifier(
        path=str(paths.notifications), webhook_url=_optional(var.ALERT_WEBHOOK_URL_VAR)
    )


def _sns_notifier(paths: LocalPaths) -> Any:
    from firepipe.resources.notifier import SnsNotifier

    return SnsNotifier(topic_arn=dg.EnvVar(var.NOTIFICATIONS_TOPIC_ARN_VAR), region=_region())


def _local_endpoint(paths: LocalPaths) -> Any:
    from firepipe.resources.endpoint import LocalModelEndpoint

    return LocalModelEndpoint(path=str(paths.endpoint_deployments))


def _sagemaker_endpoint(paths: LocalPaths) -> Any:
    from firepipe.resources.endpoint import SageMakerEndpoint

    return SageMakerEndpoint(
        region=_region(),
        role_arn=dg.EnvVar(var.SERVING_ROLE_ARN_VAR),
        image_uri=dg.EnvVar(var.SERVING_IMAGE_URI_VAR),
        bucket=dg.EnvVar(var.SERVING_BUCKET_VAR),
    )


def _local_feature_store(paths: LocalPaths) -> Any:
    from firepipe.resources.feature_store import LocalFeatureStore

    return LocalFeatureStore(path=str(paths.online_features))


def _sagemaker_feature_store(paths: LocalPaths) -> Any:
    from firepipe.resources.feature_store import SageMakerFeatureStore

    return SageMakerFeatureStore(
        region=_region(),
        role_arn=dg.EnvVar(var.FEATURE_STORE_ROLE_ARN_VAR),
        offline_store_uri=dg.EnvVar(var.FEATURE_STORE_OFFLINE_URI_VAR),
    )


def _local_state_store(paths: LocalPaths) -> Any:
    from firepipe.resources.state_store import LocalStateStore

    return LocalStateStore(path=str(paths.state_store))


def _dynamo_state_store(paths: LocalPaths) -> Any:
    from firepipe.resources.state_store import DynamoStateStore

    return DynamoStateStore(
        state_table=dg.EnvVar(var.STATE_TABLE_VAR),
        history_table=dg.EnvVar(var.STATE_HISTORY_TABLE_VAR),
        region=_region(),
    )


def _local_queues(paths: LocalPaths) -> Any:
    from firepipe.resources.queue import LocalQueue

    return LocalQueue(path=str(paths.queues))


def _sqs_queues(paths: LocalPaths) -> Any:
    from firepipe.resources.queue import SqsQueue

    # FIFO queues keep each message group (a device's readings, its incidents) in order through
    # a worker's crash; the deployment says which kind it made.
    fifo = (_optional(var.QUEUE_FIFO_VAR) or "false").lower() in ("1", "true", "yes")
    return SqsQueue(prefix=dg.EnvVar(var.QUEUE_PREFIX_VAR), region=_region(), fifo=fifo)


def _local_topic(paths: LocalPaths) -> Any:
    from firepipe.resources.topic import LocalTopic

    return LocalTopic(path=str(paths.queues))


def _sns_topic(paths: LocalPaths) -> Any:
    from firepipe.resources.topic import SnsTopic

    return SnsTopic(
        topic_arn=dg.EnvVar(var.EVENTS_TOPIC_ARN_VAR),
        queue_prefix=dg.EnvVar(var.QUEUE_PREFIX_VAR),
        region=_region(),
    )


def _local_escalation(paths: LocalPaths) -> Any:
    from firepipe.resources.escalation import LocalEscalationTimer

    return LocalEscalationTimer(path=str(paths.escalations))


def _sfn_escalation(paths: LocalPaths) -> Any:
    from firepipe.resources.escalation import StepFunctionsEscalation

    return StepFunctionsEscalation(
        state_machine_arn=dg.EnvVar(var.ESCALATION_STATE_MACHINE_ARN_VAR), region=_region()
    )


def _local_knowledge_base(paths: LocalPaths) -> Any:
    from firepipe.resources.knowledge_base import LocalKnowledgeBase

    return LocalKnowledgeBase(
        folder=str(paths.knowledge_base / "index"),
        model_cache=str(paths.knowledge_base / "model"),
    )


def _bedrock_knowledge_base(paths: LocalPaths) -> Any:
    from firepipe.resources.knowledge_base import BedrockKnowledgeBase

    return BedrockKnowledgeBase(
        knowledge_base_id=dg.EnvVar(var.KB_ID_VAR),
        data_source_id=dg.EnvVar(var.KB_DATA_SOURCE_ID_VAR),
        bucket=dg.EnvVar(var.KB_BUCKET_VAR),
        prefix=dg.EnvVar(var.KB_PREFIX_VAR),
        region=_region(),
    )


def _local_agent(paths: LocalPaths) -> Any:
    from firepipe.resources.agent_runtime import LocalAgent

    return LocalAgent(output_root=str(paths.home / "generated"))


def _bedrock_agent(paths: LocalPaths) -> Any:
    from firepipe.resources.agent_runtime import BedrockAgent

    return BedrockAgent(
        agent_id=dg.EnvVar(var.AGENT_ID_VAR),
        agent_alias_id=dg.EnvVar(var.AGENT_ALIAS_ID_VAR),
        region=_region(),
    )


# resource key -> its implementation in each environment.
IMPLEMENTATIONS: dict[str, dict[Environment, Factory]] = {
    "lakehouse": {LOCAL: _local_lakehouse, AWS: _glue_lakehouse},
    "io_manager": {LOCAL: _io_manager(_local_lakehouse), AWS: _io_manager(_glue_lakehouse)},
    "query_engine": {LOCAL: _duckdb_query, AWS: _athena_query},
    "dbt": {LOCAL: _dbt(LOCAL), AWS: _dbt(AWS)},
    "generator_compute": {LOCAL: _local_compute, AWS: _batch_compute},
    "generation_history": {LOCAL: _sqlite_history, AWS: _dynamo_history},
    "warehouse_source": {LOCAL: _duckdb_warehouse, AWS: _snowflake_warehouse},
    "extraction_watermarks": {LOCAL: _sqlite_watermarks, AWS: _dynamo_watermarks},
    "landing_zone": {LOCAL: _local_landing, AWS: _s3_landing},
    "spark_compute": {LOCAL: _local_spark, AWS: _aws_spark},
    "training_backend": {LOCAL: _local_training, AWS: _sagemaker_training},
    "model_registry": {LOCAL: _mlflow_registry, AWS: _sagemaker_registry},
    "notifier": {LOCAL: _local_notifier, AWS: _sns_notifier},
    "model_endpoint": {LOCAL: _local_endpoint, AWS: _sagemaker_endpoint},
    "feature_store": {LOCAL: _local_feature_store, AWS: _sagemaker_feature_store},
    "state_store": {LOCAL: _local_state_store, AWS: _dynamo_state_store},
    # Every named queue (readings, scores, alarms) through one resource; the agents' topic.
    "queues": {LOCAL: _local_queues, AWS: _sqs_queues},
    "events_topic": {LOCAL: _local_topic, AWS: _sns_topic},
    "escalation": {LOCAL: _local_escalation, AWS: _sfn_escalation},
    "knowledge_base": {LOCAL: _local_knowledge_base, AWS: _bedrock_knowledge_base},
    "agent_runtime": {LOCAL: _local_agent, AWS: _bedrock_agent},
}


def resource_for(key: str, env: Environment, paths: LocalPaths) -> Any:
    """The implementation of resource `key` in `env`."""
    try:
        by_env = IMPLEMENTATIONS[key]
    except KeyError:
        raise KeyError(f"no resource {key!r}: one of {', '.join(IMPLEMENTATIONS)}") from None
    return by_env[env](paths)


def resources_for(env: Environment, paths: LocalPaths) -> dict[str, Any]:
    """Every resource of `env`, by key: what the definitions bind."""
    return {key: resource_for(key, env, paths) for key in IMPLEMENTATIONS}
