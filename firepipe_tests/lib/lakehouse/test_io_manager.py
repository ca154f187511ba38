from datetime import UTC, datetime

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from firepipe.lib.lakehouse.io_manager import IcebergIOManager, partition_layout
from firepipe.lib.lakehouse.tables import LakehouseError, TimeRange, Values
from firepipe.resources.lakehouse import LocalLakehouse

FAMILIES = dg.StaticPartitionsDefinition(["flaming", "smouldering"])
DAILY = dg.DailyPartitionsDefinition(start_date="2026-03-01", end_date="2026-03-05")
MULTI = dg.MultiPartitionsDefinition({"family": FAMILIES, "date": DAILY})


def resources(lake: LocalLakehouse) -> dict[str, object]:
    return {"io_manager": IcebergIOManager(lakehouse=lake)}


def materialise(assets: list, lake: LocalLakehouse, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, resources=resources(lake), **kwargs)


def metadata_of(result: dg.ExecuteInProcessResult, key: list[str]) -> dict[str, object]:
    [event] = [
        e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key)
    ]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


READINGS = pl.DataFrame(
    {
        "device_id": ["d1", "d1", "d2"],
        "temperature_c": pl.Series([20.5, 21.0, 19.0], dtype=pl.Float32),
    }
)


def test_round_trip_to_eager_and_lazy_inputs_with_metadata(lakehouse: LocalLakehouse) -> None:
    seen: dict[str, pl.DataFrame] = {}

    @dg.asset(key=["bronze", "readings"])
    def readings() -> pl.DataFrame:
        return READINGS

    @dg.asset(key=["silver", "eager"], ins={"r": dg.AssetIn(["bronze", "readings"])})
    def eager(r: pl.DataFrame) -> None:
        seen["eager"] = r

    @dg.asset(key=["silver", "lazy"], ins={"r": dg.AssetIn(["bronze", "readings"])})
    def lazy(r: pl.LazyFrame) -> None:
        assert isinstance(r, pl.LazyFrame)
        seen["lazy"] = r.collect()

    result = materialise([readings, eager, lazy], lakehouse)
    assert result.success
    assert_frame_equal(seen["eager"].sort("temperature_c"), READINGS.sort("temperature_c"))
    assert_frame_equal(seen["lazy"].sort("temperature_c"), READINGS.sort("temperature_c"))
    meta = metadata_of(result, ["bronze", "readings"])
    assert meta["dagster/row_count"] == 3
    assert meta["dagster/table_name"] == "bronze.readings"
    table = lakehouse.catalog().load_table("bronze.readings")
    assert meta["iceberg/snapshot_id"] == str(table.current_snapshot().snapshot_id)
    columns = {c.name: c.type for c in meta["dagster/column_schema"].columns}
    assert columns == {"device_id": "large_string", "temperature_c": "float"}
    # assets returning None store nothing
    assert lakehouse.list_tables() == ["bronze.readings"]


def test_static_partition_rematerialised_replaces_only_itself(lakehouse: LocalLakehouse) -> None:
    calls = {"n": 0}

    @dg.asset(
        key=["bronze", "by_family"],
        partitions_def=FAMILIES,
        metadata={"partition_expr": "family"},
    )
    def by_family(context: dg.AssetExecutionContext) -> pl.DataFrame:
        calls["n"] += 1
        rows = 2 if context.partition_key == "flaming" else 3
        return pl.DataFrame({"run": [calls["n"]] * rows})  # family column filled in

    for key in ["flaming", "smouldering", "flaming"]:
        assert materialise([by_family], lakehouse, partition_key=key).success
    out = lakehouse.read("bronze.by_family")
    counts = dict(out.group_by("family").agg(pl.col("run").unique()).iter_rows())
    assert counts == {"flaming": [3], "smouldering": [2]}
    assert out.height == 5
    fields = lakehouse.catalog().load_table("bronze.by_family").spec().fields
    assert [f.name for f in fields] == ["family"]


@dg.asset(key=["silver", "daily"], partitions_def=DAILY, metadata={"partition_expr": "ts"})
def daily(context: dg.AssetExecutionContext) -> pl.DataFrame:
    start = context.partition_time_window.start
    hours = [start.replace(hour=h) for h in (0, 6, 23)]
    return pl.DataFrame({"ts": hours, "day": [context.partition_key] * 3}).with_columns(
        pl.col("ts").dt.cast_time_unit("us")
    )


