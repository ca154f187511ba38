"""Ports and adapters: one resource per outside system, a local and an AWS implementation each.

`resources_for` is the only place that maps an environment to implementations. AWS settings
come through `dg.EnvVar`, so the definitions load anywhere and a missing variable is reported
when a run first uses the resource.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from firepipe.resources.compute import BatchCompute, GeneratorCompute, LocalCompute
from firepipe.resources.history import (
    DynamoGenerationHistory,
    GenerationHistory,
    SqliteGenerationHistory,
)
from firepipe.resources.lakehouse.catalogs import GlueLakehouse, Lakehouse, LocalLakehouse
from firepipe.resources.lakehouse.io_manager import IcebergIOManager
from firepipe.settings import Environment, LocalPaths

# Environment variables the AWS deployment sets (the CDK app passes them to the ECS tasks).
AWS_REGION_VAR = "AWS_REGION"
LAKE_WAREHOUSE_VAR = "FIREPIPE_LAKE_WAREHOUSE"
BATCH_JOB_DEFINITION_VAR = "FIREPIPE_BATCH_JOB_DEFINITION"
BATCH_CPU_QUEUE_VAR = "FIREPIPE_BATCH_CPU_QUEUE"
BATCH_GPU_QUEUE_VAR = "FIREPIPE_BATCH_GPU_QUEUE"
PIPES_BUCKET_VAR = "FIREPIPE_PIPES_BUCKET"
GENERATION_HISTORY_TABLE_VAR = "FIREPIPE_GENERATION_HISTORY_TABLE"


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


def resources_for(env: Environment, paths: LocalPaths) -> dict[str, Any]:
    lakehouse = lakehouse_for(env, paths)
    return {
        "lakehouse": lakehouse,
        "io_manager": IcebergIOManager(lakehouse=lakehouse),
        "generator_compute": generator_compute_for(env),
        "generation_history": generation_history_for(env, paths),
    }
