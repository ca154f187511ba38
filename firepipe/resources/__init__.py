"""Ports and adapters: one resource per outside system, a local and an AWS implementation each.

`resources_for` is the only place that maps an environment to implementations. AWS settings
come through `dg.EnvVar`, so the definitions load anywhere and a missing variable is reported
when a run first uses the resource.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from firepipe.resources.lakehouse.catalogs import GlueLakehouse, Lakehouse, LocalLakehouse
from firepipe.resources.lakehouse.io_manager import IcebergIOManager
from firepipe.settings import Environment, LocalPaths

# Environment variables the AWS deployment sets (the CDK app passes them to the ECS tasks).
AWS_REGION_VAR = "AWS_REGION"
LAKE_WAREHOUSE_VAR = "FIREPIPE_LAKE_WAREHOUSE"


def lakehouse_for(env: Environment, paths: LocalPaths) -> Lakehouse:
    if env is Environment.AWS:
        return GlueLakehouse(
            warehouse=dg.EnvVar(LAKE_WAREHOUSE_VAR),
            region=dg.EnvVar(AWS_REGION_VAR),
        )
    return LocalLakehouse(root=str(paths.lake))


def resources_for(env: Environment, paths: LocalPaths) -> dict[str, Any]:
    lakehouse = lakehouse_for(env, paths)
    return {
        "lakehouse": lakehouse,
        "io_manager": IcebergIOManager(lakehouse=lakehouse),
    }
