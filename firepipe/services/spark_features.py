"""Gold features on Spark as a Dagster Pipes workload: `python -m firepipe.services.spark_features`.

Dagster starts it through a `SparkCompute` resource (firepipe/resources/spark*.py): in a local
subprocess, where it builds a local session with dagster-pyspark, or as the script of a cluster
job, where it uses the session spark-submit made: an EMR Serverless job run, a step on a
transient EMR-on-EC2 cluster, or a run of an AWS Glue 5 job. It reads silver's Parquet files and
the feature spec from the Pipes extras, runs the PySpark compilation of the spec, writes Parquet
under the given directory in the gold table's types and reports what it wrote as one custom
message. It reports no materialisation: the gold asset commits the files to Iceberg and
materialises then, with the snapshot id.

On a cluster the file itself is the job's script (uploaded to S3); the firepipe package comes
from the image, py-files, a bootstrap action or Glue's Python modules. The Pipes context and
messages travel through S3 there, and the bootstrap parameters arrive as environment variables
(the local subprocess; on EMR, the driver's environment that dagster-aws's clients set) or, on
Glue, as job arguments on the script's command line (`params_loader`).

Spark 3.5 (Glue 5.0, EMR 7.x) is the oldest Spark this runs on; checked against the installed
PySpark's `versionadded` notes, here and in firepipe/core/features/spark.py: the newest APIs
used are `functions.unix_micros` (3.5), `pyspark.errors` (3.4), `DataFrame.withColumns` (3.3)
and `DataFrame.inputFiles` (3.1); what Spark 4 added to them (column ordinals in sorts) is
not used.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dagster_pipes import (
    DAGSTER_PIPES_CONTEXT_CLI_ARGUMENT,
    PipesCliArgsParamsLoader,
    PipesContext,
    PipesEnvVarParamsLoader,
    PipesParamsLoader,
)

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
APP_NAME = "firepipe-spark-features"  # the Spark application's name, local or on a cluster

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
    """A local session when the extras name a master, built by dagster-pyspark from firepipe's
    local settings and the resource's `spark_conf`; the cluster's session otherwise."""
    master = extras.get(EXTRA_MASTER)
    if master:
        # dagster-pyspark needs dagster, which a cluster's Python may lack: imported here only.
        from dagster_pyspark.resources import spark_session_from_config

        spark: SparkSession = spark_session_from_config(
            {
                "spark.master": str(master),
                "spark.app.name": APP_NAME,
                **LOCAL_SPARK_CONF,
                **{k: str(v) for k, v in (extras.get(EXTRA_SPARK_CONF) or {}).items()},
            }
        )
    else:
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.appName(APP_NAME).getOrCreate()
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


def params_loader(argv: Sequence[str]) -> PipesParamsLoader:
    """Where this process's Pipes bootstrap parameters are: on the command line when Glue passed
    them as job arguments (PipesGlueClient), else in the environment (the local subprocess, and
    the EMR clients, which set the driver's environment)."""
    if DAGSTER_PIPES_CONTEXT_CLI_ARGUMENT in argv:
        return PipesCliArgsParamsLoader()
    return PipesEnvVarParamsLoader()


def main() -> None:
    run_under_pipes(
        run,
        outside_dagster=(
            "firepipe.services.spark_features runs under Dagster Pipes (the SparkCompute resource "
            "starts it); materialise gold/sensor_features with engine 'spark' instead"
        ),
        params_loader=params_loader(sys.argv),
    )


if __name__ == "__main__":
    main()
