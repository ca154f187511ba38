"""Gold features on Spark as a Dagster Pipes workload: `python -m firepipe.services.spark_features`.

Dagster starts it through a `SparkCompute` resource: in a local subprocess with a local Spark,
or as the entry point of an EMR Serverless job run, where the cluster owns the session. It reads
silver's Parquet files and the feature spec from the Pipes extras, runs the PySpark compilation
of the spec, writes Parquet under the given directory in the gold table's types and reports
what it wrote as one custom message. It reports no materialisation: the gold asset commits the
files to Iceberg and materialises then, with the snapshot id.

On EMR the file itself is the job's entry point (uploaded to S3); the firepipe package comes
from the job's image or py-files. The Pipes context and messages travel through S3 there.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dagster_pipes import PipesContext

from firepipe.core.features.spec import ID_COLUMNS, FeatureSpec
from firepipe.services.pipes_io import run_under_pipes

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# The Pipes extras the entry point reads; SparkCompute writes them.
EXTRA_INPUT_FILES = "input_files"
EXTRA_SPEC = "spec"
EXTRA_OUTPUT_DIR = "output_dir"
EXTRA_PARTITIONING = "partitioning"  # the gold table's Iceberg partition fields
EXTRA_MASTER = "spark_master"  # absent on a cluster: the session spark-submit made is used
EXTRA_SPARK_CONF = "spark_conf"
# The key of the custom message that carries the report.
REPORT_KIND = "firepipe.spark_features"

# Settings every run needs, local or on EMR (runtime SQL settings, so they apply to the
# cluster's session too). Iceberg stores timestamps as microseconds (Iceberg spec, "Parquet"
# type mapping) while Spark writes INT96 unless told (Spark SQL docs,
# spark.sql.parquet.outputTimestampType); UTC is the platform's one time zone.
SESSION_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}
# A local session: no web UI (a port per run, nothing watches it) and few shuffle partitions:
# Spark's default of 200 (Spark SQL tuning guide) makes 200 tiny tasks of a sample that fits one
# core. Chosen for the local twin, not measured.
LOCAL_SPARK_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
}
# The partition fields whose files the job can split: PyIceberg adds a file to a partitioned
# table only when all its rows share one partition value (pyiceberg.io.fileformat), so every
# file must hold one day (hour, value) of these. Spark cannot compute Iceberg's bucket hash.
_SPLITTABLE = re.compile(r"^\s*(?:(?P<fn>day|hour)\(\s*(?P<col>\w+)\s*\)|(?P<identity>\w+))\s*$")
_SPARK_TIME_FORMAT = {"day": "yyyy-MM-dd", "hour": "yyyy-MM-dd-HH"}


class SparkFeaturesRequestError(ValueError):
    """The Pipes extras do not describe a feature run this entry point can do."""


def _request(extras: Mapping[str, Any]) -> tuple[list[str], FeatureSpec, str, list[str]]:
    missing = [k for k in (EXTRA_INPUT_FILES, EXTRA_SPEC, EXTRA_OUTPUT_DIR) if k not in extras]
    if missing:
        raise SparkFeaturesRequestError(f"the Pipes extras lack {missing}; got {sorted(extras)}")
    files = extras[EXTRA_INPUT_FILES]
    if (
        not isinstance(files, Sequence)
        or isinstance(files, str)
        or not files
        or not all(isinstance(f, str) and f for f in files)
    ):
        raise SparkFeaturesRequestError(
            f"extra {EXTRA_INPUT_FILES!r} must be a non-empty list of Parquet paths, got {files!r}"
        )
    output_dir = extras[EXTRA_OUTPUT_DIR]
    if not isinstance(output_dir, str) or not output_dir.strip("/"):
        raise SparkFeaturesRequestError(
            f"extra {EXTRA_OUTPUT_DIR!r} must name a directory, got {output_dir!r}"
        )
    partitioning = splittable_partitioning(extras.get(EXTRA_PARTITIONING) or [])
    spec = FeatureSpec.from_json(str(extras[EXTRA_SPEC]))
    return list(files), spec, output_dir.rstrip("/"), partitioning


def splittable_partitioning(partitioning: Sequence[Any]) -> list[str]:
    """The partition fields, when the job can split its files by each of them."""
    unsplittable = [p for p in partitioning if not _SPLITTABLE.match(str(p))]
    if isinstance(partitioning, str) or unsplittable:
        raise SparkFeaturesRequestError(
            f"the Spark job splits its files by a list of column, day(column) or hour(column) "
            f"partition fields; cannot split by {unsplittable or partitioning!r}"
        )
    return [str(p) for p in partitioning]


def spark_session(extras: Mapping[str, Any]) -> SparkSession:
    """A local session when the extras name a master; the cluster's session otherwise."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("firepipe-spark-features")
    master = extras.get(EXTRA_MASTER)
    if master:
        builder = builder.master(str(master))
        for key, value in {**LOCAL_SPARK_CONF, **(extras.get(EXTRA_SPARK_CONF) or {})}.items():
            builder = builder.config(key, str(value))
    spark = builder.getOrCreate()
    for key, value in SESSION_CONF.items():
        spark.conf.set(key, value)
    return spark


