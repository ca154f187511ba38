"""Ports and adapters: one resource per outside system, a local and an AWS implementation each.

`resources_for` is the only place that maps an environment to implementations (the ingestion
resources through `ingestion_resources`). AWS settings come through `dg.EnvVar`, named once in
`aws_env`, so the definitions load anywhere and a missing variable is reported when a run first
uses the resource.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from firepipe.resources.aws_env import (
    ATHENA_OUTPUT_LOCATION_VAR,
    ATHENA_WORKGROUP_VAR,
    AWS_REGION_VAR,
    BATCH_CPU_QUEUE_VAR,
    BATCH_GPU_QUEUE_VAR,
    BATCH_JOB_DEFINITION_VAR,
    EMR_APPLICATION_ID_VAR,
    EMR_ENTRY_POINT_VAR,
    EMR_EXECUTION_ROLE_ARN_VAR,
    EMR_PYTHON_VAR,
    GENERATION_HISTORY_TABLE_VAR,
    LAKE_WAREHOUSE_VAR,
    MLFLOW_TRACKING_SERVER_ARN_VAR,
    PIPES_BUCKET_VAR,
    SAGEMAKER_ROLE_ARN_VAR,
    TRAINING_BUCKET_VAR,
    TRAINING_IMAGE_URI_VAR,
)
from firepipe.resources.compute import BatchCompute, GeneratorCompute, LocalCompute
from firepipe.resources.dbt_project import dbt_resource_for
from firepipe.resources.history import (
    DynamoGenerationHistory,
    GenerationHistory,
    SqliteGenerationHistory,
)
from firepipe.resources.ingestion import ingestion_resources
from firepipe.resources.lakehouse.catalogs import GlueLakehouse, Lakehouse, LocalLakehouse
from firepipe.resources.lakehouse.io_manager import IcebergIOManager
from firepipe.resources.query import AthenaQueryEngine, DuckDBQueryEngine, QueryEngine
from firepipe.resources.registry import (
    LocalModelRegistry,
    ModelRegistry,
    SageMakerModelRegistry,
)
from firepipe.resources.spark import EmrServerlessSparkCompute, LocalSparkCompute, SparkCompute
from firepipe.resources.training import (
    LocalTrainingBackend,
    SageMakerTrainingBackend,
    TrainingBackend,
)
from firepipe.settings import Environment, LocalPaths


def lakehouse_for(env: Environment, paths: LocalPaths) -> Lakehouse:
    if env is Environment.AWS:
        return GlueLakehouse(
            warehouse=dg.EnvVar(LAKE_WAREHOUSE_VAR),
            region=dg.EnvVar(AWS_REGION_VAR),
        )
    return LocalLakehouse(root=str(paths.lake))


def generator_compute_for(env: Environment) -> GeneratorCompute:
    if env is Environment.AWS:
        return BatchCompute(
            region=dg.EnvVar(AWS_REGION_VAR),
            job_definition=dg.EnvVar(BATCH_JOB_DEFINITION_VAR),
            cpu_job_queue=dg.EnvVar(BATCH_CPU_QUEUE_VAR),
            gpu_job_queue=dg.EnvVar(BATCH_GPU_QUEUE_VAR),
            pipes_bucket=dg.EnvVar(PIPES_BUCKET_VAR),
        )
    return LocalCompute()


def generation_history_for(env: Environment, paths: LocalPaths) -> GenerationHistory:
    if env is Environment.AWS:
        return DynamoGenerationHistory(
            table_name=dg.EnvVar(GENERATION_HISTORY_TABLE_VAR),
            region=dg.EnvVar(AWS_REGION_VAR),
        )
    return SqliteGenerationHistory(path=str(paths.generation_history))


def spark_compute_for(env: Environment) -> SparkCompute:
    if env is Environment.AWS:
        return EmrServerlessSparkCompute(
            region=dg.EnvVar(AWS_REGION_VAR),
            application_id=dg.EnvVar(EMR_APPLICATION_ID_VAR),
            execution_role_arn=dg.EnvVar(EMR_EXECUTION_ROLE_ARN_VAR),
            entry_point=dg.EnvVar(EMR_ENTRY_POINT_VAR),
            python=dg.EnvVar(EMR_PYTHON_VAR),
            pipes_bucket=dg.EnvVar(PIPES_BUCKET_VAR),
        )
    return LocalSparkCompute()


def query_engine_for(env: Environment, lakehouse: Lakehouse) -> QueryEngine:
    if env is Environment.AWS:
        return AthenaQueryEngine(
            region=dg.EnvVar(AWS_REGION_VAR),
            workgroup=dg.EnvVar(ATHENA_WORKGROUP_VAR),
            output_location=dg.EnvVar(ATHENA_OUTPUT_LOCATION_VAR),
        )
    return DuckDBQueryEngine(lakehouse=lakehouse)


def training_backend_for(env: Environment, paths: LocalPaths) -> TrainingBackend:
    if env is Environment.AWS:
        return SageMakerTrainingBackend(
            region=dg.EnvVar(AWS_REGION_VAR),
            role_arn=dg.EnvVar(SAGEMAKER_ROLE_ARN_VAR),
            image_uri=dg.EnvVar(TRAINING_IMAGE_URI_VAR),
            bucket=dg.EnvVar(TRAINING_BUCKET_VAR),
        )
    return LocalTrainingBackend(work_dir=str(paths.training))


def model_registry_for(env: Environment, paths: LocalPaths) -> ModelRegistry:
    if env is Environment.AWS:
        return SageMakerModelRegistry(
            tracking_server_arn=dg.EnvVar(MLFLOW_TRACKING_SERVER_ARN_VAR),
            region=dg.EnvVar(AWS_REGION_VAR),
        )
    return LocalModelRegistry(root=str(paths.mlflow))


def resources_for(env: Environment, paths: LocalPaths) -> dict[str, Any]:
    lakehouse = lakehouse_for(env, paths)
    return {
        "lakehouse": lakehouse,
        "io_manager": IcebergIOManager(lakehouse=lakehouse),
        "query_engine": query_engine_for(env, lakehouse),
        "dbt": dbt_resource_for(env),
        "generator_compute": generator_compute_for(env),
        "generation_history": generation_history_for(env, paths),
        # warehouse_source, extraction_watermarks, landing_zone
        **ingestion_resources(env, paths),
        "spark_compute": spark_compute_for(env),
        "training_backend": training_backend_for(env, paths),
        "model_registry": model_registry_for(env, paths),
    }
