"""Key-range writes (an extraction chunk replaces exactly its (updated_at, id) range) and table
partitioning declared as Iceberg spells it, on a real local Iceberg catalog."""

import os
import random
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
import pyarrow.parquet as pq
import pytest
from pyiceberg.transforms import BucketTransform, DayTransform, HourTransform, IdentityTransform

from firepipe.lib.lakehouse import tables
from firepipe.lib.lakehouse.io_manager import IcebergIOManager
from firepipe.resources.lakehouse import LocalLakehouse

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=1)
T2 = T0 + timedelta(seconds=2)


def keyed(keys: list[tuple[datetime, int]], value: float) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "updated_at": [t for t, _ in keys],
            "id": [i for _, i in keys],
            "value": [value] * len(keys),
        },
        schema={"updated_at": pl.Datetime("us", "UTC"), "id": pl.Int64, "value": pl.Float64},
    )


def key_scope(first: tuple[datetime, int], last: tuple[datetime, int]) -> tables.Scope:
    return tables.Scope(((tables.KeyRange("updated_at", "id", first, last),),))


def test_rewriting_a_key_range_replaces_it_and_keeps_rows_sharing_its_edge_time(
    lakehouse: LocalLakehouse,
) -> None:
    catalog = lakehouse.catalog()
    first = [(T0, 1), (T0, 2), (T1, 3), (T1, 4)]
    second = [(T1, 5), (T1, 6), (T2, 7)]  # starts inside the first chunk's last second
    tables.write_table(catalog, "bronze.k", keyed(first, 1.0), scope=key_scope(first[0], first[-1]))
    tables.write_table(
        catalog, "bronze.k", keyed(second, 2.0), scope=key_scope(second[0], second[-1])
    )
    # The first chunk again (a re-run after a crash), with new values and one row fewer.
    tables.write_table(
        catalog, "bronze.k", keyed(first[:3], 9.0), scope=key_scope(first[0], first[-1])
    )
    out = lakehouse.read("bronze.k").sort("id")
    assert out["id"].to_list() == [1, 2, 3, 5, 6, 7]
    assert out["value"].to_list() == [9.0, 9.0, 9.0, 2.0, 2.0, 2.0]


def test_iceberg_and_polars_filters_select_the_same_rows_as_tuple_order(
    lakehouse: LocalLakehouse,
) -> None:
    rng = random.Random(4)
    keys = sorted(
        {(T0 + timedelta(seconds=rng.randrange(5)), rng.randrange(40)) for _ in range(60)}
    )
    frame = keyed(keys, 0.0)
    tables.write_table(lakehouse.catalog(), "bronze.f", frame)
    table = lakehouse.catalog().load_table("bronze.f")
    for _ in range(20):
        a, b = sorted(rng.sample(keys, 2))
        first = (a[0], a[1] + rng.choice([-1, 0, 1]))
        scope = key_scope(first, b)
        expected = sorted(k[1] for k in keys if first <= k <= b)
        by_polars = frame.filter(scope.polars_filter())["id"].sort().to_list()
        by_iceberg = sorted(
            table.scan(row_filter=scope.iceberg_filter()).to_arrow()["id"].to_pylist()
        )
        assert by_polars == by_iceberg == expected
        assert expected  # a and b themselves are in range


def test_rows_outside_the_key_range_and_bad_ranges_are_refused(
    lakehouse: LocalLakehouse,
) -> None:
    with pytest.raises(tables.PartitionScopeError, match="1 of 2 rows fall outside"):
        tables.write_table(
            lakehouse.catalog(),
            "bronze.o",
            keyed([(T0, 1), (T1, 9)], 0.0),
            scope=key_scope((T0, 1), (T1, 8)),
        )
    with pytest.raises(tables.LakehouseError, match="timezone-aware"):
        tables.KeyRange("updated_at", "id", (datetime(2026, 1, 1), 1), (T0, 2))
    with pytest.raises(tables.LakehouseError, match="backwards"):
        tables.KeyRange("updated_at", "id", (T1, 1), (T0, 2))


def test_staged_files_are_checked_against_a_key_range_from_their_statistics(
    lakehouse: LocalLakehouse,
) -> None:
    catalog = lakehouse.catalog()
    tables.write_table(catalog, "bronze.s", keyed([(T0, 1)], 1.0))
    staging = tables.staging_directory(catalog, "bronze.s", "run1").removeprefix("file://")
    inside, outside = f"{staging}/inside.parquet", f"{staging}/outside.parquet"
    os.makedirs(staging)
    pq.write_table(keyed([(T1, 4), (T1, 5)], 2.0).to_arrow(), inside)
    pq.write_table(keyed([(T1, 4), (T1, 6)], 2.0).to_arrow(), outside)
    with pytest.raises(tables.PartitionScopeError, match="outside the partition"):
        tables.commit_files(
            catalog, "bronze.s", [f"file://{outside}"], scope=key_scope((T1, 4), (T1, 5))
        )
    tables.commit_files(
        catalog, "bronze.s", [f"file://{inside}"], scope=key_scope((T1, 4), (T1, 5))
    )
    assert lakehouse.read("bronze.s").sort("id")["id"].to_list() == [1, 4, 5]


