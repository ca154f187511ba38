"""Gold: per-device features of silver, versioned by the hash of their spec.

Both engines write, audit, then publish: the features are staged as Parquet under the gold
table, the blocking `finite_features` check judges the staged rows, and only then are they
committed as the table's new snapshot (the whole table is replaced), through the one
write-audit-publish helper (`stage_check_commit`). The polars engine counts
non-finite values on each batch before writing it; Spark's files are read back one at a time,
feature columns only, so neither holds the whole table. Silver is read at one snapshot,
recorded with the result, so a feature version names the exact data it came from; the spec
(`FEATURE_SPEC_PROPERTY`) and that silver snapshot id (`SILVER_SNAPSHOT_PROPERTY`) are stored
as properties of the gold snapshot itself, so they travel with the data.
"""

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import dagster as dg
import polars as pl
from pydantic import Field

from firepipe import names
from firepipe.core.features.spec import (
    GROUP_ROWS,
    FeatureSpec,
    default_spec,
    features_by_device_batch,
    gold_properties,
)
from firepipe.core.lake import quality
from firepipe.defs.automation import FOLLOW_UPSTREAM, LAKE_FRESHNESS
from firepipe.lib.lakehouse import tables
from firepipe.lib.lakehouse.io_manager import ICEBERG_PARTITIONING, write_metadata
from firepipe.lib.lakehouse.staged import Audit, stage_check_commit
from firepipe.resources.lakehouse import Lakehouse
from firepipe.resources.spark import SparkCompute

ASSET_KEY = dg.AssetKey(names.SENSOR_FEATURES)
SILVER_KEY = dg.AssetKey(names.SENSOR_READINGS)
TABLE = names.table_name(names.SENSOR_FEATURES)
SILVER_TABLE = names.table_name(names.SENSOR_READINGS)
# Features are read by time range (training windows, dashboards by day): one partition a day.
PARTITIONING = ["day(ts)"]


class SensorFeaturesConfig(dg.Config):
    engine: Literal["polars", "spark"] = Field(
        default="polars",
        description="polars: in the step (numba kernels); spark: the spark_compute resource "
        "(local Spark through Pipes; in AWS EMR Serverless, EMR steps or Glue)",
    )
    batch_rows: int = Field(
        default=GROUP_ROWS,
        gt=0,
        description="polars engine: silver is read and featurised in batches of whole devices "
        "of at most this many rows, so the step's memory follows the batch, not the table",
    )


def silver_snapshot(lakehouse: Lakehouse) -> tuple[int, list[str]]:
    """The current snapshot of silver and its data files (what Spark reads)."""
    table = tables.load_table(lakehouse.catalog(), SILVER_TABLE)
    snapshot = table.current_snapshot() if table is not None else None
    if table is None or snapshot is None:
        raise dg.Failure(f"{SILVER_TABLE} has no snapshot yet: materialise silver first")
    tasks = list(table.scan(snapshot_id=snapshot.snapshot_id).plan_files())
    if any(task.delete_files for task in tasks):
        raise dg.Failure(f"{SILVER_TABLE} has delete files, which the Spark engine cannot apply")
    return snapshot.snapshot_id, [task.file.file_path for task in tasks]


def stage_polars_features(
    lakehouse: Lakehouse, snapshot_id: int, spec: FeatureSpec, staging: str, batch_rows: int
) -> tuple[list[str], int, int]:
    """Features of silver written as staged files, one batch of whole devices at a time
    (`features_by_device_batch`), one file per batch and day(ts). Returns the files, the number
    of batches and the non-finite feature values written (counted on each batch in memory).
    A batch's features are dropped before the next batch is read, so memory holds one batch."""
    silver = lakehouse.scan(SILVER_TABLE, snapshot_id=snapshot_id)
    options = lakehouse.storage_options() or None
    paths, batches, non_finite = [], 0, 0
    for features in features_by_device_batch(silver, spec, batch_rows):
        batches += 1
        non_finite += quality.non_finite_count(features, list(spec.names))
        paths += _write_by_day(features, staging, options)
        del features  # now, not when the loop rebinds it after the next batch is computed
    return paths, batches, non_finite


def _write_by_day(
    features: pl.DataFrame, staging: str, storage_options: dict[str, str] | None
) -> list[str]:
    """One staged file per day(ts) (an Iceberg data file may not span two partitions); a batch
    within one day is written as it is, without a copy."""
    days = features.select(pl.col("ts").dt.date().unique().sort()).to_series().to_list()
    paths = []
    for day in days or [None]:
        part = features if len(days) <= 1 else features.filter(pl.col("ts").dt.date() == day)
        path = f"{staging}/features-{uuid.uuid4().hex}.parquet"
        part.write_parquet(
            path.removeprefix("file://"), storage_options=storage_options, mkdir=True
        )
        paths.append(path)
    return paths