def test_daily_partitions_feed_a_partitioned_downstream_its_own_day(
    lakehouse: LocalLakehouse,
) -> None:
    seen: dict[str, pl.DataFrame] = {}

    @dg.asset(
        key=["gold", "daily_copy"],
        partitions_def=DAILY,
        ins={"src": dg.AssetIn(["silver", "daily"])},
        metadata={"partition_expr": "ts"},
    )
    def daily_copy(context: dg.AssetExecutionContext, src: pl.DataFrame) -> pl.DataFrame:
        seen[context.partition_key] = src
        return src

    for day in ["2026-03-01", "2026-03-02", "2026-03-01"]:
        assert materialise([daily, daily_copy], lakehouse, partition_key=day).success
    assert lakehouse.table_rows("silver.daily") == 6
    assert set(seen["2026-03-02"]["day"]) == {"2026-03-02"}
    assert seen["2026-03-02"].height == 3
    spec = lakehouse.catalog().load_table("silver.daily").spec()
    assert [(f.name, str(f.transform)) for f in spec.fields] == [("ts_day", "day")]


def test_a_time_partition_with_rows_of_another_day_fails(lakehouse: LocalLakehouse) -> None:
    @dg.asset(key=["silver", "leaky"], partitions_def=DAILY, metadata={"partition_expr": "ts"})
    def leaky() -> pl.DataFrame:
        return pl.DataFrame({"ts": [datetime(2026, 3, 4, tzinfo=UTC)]})

    with pytest.raises(LakehouseError, match="outside the partition"):
        materialise([leaky], lakehouse, partition_key="2026-03-01")


def test_multi_partitions_map_to_two_iceberg_fields(lakehouse: LocalLakehouse) -> None:
    @dg.asset(
        key=["bronze", "multi"],
        partitions_def=MULTI,
        metadata={"partition_expr": {"family": "family", "date": "ts"}},
    )
    def multi(context: dg.AssetExecutionContext) -> pl.DataFrame:
        keys = context.partition_key.keys_by_dimension
        day = datetime.fromisoformat(keys["date"]).replace(tzinfo=UTC, hour=1)
        return pl.DataFrame({"ts": [day], "tag": [str(context.partition_key)]})

    keys = ["2026-03-01|flaming", "2026-03-01|smouldering", "2026-03-02|flaming"]
    for key in [*keys, keys[0]]:
        assert materialise([multi], lakehouse, partition_key=key).success
    out = lakehouse.read("bronze.multi")
    assert sorted(out["tag"].to_list()) == sorted(keys)
    assert (out["tag"] == out["ts"].dt.strftime("%Y-%m-%d") + "|" + out["family"]).all()
    spec = lakehouse.catalog().load_table("bronze.multi").spec()
    assert sorted(str(f.transform) for f in spec.fields) == ["day", "identity"]


def test_partition_layout_merges_contiguous_days_into_one_range() -> None:
    keys = ["2026-03-01", "2026-03-02", "2026-03-04"]
    columns, scope = partition_layout(DAILY, keys, "ts")
    assert [(c.column, c.transform) for c in columns] == [("ts", "day")]
    ranges = [cell[0] for cell in scope.cells]
    assert all(isinstance(r, TimeRange) for r in ranges)
    assert [(r.start.day, r.end.day) for r in ranges] == [(1, 3), (4, 5)]
    _, static = partition_layout(FAMILIES, ["flaming", "smouldering"], "family")
    assert static.cells == ((Values("family", ("flaming", "smouldering")),),)


def test_partitioned_asset_without_partition_expr_is_refused(lakehouse: LocalLakehouse) -> None:
    @dg.asset(key=["bronze", "nameless"], partitions_def=FAMILIES)
    def nameless() -> pl.DataFrame:
        return pl.DataFrame({"x": [1]})

    with pytest.raises(LakehouseError, match="partition_expr"):
        materialise([nameless], lakehouse, partition_key="flaming")


def test_asset_keys_outside_the_lake_namespaces_are_refused(lakehouse: LocalLakehouse) -> None:
    @dg.asset(key=["scratch", "x"])
    def stray() -> pl.DataFrame:
        return pl.DataFrame({"x": [1]})

    with pytest.raises(LakehouseError, match="bronze, silver, gold, ml"):
        materialise([stray], lakehouse)


def test_new_column_is_reported_and_old_rows_read_as_null(lakehouse: LocalLakehouse) -> None:
    version = {"v": 1}

    @dg.asset(
        key=["gold", "evolving"],
        partitions_def=FAMILIES,
        metadata={"partition_expr": "family"},
    )
    def evolving() -> pl.DataFrame:
        frame = pl.DataFrame({"x": [1.0]})
        return frame if version["v"] == 1 else frame.with_columns(pl.lit(2.0).alias("y"))

    materialise([evolving], lakehouse, partition_key="flaming")
    version["v"] = 2
    result = materialise([evolving], lakehouse, partition_key="smouldering")
    assert metadata_of(result, ["gold", "evolving"])["iceberg/added_columns"] == "y"
    out = lakehouse.read("gold.evolving").sort("family")
    assert out["y"].to_list() == [None, 2.0]
