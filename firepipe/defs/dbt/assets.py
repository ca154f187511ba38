"""dbt models as assets, downstream of silver/sensor_readings.

The manifest (dbt/target/manifest.json, from `make dbt-manifest`) decides the assets; the run
is `dbt build` (models, then their tests as asset checks) against the environment's target.
"""

import json
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from firepipe import names, settings
from firepipe.defs.automation import FOLLOW_UPSTREAM
from firepipe.resources.dbt import require_manifest

SILVER_SOURCE = ("silver", "sensor_readings")
SILVER_ASSET_KEY = dg.AssetKey(names.SENSOR_READINGS)
GROUP_NAME = names.ANALYTICS
# dbt's models live in the analytics schema of the target (DuckDB locally, Snowflake in AWS).
MODEL_PREFIX = names.ANALYTICS


class FirepipeDbtTranslator(DagsterDbtTranslator):
    """Sources keep the lake's key (silver.sensor_readings is the silver asset), so lineage runs
    from silver through the models; models are keyed analytics/<model>."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            source = (dbt_resource_props["source_name"], dbt_resource_props["name"])
            if source == SILVER_SOURCE:
                return SILVER_ASSET_KEY
            return dg.AssetKey(list(source))
        return dg.AssetKey([MODEL_PREFIX, dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return GROUP_NAME

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> dg.AutomationCondition | None:
        return FOLLOW_UPSTREAM


def dbt_vars() -> dict[str, str]:
    """What profiles.yml needs to find the local lake and DuckDB file (unused by Snowflake)."""
    return {"firepipe_home": str(settings.local_paths().home)}


@dbt_assets(
    manifest=require_manifest(),
    dagster_dbt_translator=FirepipeDbtTranslator(),
    name="analytics_models",
)
def analytics_models(context: dg.AssetExecutionContext, dbt: DbtCliResource) -> Iterator[Any]:
    """Per-site daily summaries and alarm rates, built and tested by dbt."""
    args = ["build", "--vars", json.dumps(dbt_vars())]
    yield from dbt.cli(args, context=context).stream()