def staged_non_finite(lakehouse: Lakehouse, files: list[str], spec: FeatureSpec) -> int:
    """Non-finite feature values in staged files, read one file and the feature columns at a
    time (Spark's files: the polars engine counts its batches before writing them)."""
    names = list(spec.names)
    options = lakehouse.storage_options() or None
    return sum(
        quality.non_finite_count(
            pl.read_parquet(f.removeprefix("file://"), columns=names, storage_options=options),
            names,
        )
        for f in files
    )


@dataclass(frozen=True)
class StagedFeatures:
    """What an engine staged: its files, the silver batches read, the non-finite feature values
    written and the seconds it took."""

    files: list[str]
    batches: int
    non_finite: int
    seconds: float


def stage_features(
    context: dg.AssetExecutionContext,
    config: SensorFeaturesConfig,
    lakehouse: Lakehouse,
    spark_compute: SparkCompute,
    spec: FeatureSpec,
    silver: tuple[int, list[str]],
    staging: str,
) -> StagedFeatures:
    """The features of silver snapshot `silver` (its id and data files) staged under `staging`
    by the configured engine, with their count of non-finite values."""
    snapshot_id, silver_files = silver
    started = time.monotonic()
    if config.engine == "spark":
        report = spark_compute.compute_features(
            context,
            input_files=silver_files,
            spec=spec,
            output_dir=staging,
            partitioning=PARTITIONING,
        )
        files = [str(f) for f in report["files"]]
        seconds = time.monotonic() - started
        return StagedFeatures(files, 1, staged_non_finite(lakehouse, files, spec), seconds)
    files, batches, bad = stage_polars_features(
        lakehouse, snapshot_id, spec, staging, config.batch_rows
    )
    return StagedFeatures(files, batches, bad, time.monotonic() - started)


def finite_features(staged: StagedFeatures) -> Audit[dg.AssetCheckResult]:
    """The blocking check: no NaN or infinity among the staged features."""
    bad = staged.non_finite
    check = dg.AssetCheckResult(
        check_name="finite_features", passed=bad == 0, metadata={"non_finite_values": bad}
    )
    return Audit(passed=bad == 0, results=check)


@dg.asset(
    key=ASSET_KEY,
    group_name=names.group_name(names.SENSOR_FEATURES),
    kinds={"polars", "spark", "iceberg"},
    deps=[SILVER_KEY],
    metadata={ICEBERG_PARTITIONING: PARTITIONING},
    automation_condition=FOLLOW_UPSTREAM,
    freshness_policy=LAKE_FRESHNESS,
    check_specs=[dg.AssetCheckSpec("finite_features", asset=ASSET_KEY, blocking=True)],
)
def sensor_features(
    context: dg.AssetExecutionContext,
    config: SensorFeaturesConfig,
    lakehouse: Lakehouse,
    spark_compute: SparkCompute,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Rolling mean/std/max over 30 s and 300 s and the 60 s change of every channel, the 30 s
    rate of rise of heat, smoke and CO, the CO/CO2 ratio and the smoke-vs-heat lag, one row per
    reading; polars or Spark compute the same spec (firepipe.core.features.spec)."""
    spec = default_spec()
    snapshot_id, silver_files = silver_snapshot(lakehouse)
    # Write, audit, publish: the features are committed only if none is NaN or infinite.
    published = stage_check_commit(
        lakehouse,
        TABLE,
        lakehouse.staging_directory(TABLE, context.run.run_id),
        lambda staging: stage_features(
            context, config, lakehouse, spark_compute, spec, (snapshot_id, silver_files), staging
        ),
        check=finite_features,
        partitioning=tables.parse_partitioning(PARTITIONING),
        snapshot_properties=gold_properties(spec, snapshot_id),
    )
    staged, check = published.staged, published.audit.results
    if published.write is None:
        yield check  # recorded, then the run fails with nothing committed
        raise dg.Failure(f"{staged.non_finite} non-finite feature values: nothing committed")
    result, seconds = published.write, staged.seconds
    yield dg.MaterializeResult(
        metadata={
            **write_metadata(result),
            "engine": config.engine,
            "device_batches": staged.batches,
            "feature_spec_hash": spec.hash(),
            "feature_spec": dg.MetadataValue.json(json.loads(spec.to_json())),
            "feature_count": len(spec.features),
            "silver_snapshot_id": str(snapshot_id),
            "seconds": round(seconds, 3),
            "rows_per_s": round(result.rows_written / seconds) if seconds > 0 else 0,
        }
    )
    yield check
