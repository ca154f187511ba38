"""The AWS lakehouse: Glue Data Catalog + S3 warehouse, against a moto server."""

import boto3
import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from firepipe.lib.lakehouse import tables
from firepipe.lib.lakehouse.io_manager import IcebergIOManager
from firepipe.resources.lakehouse import GlueLakehouse

pytestmark = pytest.mark.aws
REGION = "eu-west-1"


@pytest.fixture
def glue_lakehouse(moto_endpoint: str, aws_credentials: None, request) -> GlueLakehouse:
    bucket = f"lake-{request.node.name.replace('_', '-')[:40]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    return GlueLakehouse(
        warehouse=f"s3://{bucket}/warehouse",
        region=REGION,
        glue_endpoint_url=moto_endpoint,
        s3_endpoint_url=moto_endpoint,
    )


FAMILIES = dg.StaticPartitionsDefinition(["flaming", "nuisance"])


def test_tables_are_registered_in_glue_and_written_to_s3(
    glue_lakehouse: GlueLakehouse, moto_endpoint: str
) -> None:
    df = pl.DataFrame({"device_id": ["a", "b"], "x": pl.Series([1.0, 2.0], dtype=pl.Float32)})
    result = tables.write_table(glue_lakehouse.catalog(), "silver.readings", df)
    assert_frame_equal(glue_lakehouse.read("silver.readings").sort("device_id"), df)
    # The moto server is shared by the session: other tests may have left tables in Glue.
    assert "silver.readings" in glue_lakehouse.list_tables()

    glue = boto3.client("glue", endpoint_url=moto_endpoint, region_name=REGION)
    table = glue.get_table(DatabaseName="silver", Name="readings")["Table"]
    assert table["Parameters"]["table_type"].upper() == "ICEBERG"
    metadata = table["Parameters"]["metadata_location"]
    assert metadata.startswith(glue_lakehouse.warehouse)
    assert result.location.startswith(glue_lakehouse.warehouse)

    bucket, _, prefix = glue_lakehouse.warehouse.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    assert any(k.endswith(".parquet") for k in keys)


def test_io_manager_overwrites_partitions_on_glue(glue_lakehouse: GlueLakehouse) -> None:
    @dg.asset(
        key=["bronze", "events"],
        partitions_def=FAMILIES,
        metadata={"partition_expr": "family"},
    )
    def events(context: dg.AssetExecutionContext) -> pl.DataFrame:
        n = 2 if context.partition_key == "flaming" else 1
        return pl.DataFrame({"n": [n] * n})

    io_manager = IcebergIOManager(lakehouse=glue_lakehouse)
    for key in ["flaming", "nuisance", "flaming"]:
        result = dg.materialize([events], resources={"io_manager": io_manager}, partition_key=key)
        assert result.success
    out = glue_lakehouse.read("bronze.events")
    assert sorted(out.rows()) == [(1, "nuisance"), (2, "flaming"), (2, "flaming")]


def test_a_warehouse_that_is_not_s3_is_refused() -> None:
    house = GlueLakehouse(warehouse="/tmp/lake", region=REGION)
    with pytest.raises(tables.LakehouseError, match="s3:// warehouse"):
        house.catalog()
