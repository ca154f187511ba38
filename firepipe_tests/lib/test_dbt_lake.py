"""The dbt-duckdb plugin that streams a lake table's current snapshot into dbt's DuckDB."""

from pathlib import Path

import polars as pl
import pytest
from dbt.adapters.duckdb.utils import SourceConfig
from polars.testing import assert_frame_equal

from firepipe.lib.dbt_lake import LakePluginError, Plugin
from firepipe.lib.lakehouse import tables
from firepipe.resources.lakehouse import LocalLakehouse


def _source(meta: dict[str, object] | None = None) -> SourceConfig:
    return SourceConfig(
        name="sensor_readings",
        identifier="sensor_readings",
        schema="silver",
        database=None,
        meta=meta or {},
        tags=[],
    )


def test_loads_the_current_snapshot_or_a_pinned_one(lakehouse: LocalLakehouse) -> None:
    first = pl.DataFrame({"device_id": ["a", "b"], "x": [1.0, 2.0]})
    old = tables.write_table(lakehouse.catalog(), "silver.sensor_readings", first)
    second = pl.DataFrame({"device_id": ["c"], "x": [3.0]})
    tables.write_table(lakehouse.catalog(), "silver.sensor_readings", second)
    plugin = Plugin(name="firepipe_lake", plugin_config={"lake_root": lakehouse.root})

    current = pl.from_arrow(plugin.load(_source()).read_all())
    assert_frame_equal(current, second)
    pinned = pl.from_arrow(plugin.load(_source({"snapshot_id": old.snapshot_id})).read_all())
    assert_frame_equal(pinned.sort("device_id"), first)


def test_a_missing_lake_or_table_is_named(tmp_path: Path, lakehouse: LocalLakehouse) -> None:
    with pytest.raises(LakePluginError, match="needs `lake_root`"):
        Plugin(name="firepipe_lake", plugin_config={})
    empty = Plugin(name="firepipe_lake", plugin_config={"lake_root": str(tmp_path / "nowhere")})
    with pytest.raises(LakePluginError, match="no Iceberg catalog"):
        empty.load(_source())
    tables.write_table(lakehouse.catalog(), "bronze.other", pl.DataFrame({"x": [1]}))
    plugin = Plugin(name="firepipe_lake", plugin_config={"lake_root": lakehouse.root})
    with pytest.raises(LakePluginError, match=r"silver\.sensor_readings is not in the lake"):
        plugin.load(_source())
