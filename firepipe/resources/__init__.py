"""Ports and adapters: one resource per outside system, a local and an AWS implementation each.

`resources_for` is the only place that maps an environment to implementations. AWS settings
come through `dg.EnvVar`, so the definitions load anywhere and a missing variable is reported
when a run first uses the resource.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

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
from firepipe.resources.spark import EmrServerlessSparkCompute, LocalSparkCompute, SparkCompute
from firepipe.settings import Environment, LocalPaths

# Environment variables the AWS deployment sets (the CDK app passes them to the ECS tasks).
AWS_REGION_VAR = "AWS_REGION"
LAKE_WAREHOUSE_VAR = "FIREPIPE_LAKE_WAREHOUSE"
BATCH_JOB_DEFINITION_VAR = "FIREPIPE_BATCH_JOB_DEFINITION"
BATCH_CPU_QUEUE_VAR = "FIREPIPE_BATCH_CPU_QUEUE"
BATCH_GPU_QUEUE_VAR = "FIREPIPE_BATCH_GPU_QUEUE"
PIPES_BUCKET_VAR = "FIREPIPE_PIPES_BUCKET"
GENERATION_HISTORY_TABLE_VAR = "FIREPIPE_GENERATION_HISTORY_TABLE"
ATHENA_WORKGROUP_VAR = "FIREPIPE_ATHENA_WORKGROUP"
ATHENA_OUTPUT_LOCATION_VAR = "FIREPIPE_ATHENA_OUTPUT_LOCATION"  # s3://bucket/prefix/ for results
EMR_APPLICATION_ID_VAR = "FIREPIPE_EMR_APPLICATION_ID"
EMR_EXECUTION_ROLE_ARN_VAR = "FIREPIPE_EMR_EXECUTION_ROLE_ARN"
EMR_ENTRY_POINT_VAR = "FIREPIPE_EMR_ENTRY_POINT"  # s3:// URI of services/spark_features.py
EMR_PYTHON_VAR = "FIREPIPE_EMR_PYTHON"  # Python 3.11 with firepipe in the application's image


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
    }
