"""The ingestion resources of each environment: the field warehouse source, the extraction
watermark store and the landing zone (`resources_for` binds them)."""

from typing import Any

import dagster as dg

from firepipe.resources.aws_env import (
    AWS_REGION_VAR,
    FIELD_TABLE_VAR,
    LANDING_BUCKET_VAR,
    LANDING_PREFIX_VAR,
    SNOWFLAKE_ACCOUNT_VAR,
    SNOWFLAKE_DATABASE_VAR,
    SNOWFLAKE_PASSWORD_VAR,
    SNOWFLAKE_PRIVATE_KEY_PASSPHRASE_VAR,
    SNOWFLAKE_PRIVATE_KEY_VAR,
    SNOWFLAKE_ROLE_VAR,
    SNOWFLAKE_USER_VAR,
    SNOWFLAKE_WAREHOUSE_VAR,
    WATERMARKS_TABLE_VAR,
)
from firepipe.resources.landing import LandingZone, LocalLandingZone, S3LandingZone
from firepipe.resources.warehouse import DuckDBWarehouseSource, WarehouseSource
from firepipe.resources.watermarks import (
    DynamoWatermarkStore,
    SqliteWatermarkStore,
    WatermarkStore,
)
from firepipe.settings import Environment, LocalPaths, SnowflakeAuth, snowflake_auth

# The local field table, which `firepipe seed` fills.
LOCAL_FIELD_TABLE = "field_readings"


def _snowflake_credentials(auth: SnowflakeAuth) -> dict[str, Any]:
    if auth is SnowflakeAuth.PASSWORD:
        return {"password": dg.EnvVar(SNOWFLAKE_PASSWORD_VAR)}
    credentials: dict[str, Any] = {"private_key": dg.EnvVar(SNOWFLAKE_PRIVATE_KEY_VAR)}
    if auth is SnowflakeAuth.ENCRYPTED_KEY_PAIR:
        credentials["private_key_password"] = dg.EnvVar(SNOWFLAKE_PRIVATE_KEY_PASSPHRASE_VAR)
    return credentials


def warehouse_source_for(env: Environment, paths: LocalPaths) -> WarehouseSource:
    if env is Environment.AWS:
        # dagster-snowflake is in the aws extra only.
        from dagster_snowflake import SnowflakeResource

        from firepipe.resources.snowflake_warehouse import SnowflakeWarehouseSource

        snowflake = SnowflakeResource(
            account=dg.EnvVar(SNOWFLAKE_ACCOUNT_VAR),
            user=dg.EnvVar(SNOWFLAKE_USER_VAR),
            role=dg.EnvVar(SNOWFLAKE_ROLE_VAR),
            warehouse=dg.EnvVar(SNOWFLAKE_WAREHOUSE_VAR),
            database=dg.EnvVar(SNOWFLAKE_DATABASE_VAR),
            **_snowflake_credentials(snowflake_auth()),
        )
        return SnowflakeWarehouseSource(snowflake=snowflake, table=dg.EnvVar(FIELD_TABLE_VAR))
    return DuckDBWarehouseSource(path=str(paths.field_warehouse), table=LOCAL_FIELD_TABLE)


def extraction_watermarks_for(env: Environment, paths: LocalPaths) -> WatermarkStore:
    if env is Environment.AWS:
        return DynamoWatermarkStore(
            table_name=dg.EnvVar(WATERMARKS_TABLE_VAR), region=dg.EnvVar(AWS_REGION_VAR)
        )
    return SqliteWatermarkStore(path=str(paths.extraction_watermarks))


def landing_zone_for(env: Environment, paths: LocalPaths) -> LandingZone:
    if env is Environment.AWS:
        return S3LandingZone(
            bucket=dg.EnvVar(LANDING_BUCKET_VAR),
            prefix=dg.EnvVar(LANDING_PREFIX_VAR),
            region=dg.EnvVar(AWS_REGION_VAR),
        )
    return LocalLandingZone(root=str(paths.landing))


def ingestion_resources(env: Environment, paths: LocalPaths) -> dict[str, Any]:
    """The resource keys the ingestion assets and sensors take."""
    return {
        "warehouse_source": warehouse_source_for(env, paths),
        "extraction_watermarks": extraction_watermarks_for(env, paths),
        "landing_zone": landing_zone_for(env, paths),
    }
