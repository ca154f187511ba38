"""gold/sensor_features materialised from a silver table: the polars and Spark engines commit
the same features, with the spec, its hash and the silver snapshot they read."""

import json
import weakref
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from firepipe.core.features import spec as features_module
from firepipe.core.features.spec import (
    FEATURE_SPEC_PROPERTY,
    SILVER_SNAPSHOT_PROPERTY,
    Difference,
    FeatureSpec,
    Rolling,
    compute_features,
    default_spec,
    reference_features,
    spec_from_properties,
)
from firepipe.defs.features import assets
from firepipe.defs.features.assets import SILVER_TABLE, TABLE, sensor_features
from firepipe.lib.lakehouse import tables
from firepipe.resources.spark import LocalSparkCompute
from firepipe_tests.core.features.feature_sample import assert_same_features, silver_sample


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
    assert_same_features(gold, expected, spec.names)
    partition_fields = lakehouse.catalog().load_table(TABLE).spec().fields
    assert [(f.name, str(f.transform)) for f in partition_fields] == [("ts_day", "day")]


def test_gold_snapshots_carry_their_spec_and_silver_snapshot(lakehouse, silver, monkeypatch):
    # A first gold version with a two-feature spec, then silver changes and gold is recomputed
    # with the default spec: each gold snapshot names its own spec and silver input.
    small = FeatureSpec((Rolling("co_ppm", "mean", 30), Difference("co_ppm", 60)))
    with monkeypatch.context() as patched:
        patched.setattr(assets, "default_spec", lambda: small)
        materialise(lakehouse, "polars")
    first_silver = lakehouse.catalog().load_table(SILVER_TABLE).current_snapshot().snapshot_id
    first_gold = lakehouse.catalog().load_table(TABLE).current_snapshot().snapshot_id
    tables.write_table(lakehouse.catalog(), SILVER_TABLE, silver_sample(devices=2, seconds=400))
    second_silver = lakehouse.catalog().load_table(SILVER_TABLE).current_snapshot().snapshot_id
    materialise(lakehouse, "polars")

    current = lakehouse.snapshot_properties(TABLE)
    assert current == {
        FEATURE_SPEC_PROPERTY: default_spec().to_json(),
        SILVER_SNAPSHOT_PROPERTY: str(second_silver),
    }
    assert spec_from_properties(current) == default_spec()
    older = lakehouse.snapshot_properties(TABLE, first_gold)  # time travel
    assert spec_from_properties(older) == small
    assert older[SILVER_SNAPSHOT_PROPERTY] == str(first_silver) != str(second_silver)


def test_a_gold_snapshot_written_before_specs_were_stored_says_so(lakehouse, silver):
    tables.write_table(lakehouse.catalog(), TABLE, reference_features(silver, default_spec()))
    with pytest.raises(ValueError, match=r"no 'firepipe\.feature-spec' property: it was written"):
        spec_from_properties(lakehouse.snapshot_properties(TABLE))


@pytest.mark.slow
def test_spark_engine_commits_the_same_features(lakehouse, silver):
    materialise(lakehouse, "polars")
    polars_gold = lakehouse.read(TABLE).sort("device_id", "ts")
    metadata = materialise(lakehouse, "spark")
    assert metadata["engine"] == "spark"
    assert spec_from_properties(lakehouse.snapshot_properties(TABLE)) == default_spec()
    spark_gold = lakehouse.read(TABLE).sort("device_id", "ts")
    assert spark_gold.schema == polars_gold.schema
    assert_same_features(spark_gold, polars_gold, default_spec().names)


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
    assert_same_features(gold, expected, spec.names)


def test_polars_engine_holds_one_batch_at_a_time(lakehouse, silver, monkeypatch):
    # What bounds the step's memory: when a batch is computed, no name still holds the last
    # batch's readings or features (CPython frees a frame with its last reference).
    alive: list[weakref.ref] = []
    batches = []

    def recording(readings, spec):
        batches.append([ref() is not None for ref in alive])
        features = compute_features(readings, spec)
        alive[:] = [weakref.ref(readings), weakref.ref(features)]
        return features

    monkeypatch.setattr(features_module, "compute_features", recording)
    snapshot_id, _ = assets.silver_snapshot(lakehouse)
    staging = lakehouse.staging_directory(TABLE, "one-batch-at-a-time")
    files, count, bad = assets.stage_polars_features(
        lakehouse, snapshot_id, default_spec(), staging, batch_rows=800
    )
    assert (count, bad, len(files)) == (3, 0, 3)
    assert batches == [[], [False, False], [False, False]]


def test_non_finite_features_fail_the_check_and_commit_nothing(lakehouse, silver, monkeypatch):
    # An infinity in the second of three batches: the check counts it on the batch in memory,
    # the run fails, no snapshot of gold exists and the staged files are gone.
    calls = []

    def with_an_infinity(readings, spec):
        features = compute_features(readings, spec)
        calls.append(features.height)
        if len(calls) == 2:
            name = spec.names[0]
            features = features.with_columns(
                pl.when(pl.int_range(pl.len()) < 2)
                .then(float("inf"))
                .otherwise(pl.col(name))
                .cast(pl.Float32)
                .alias(name)
            )
        return features

    monkeypatch.setattr(features_module, "compute_features", with_an_infinity)
    result = dg.materialize(
        [sensor_features],
        resources={"lakehouse": lakehouse, "spark_compute": LocalSparkCompute(master="local[1]")},
        run_config={"ops": {"gold__sensor_features": {"config": {"batch_rows": 800}}}},
        raise_on_error=False,
    )
    assert not result.success
    assert len(calls) == 3
    [check] = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed) == ("finite_features", False)
    assert check.metadata["non_finite_values"].value == 2
    assert tables.load_table(lakehouse.catalog(), TABLE) is None
    staging = lakehouse.staging_directory(TABLE, result.run_id).removeprefix("file://")
    assert not Path(staging).exists()


def test_staged_non_finite_reads_the_feature_columns_of_each_file(lakehouse, tmp_path):
    spec = FeatureSpec((Rolling("co_ppm", "mean", 30), Difference("co_ppm", 60)))
    files = []
    for i, values in enumerate(([1.0, float("inf")], [float("nan"), None])):
        path = tmp_path / f"part-{i}.parquet"
        pl.DataFrame(
            {"device_id": ["d", "d"], **dict.fromkeys(spec.names, values)},
            schema_overrides=dict.fromkeys(spec.names, pl.Float32),
        ).write_parquet(path)
        files.append(f"file://{path}")
    # Per file: inf in both features, then NaN in both; nulls (no history) are allowed.
    assert assets.staged_non_finite(lakehouse, files, spec) == 4
