"""Spark compute: where the PySpark gold features run, always through Dagster Pipes.

`LocalSparkCompute` starts `python -m firepipe.services.spark_features` in a subprocess, which
builds a local Spark session with dagster-pyspark. In AWS the same file runs on a cluster, with
the Pipes context and messages in S3 (`AwsSparkCompute`), on one of three engines that
`FIREPIPE_SPARK_ENGINE` picks (firepipe.settings.spark_engine):

- `EmrServerlessSparkCompute` (spark_emr_serverless.py): an EMR Serverless job run;
- `EmrStepsSparkCompute` (spark_emr.py): a step on a transient EMR-on-EC2 cluster;
- `GlueSparkCompute` (spark_glue.py): a run of an AWS Glue 5 job.

Each returns what the job reported (rows, files, spec hash) plus where it ran, so the gold asset
does not know where Spark ran.
"""

import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import dagster as dg
from pydantic import Field

from firepipe.core.features.spec import FeatureSpec
from firepipe.lib.pipes_s3 import s3_pipes_channels
from firepipe.services import spark_features as entry

ENTRY_MODULE = "firepipe.services.spark_features"


class SparkComputeError(RuntimeError):
    """The Spark job did not finish, or finished without reporting what it wrote."""


def spark_report(messages: Sequence[Any], spec: FeatureSpec) -> dict[str, Any]:
    """The one report the entry point sent, checked against the spec that was asked for."""
    reports = [m for m in messages if isinstance(m, dict) and m.get("kind") == entry.REPORT_KIND]
    if len(reports) != 1:
        raise SparkComputeError(
            f"the Spark job reported {len(reports)} results, expected 1: it failed before "
            f"writing its report or was not {ENTRY_MODULE}"
        )
    report = {k: v for k, v in reports[0].items() if k != "kind"}
    if report.get("feature_spec_hash") != spec.hash():
        raise SparkComputeError(
            f"the Spark job computed feature spec {report.get('feature_spec_hash')}, "
            f"not the requested {spec.hash()}"
        )
    return report


def _extras(
    input_files: Sequence[str], spec: FeatureSpec, output_dir: str, partitioning: Sequence[str]
) -> dict[str, Any]:
    if isinstance(input_files, str) or not input_files:
        raise ValueError(
            f"Spark features need at least one silver Parquet file, got {input_files!r}"
        )
    return {
        entry.EXTRA_INPUT_FILES: list(input_files),
        entry.EXTRA_SPEC: spec.to_json(),
        entry.EXTRA_OUTPUT_DIR: output_dir,
        entry.EXTRA_PARTITIONING: entry.splittable_partitioning(partitioning),
    }


class SparkCompute(dg.ConfigurableResource, ABC):
    """Runs the Spark features entry point over silver files through Dagster Pipes."""

    def compute_features(
        self,
        context: dg.AssetExecutionContext,
        *,
        input_files: list[str],
        spec: FeatureSpec,
        output_dir: str,
        partitioning: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Compute `spec` over the Parquet `input_files`, write Parquet under `output_dir` and
        return the job's report: rows, files (full paths under `output_dir`),
        feature_spec_hash, seconds, spark_version, plus where it ran.

        `partitioning` lists the target table's Iceberg partition fields ("day(ts)", "hour(ts)",
        a column; not bucket): the files are split so that none spans two partitions, which
        is what adding them to a partitioned table needs."""
        extras = _extras(input_files, spec, output_dir, partitioning)
        invocation, where = self._run(context, extras)
        return {**spark_report(invocation.get_custom_messages(), spec), **where}

    @abstractmethod
    def _run(
        self, context: dg.AssetExecutionContext, extras: dict[str, Any]
    ) -> tuple[dg.PipesClientCompletedInvocation, dict[str, Any]]:
        """Run the entry point with these Pipes extras; returns the finished invocation and
        where it ran (the report's `engine` and any ids of the remote run)."""


class LocalSparkCompute(SparkCompute):
    """The entry point in a subprocess of the step, with this interpreter and a local Spark
    session that the entry point builds with dagster-pyspark from `master` and `spark_conf`."""

    master: str = Field(
        default="local[*]", description="Spark master of the local session, e.g. local[2]"
    )
    spark_conf: dict[str, str] = Field(
        default_factory=dict,
        description="Extra settings of the local session (e.g. spark.driver.memory), over "
        "firepipe's local defaults",
    )

    def _run(
        self, context: dg.AssetExecutionContext, extras: dict[str, Any]
    ) -> tuple[dg.PipesClientCompletedInvocation, dict[str, Any]]:
        local = {entry.EXTRA_MASTER: self.master, entry.EXTRA_SPARK_CONF: dict(self.spark_conf)}
        # Spark starts Python workers with PYSPARK_PYTHON (default `python3`, which lacks this
        # environment's packages): point them at this interpreter too.
        client = dg.PipesSubprocessClient(
            env={"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
        )
        invocation = client.run(
            command=[sys.executable, "-m", ENTRY_MODULE],
            context=context,
            extras={**extras, **local},
        )
        return invocation, {"engine": "spark-local"}


class AwsSparkCompute(SparkCompute, ABC):
    """The entry point on an AWS Spark engine, with the Pipes context and messages in S3."""

    region: str
    pipes_bucket: str = Field(description="S3 bucket for the Pipes context and messages")
    pipes_prefix: str = "pipes/"
    poll_interval_s: float = Field(default=10.0, description="seconds between status calls")
    message_interval_s: float = 10.0
    s3_endpoint_url: str | None = None

    def _s3(self) -> Any:
        import boto3

        return boto3.client("s3", region_name=self.region, endpoint_url=self.s3_endpoint_url)

    def _pipes_channels(self, s3: Any) -> tuple[dg.PipesContextInjector, dg.PipesMessageReader]:
        return s3_pipes_channels(
            s3,
            bucket=self.pipes_bucket,
            prefix=self.pipes_prefix,
            message_interval_s=self.message_interval_s,
        )


class SparkSubmitCompute(AwsSparkCompute, ABC):
    """An engine that spark-submits firepipe/services/spark_features.py from S3 (EMR Serverless,
    EMR on EC2): where the file is, and the Python with firepipe that runs it."""

    entry_point: str = Field(description="s3:// URI of firepipe/services/spark_features.py")
    python: str | None = Field(
        default=None,
        description="Python 3.11 interpreter with firepipe, of driver and executors, e.g. "
        "/usr/local/bin/python3.11 (an image or a bootstrap action installed it) or "
        "./environment/bin/python with a venv archive; None: the engine's default python3",
    )
    py_files: str | None = Field(
        default=None, description="s3:// zip of the firepipe package, when the nodes lack it"
    )
    archives: str | None = Field(
        default=None, description="s3://...tar.gz#environment: a packed virtualenv to unpack"
    )
    spark_conf: dict[str, str] = Field(default_factory=dict, description="--conf settings")
    log_uri: str | None = Field(default=None, description="s3:// prefix for the job's logs")

    def packaging_options(self) -> list[tuple[str, str]]:
        """spark-submit's --py-files and --archives options, as (option, value) pairs."""
        options = {"--py-files": self.py_files, "--archives": self.archives}
        return [(option, value) for option, value in options.items() if value]


def metadata_text(value: Any) -> str | None:
    """The text of a Pipes client's metadata value (a MetadataValue or a plain value)."""
    return None if value is None else str(getattr(value, "value", value))