def gold_columns(features: DataFrame, spec: FeatureSpec) -> DataFrame:
    """The gold table's columns and types: the ids, then every feature as a 32-bit float, as the
    polars path writes them (Spark computes in doubles)."""
    from pyspark.sql import functions as F  # noqa: N812 (PySpark's own convention)

    absent = [c for c in (*ID_COLUMNS, *spec.names) if c not in features.columns]
    if absent:
        raise RuntimeError(f"spark_features returned no column(s) {absent}")
    return features.select(
        *ID_COLUMNS, *(F.col(name).cast("float").alias(name) for name in spec.names)
    )


def write_split(features: DataFrame, output_dir: str, partitioning: Sequence[str]) -> int:
    """Write Parquet under `output_dir`, in one folder per value of each partition field (so no
    file spans two partitions); returns the folder depth. Files keep the gold columns only."""
    from pyspark.sql import functions as F  # noqa: N812

    folders: dict[str, Any] = {}
    for text in partitioning:
        match = _SPLITTABLE.match(text)
        if match is None:
            raise SparkFeaturesRequestError(f"cannot split files by partition field {text!r}")
        if match["identity"]:
            folders[f"{match['identity']}_value"] = F.col(match["identity"]).cast("string")
        else:
            time_format = _SPARK_TIME_FORMAT[match["fn"]]
            folders[f"{match['col']}_{match['fn']}"] = F.date_format(match["col"], time_format)
    if not folders:
        features.write.mode("overwrite").parquet(output_dir)
        return 0
    # Within each task, rows go out folder by folder, still by (device_id, ts).
    split = features.withColumns(folders).sortWithinPartitions(*folders, "device_id", "ts")
    split.write.mode("overwrite").partitionBy(*folders).parquet(output_dir)
    return len(folders)


def written_files(spark: SparkSession, output_dir: str, depth: int = 0) -> tuple[list[str], int]:
    """The Parquet files Spark wrote under `output_dir` (`depth` folders down), named from
    `output_dir` (Spark spells local URIs `file:/...`), and the rows they hold (from footers)."""
    from pyspark.errors import AnalysisException

    try:
        written = spark.read.parquet(output_dir)
        found = written.inputFiles()
    except AnalysisException:  # a split write of no rows makes no files, so no schema
        return [], 0
    relative = {"/".join(f.split("/")[-1 - depth :]) for f in found if f.endswith(".parquet")}
    return [f"{output_dir}/{name}" for name in sorted(relative)], written.count()


def run(pipes: PipesContext) -> dict[str, Any]:
    """Compute the features the extras ask for, write them and report them; returns the report."""
    input_files, spec, output_dir, partitioning = _request(pipes.extras)
    from firepipe.core.features.spark import spark_features  # needs pyspark, the job's side only

    started = time.monotonic()
    spark = spark_session(pipes.extras)
    pipes.log.info(
        f"computing {len(spec.features)} features (spec {spec.hash()}) of {len(input_files)} "
        f"silver file(s) with Spark {spark.version} into {output_dir}"
    )
    readings = spark.read.option("mergeSchema", "true").parquet(*input_files)
    features = gold_columns(spark_features(readings, spec), spec)
    depth = write_split(features, output_dir, partitioning)
    files, rows = written_files(spark, output_dir, depth)
    report = {
        "kind": REPORT_KIND,
        "rows": rows,
        "files": files,
        "feature_spec_hash": spec.hash(),
        "seconds": time.monotonic() - started,
        "spark_version": spark.version,
    }
    pipes.log.info(f"wrote {rows:,} feature rows in {len(files)} file(s)")
    pipes.report_custom_message(report)
    return report


def main() -> None:
    run_under_pipes(
        run,
        outside_dagster=(
            "firepipe.services.spark_features runs under Dagster Pipes (the SparkCompute resource "
            "starts it); materialise gold/sensor_features with engine 'spark' instead"
        ),
    )


if __name__ == "__main__":
    main()