def test_partitioning_text_parses_to_fields_and_bad_text_is_refused() -> None:
    parsed = tables.parse_partitioning(
        ["day(ts)", "hour( ts )", "bucket(16, device_id)", "site_id"]
    )
    assert parsed == [
        tables.PartitionColumn("ts", "day"),
        tables.PartitionColumn("ts", "hour"),
        tables.PartitionColumn("device_id", "bucket", 16),
        tables.PartitionColumn("site_id"),
    ]
    assert [p.field_name for p in parsed] == ["ts_day", "ts_hour", "device_id_bucket_16", "site_id"]
    for bad in (["month(ts)"], ["bucket(device_id)"], ["day(ts)", "day(ts)"], "day(ts)"):
        with pytest.raises(tables.LakehouseError):
            tables.parse_partitioning(bad)
    with pytest.raises(tables.LakehouseError, match="bucket count"):
        tables.PartitionColumn("device_id", "bucket")


def readings(devices: int, hours: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "device_id": [f"d{d}" for d in range(devices) for _ in range(hours)],
            "ts": [T0 + timedelta(hours=h) for _ in range(devices) for h in range(hours)],
            "value": [float(h) for _ in range(devices) for h in range(hours)],
        }
    )


def spec_of(lakehouse: LocalLakehouse, identifier: str) -> list[tuple[str, object]]:
    table = lakehouse.catalog().load_table(identifier)
    return [(f.name, f.transform) for f in table.spec().fields]


def test_an_unpartitioned_asset_lays_its_table_out_as_its_metadata_says(
    lakehouse: LocalLakehouse,
) -> None:
    layout = ["day(ts)", "bucket(4, device_id)"]

    @dg.asset(key=["silver", "laid_out"], metadata={"iceberg_partitioning": layout})
    def laid_out() -> pl.DataFrame:
        return readings(devices=6, hours=30)

    resources = {"io_manager": IcebergIOManager(lakehouse=lakehouse)}
    assert dg.materialize([laid_out], resources=resources).success
    assert spec_of(lakehouse, "silver.laid_out") == [
        ("ts_day", DayTransform()),
        ("device_id_bucket_4", BucketTransform(4)),
    ]
    table = lakehouse.catalog().load_table("silver.laid_out")
    files = list(table.scan().plan_files())
    assert len(files) > 2  # 2 days x up to 4 buckets, not one file
    partitions = {(f.file.partition[0], f.file.partition[1]) for f in files}
    assert len(partitions) == len(files)

    # Declared differently later: the spec is evolved and the data replaced.

    @dg.asset(key=["silver", "laid_out"], metadata={"iceberg_partitioning": ["hour(ts)"]})
    def relaid() -> pl.DataFrame:
        return readings(devices=2, hours=3)

    assert dg.materialize([relaid], resources=resources).success
    assert spec_of(lakehouse, "silver.laid_out") == [("ts_hour", HourTransform())]
    assert lakehouse.read("silver.laid_out").height == 6


def test_a_dagster_partitioned_asset_cannot_also_declare_iceberg_partitioning(
    lakehouse: LocalLakehouse,
) -> None:
    @dg.asset(
        key=["silver", "both"],
        partitions_def=dg.StaticPartitionsDefinition(["a"]),
        metadata={"partition_expr": "family", "iceberg_partitioning": ["day(ts)"]},
    )
    def both() -> pl.DataFrame:
        return pl.DataFrame({"family": ["a"]})

    with pytest.raises(tables.LakehouseError, match="drop iceberg_partitioning"):
        dg.materialize(
            [both],
            partition_key="a",
            resources={"io_manager": IcebergIOManager(lakehouse=lakehouse)},
        )


def test_identity_partitions_from_metadata_route_rows_by_value(lakehouse: LocalLakehouse) -> None:
    tables.write_table(
        lakehouse.catalog(),
        "bronze.by_site",
        pl.DataFrame({"site_id": ["a", "b", "a"], "v": [1, 2, 3]}),
        tables.parse_partitioning(["site_id"]),
    )
    assert spec_of(lakehouse, "bronze.by_site") == [("site_id", IdentityTransform())]
    table = lakehouse.catalog().load_table("bronze.by_site")
    assert sorted(f.file.partition[0] for f in table.scan().plan_files()) == ["a", "b"]
