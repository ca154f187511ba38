"""SparkCompute, local twin: the Spark features entry point through Dagster Pipes in a subprocess
with a local Spark, over silver Parquet files, writing gold files that commit to Iceberg (one
Spark start in this module; the EMR Serverless path is in test_spark_emr.py, EMR steps and Glue
in test_spark_clusters.py)."""

from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from firepipe import settings
from firepipe.core.features.spec import ID_COLUMNS, compute_features, default_spec
from firepipe.lib.lakehouse import tables
from firepipe.resources import resources_for
from firepipe.resources.lakehouse import LocalLakehouse
from firepipe.resources.spark import (
    LocalSparkCompute,
    SparkCompute,
    SparkComputeError,
    spark_report,
)
from firepipe.resources.spark_emr import EmrStepsSparkCompute
from firepipe.resources.spark_emr_serverless import EmrServerlessSparkCompute
from firepipe.resources.spark_glue import GlueSparkCompute
from firepipe_tests.core.features.feature_sample import assert_same_features, silver_sample
from firepipe_tests.resources.one_off_asset import call_in_asset

GOLD = "gold.sensor_features"
PARTITIONING = ["day(ts)"]  # as the gold asset declares it
# The engines' parity tolerance (firepipe_tests/core/test_features_spark.py): Float32 outputs
# round to about 6e-8 relative; the rest is summation order.


def compute(resource: SparkCompute, **request: Any) -> dict[str, Any]:
    return call_in_asset(
        resource, lambda context, spark: spark.compute_features(context, **request)
    )


@pytest.mark.slow
def test_local_spark_writes_the_gold_features_polars_computes(
    tmp_path: Path, lakehouse: LocalLakehouse
) -> None:
    # Ten minutes across midnight: the day-partitioned gold table needs one file set per day.
    silver = silver_sample(devices=4, seconds=600).with_columns(
        pl.col("ts") - pl.duration(seconds=300)
    )
    # Two files with a device split across them, as silver's data files can be.
    half = silver.height // 2 + 37
    inputs = [tmp_path / "silver-0.parquet", tmp_path / "silver-1.parquet"]
    silver.slice(0, half).write_parquet(inputs[0])
    silver.slice(half).write_parquet(inputs[1])
    spec = default_spec()
    staging = lakehouse.staging_directory(GOLD, "run-1")

    report = compute(
        LocalSparkCompute(master="local[2]"),
        input_files=[str(p) for p in inputs],
        spec=spec,
        output_dir=staging,
        partitioning=PARTITIONING,
    )

    expected = compute_features(silver, spec)
    assert report["rows"] == expected.height == silver.filter(~pl.col("is_gap")).height
    assert report["feature_spec_hash"] == spec.hash()
    assert report["engine"] == "spark-local"
    assert report["spark_version"].startswith("4.")
    assert report["files"]
    folders = {f.removeprefix(f"{staging}/").split("/")[0] for f in report["files"]}
    assert folders == {"ts_day=2025-12-31", "ts_day=2026-01-01"}
    assert all(f.endswith(".parquet") for f in report["files"])

    # The files carry the gold table's types: ids as polars has them, features as Float32.
    paths = [f.removeprefix("file://") for f in report["files"]]
    schema = pq.read_schema(paths[0])
    assert schema.names == [*ID_COLUMNS, *spec.names]
    assert schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert {schema.field(n).type for n in spec.names} == {pa.float32()}
    written = pl.concat([pl.read_parquet(p, hive_partitioning=False) for p in paths])
    written = written.sort("device_id", "ts")
    assert_same_features(written, expected, spec.names)

    # What the gold asset does next: commit the staged files as the table's new snapshot.
    result = lakehouse.commit_staged(GOLD, report["files"], tables.parse_partitioning(PARTITIONING))
    assert result.rows_written == report["rows"]
    assert lakehouse.table_rows(GOLD) == report["rows"]
    assert lakehouse.read(GOLD)["ts"].dt.date().n_unique() == 2


def test_a_request_without_input_files_is_refused_before_any_job(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one silver Parquet file"):
        compute(LocalSparkCompute(), input_files=[], spec=default_spec(), output_dir=str(tmp_path))


def test_a_partitioning_spark_cannot_split_by_is_refused_before_any_job(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot split by \['bucket\(16, device_id\)'\]"):
        compute(
            LocalSparkCompute(),
            input_files=[str(tmp_path / "silver.parquet")],
            spec=default_spec(),
            output_dir=str(tmp_path),
            partitioning=["day(ts)", "bucket(16, device_id)"],
        )


def test_the_report_must_come_once_and_for_the_requested_spec() -> None:
    spec = default_spec()
    report = {"kind": "firepipe.spark_features", "rows": 3, "files": ["f"], "seconds": 1.0}
    assert spark_report(["noise", {**report, "feature_spec_hash": spec.hash()}], spec) == {
        "rows": 3,
        "files": ["f"],
        "seconds": 1.0,
        "feature_spec_hash": spec.hash(),
    }
    with pytest.raises(SparkComputeError, match="reported 0 results"):
        spark_report([{"kind": "firepipe.generation"}], spec)
    with pytest.raises(SparkComputeError, match="computed feature spec 0123, not the requested"):
        spark_report([{**report, "feature_spec_hash": "0123"}], spec)


def test_resources_for_picks_local_spark_or_emr_serverless(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(settings.SPARK_ENGINE_VAR, raising=False)
    paths = settings.LocalPaths(tmp_path)
    assert isinstance(
        resources_for(settings.Environment.LOCAL, paths)["spark_compute"], LocalSparkCompute
    )
    assert isinstance(
        resources_for(settings.Environment.AWS, paths)["spark_compute"], EmrServerlessSparkCompute
    )


@pytest.mark.parametrize(
    ("engine", "kind"),
    [
        ("emr-serverless", EmrServerlessSparkCompute),
        ("EMR", EmrStepsSparkCompute),
        (" glue ", GlueSparkCompute),
    ],
)
def test_firepipe_spark_engine_picks_the_aws_engine(
    engine: str, kind: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.SPARK_ENGINE_VAR, engine)
    paths = settings.LocalPaths(tmp_path)
    assert isinstance(resources_for(settings.Environment.AWS, paths)["spark_compute"], kind)
    # The local environment has one Spark, whatever the AWS engine.
    local = resources_for(settings.Environment.LOCAL, paths)["spark_compute"]
    assert isinstance(local, LocalSparkCompute)


def test_an_unknown_spark_engine_is_refused_with_the_choices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.SPARK_ENGINE_VAR, "dataproc")
    with pytest.raises(
        settings.SettingsError,
        match="FIREPIPE_SPARK_ENGINE='dataproc' is not one of: emr-serverless, emr, glue",
    ):
        resources_for(settings.Environment.AWS, settings.LocalPaths(tmp_path))
