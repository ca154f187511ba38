"""gold/sensor_features materialised from a silver table: the polars and Spark engines commit
the same features, with the spec, its hash and the silver snapshot they read."""

import json

import dagster as dg
import numpy as np
import polars as pl
import pytest

from firepipe.core.features import FeatureSpec, default_spec, reference_features
from firepipe.defs.features.assets import SILVER_TABLE, TABLE, sensor_features
from firepipe.resources.lakehouse import tables
from firepipe.resources.spark import LocalSparkCompute
from firepipe_tests.core.feature_sample import silver_sample


def materialise(lakehouse, engine: str, **config) -> dict:
    result = dg.materialize(
        [sensor_features],
        resources={"lakehouse": lakehouse, "spark_compute": LocalSparkCompute(master="local[1]")},
        run_config={"ops": {"gold__sensor_features": {"config": {"engine": engine, **config}}}},
    )
    assert result.success
    [materialisation] = result.asset_materializations_for_node("gold__sensor_features")
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [("finite_features", True)]
    return {k: v.value for k, v in materialisation.metadata.items()}


@pytest.fixture
def silver(lakehouse):
    sample = silver_sample(devices=3, seconds=700)
    tables.write_table(lakehouse.catalog(), SILVER_TABLE, sample)
    return sample


def test_polars_engine_commits_features_of_the_silver_snapshot(lakehouse, silver):
    metadata = materialise(lakehouse, "polars")
    spec = default_spec()
    snapshot = lakehouse.catalog().load_table(SILVER_TABLE).current_snapshot().snapshot_id
    assert metadata["silver_snapshot_id"] == str(snapshot)
    assert metadata["feature_spec_hash"] == spec.hash()
    assert FeatureSpec.from_json(json.dumps(metadata["feature_spec"])) == spec
    assert metadata["engine"] == "polars"
    gold = lakehouse.read(TABLE).sort("device_id", "ts")
    expected = reference_features(silver, spec)
    assert gold.height == expected.height == silver.filter(~pl.col("is_gap")).height
    for name in spec.names:
        np.testing.assert_allclose(
            gold[name].to_numpy(), expected[name].to_numpy(), rtol=1e-6, atol=1e-6
        )
    partition_fields = lakehouse.catalog().load_table(TABLE).spec().fields
    assert [(f.name, str(f.transform)) for f in partition_fields] == [("ts_day", "day")]


@pytest.mark.slow
def test_spark_engine_commits_the_same_features(lakehouse, silver):
    materialise(lakehouse, "polars")
    polars_gold = lakehouse.read(TABLE).sort("device_id", "ts")
    metadata = materialise(lakehouse, "spark")
    assert metadata["engine"] == "spark"
    spark_gold = lakehouse.read(TABLE).sort("device_id", "ts")
    assert spark_gold.schema == polars_gold.schema
    assert spark_gold.select("device_id", "ts").equals(polars_gold.select("device_id", "ts"))
    for name in default_spec().names:
        np.testing.assert_allclose(
            spark_gold[name].to_numpy(), polars_gold[name].to_numpy(), rtol=1e-6, atol=1e-6
        )


def test_polars_engine_commits_silver_that_crosses_midnight(lakehouse):
    # Readings from 23:55 to 00:06: each day's features go to a file of its own, since an
    # Iceberg data file may not span two day(ts) partitions.
    sample = silver_sample(devices=2, seconds=700).with_columns(
        pl.col("ts") + pl.duration(hours=23, minutes=55)
    )
    tables.write_table(lakehouse.catalog(), SILVER_TABLE, sample)
    materialise(lakehouse, "polars")
    gold = lakehouse.read(TABLE)
    assert gold.height == sample.filter(~pl.col("is_gap")).height
    assert gold.get_column("ts").dt.date().n_unique() == 2
    files = lakehouse.catalog().load_table(TABLE).inspect.files()
    assert files.num_rows == 2


def test_polars_engine_reads_silver_in_batches_of_whole_devices(lakehouse, silver):
    # 3 devices of about 700 rows, at most 800 rows a batch: one device per batch.
    metadata = materialise(lakehouse, "polars", batch_rows=800)
    assert metadata["device_batches"] == 3
    spec = default_spec()
    gold = lakehouse.read(TABLE).sort("device_id", "ts")
    expected = reference_features(silver, spec)
    assert gold.select("device_id", "ts").equals(expected.select("device_id", "ts"))
    for name in spec.names:
        np.testing.assert_allclose(
            gold[name].to_numpy(), expected[name].to_numpy(), rtol=1e-6, atol=1e-6
        )
