"""Spark compute: where the PySpark gold features run, always through Dagster Pipes.

`LocalSparkCompute` starts `python -m firepipe.services.spark_features` in a subprocess, which
runs a local Spark; `EmrServerlessSparkCompute` runs the same file as the entry point of an EMR
Serverless job run (dagster-aws's `PipesEMRServerlessClient`), with the Pipes context and
messages in S3. Both return what the job reported (rows, files, spec hash), so the gold asset
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
    """The entry point in a subprocess of the step, with this interpreter and a local Spark."""

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


class EmrServerlessSparkCompute(SparkCompute):
    """The entry point as an EMR Serverless job run; Pipes context and messages through S3.

    The application's image (or `archives`) must hold Python 3.11 with firepipe and its
    dependencies; `entry_point` is this repository's firepipe/services/spark_features.py
    uploaded to S3.
    """

    region: str
    application_id: str
    execution_role_arn: str = Field(description="IAM role the job runs as (S3, Glue access)")
    entry_point: str = Field(description="s3:// URI of firepipe/services/spark_features.py")
    pipes_bucket: str = Field(description="S3 bucket for the Pipes context and messages")
    pipes_prefix: str = "pipes/"
    python: str | None = Field(
        default=None,
        description="Python interpreter of driver and executors, e.g. /usr/local/bin/python3.11 "
        "in a custom image or ./environment/bin/python with a venv archive; None: the image's",
    )
    py_files: str | None = Field(
        default=None, description="s3:// zip of the firepipe package, when the image lacks it"
    )
    archives: str | None = Field(
        default=None, description="s3://...tar.gz#environment: a packed virtualenv to unpack"
    )
    spark_conf: dict[str, str] = Field(default_factory=dict, description="--conf settings")
    log_uri: str | None = Field(default=None, description="s3:// prefix for the job's logs")
    execution_timeout_minutes: int | None = Field(default=None, ge=1)
    poll_interval_s: float = 10.0
    message_interval_s: float = 10.0
    emr_endpoint_url: str | None = None
    s3_endpoint_url: str | None = None

    def _clients(self) -> tuple[Any, Any]:
        import boto3

        emr = boto3.client(
            "emr-serverless", region_name=self.region, endpoint_url=self.emr_endpoint_url
        )
        s3 = boto3.client("s3", region_name=self.region, endpoint_url=self.s3_endpoint_url)
        return emr, s3

    def spark_submit_parameters(self) -> str:
        """The job's `--conf` and `--py-files`/`--archives` options (Pipes adds its own)."""
        conf: dict[str, str] = {
            # The Pipes S3 client in the driver: the bucket's region (and so, in a VPC, its
            # regional endpoint) said explicitly instead of left to the container's defaults.
            "spark.emr-serverless.driverEnv.AWS_REGION": self.region,
        }
        if self.python:
            conf["spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON"] = self.python
            conf["spark.emr-serverless.driverEnv.PYSPARK_PYTHON"] = self.python
            conf["spark.executorEnv.PYSPARK_PYTHON"] = self.python
        conf.update(self.spark_conf)
        # EMR splits sparkSubmitParameters at whitespace (EMR Serverless API, SparkSubmit).
        spaced = sorted(k for k, v in conf.items() if len(f"{k}={v}".split()) != 1)
        if spaced:
            raise ValueError(f"Spark settings {spaced} hold whitespace, which EMR cannot pass")
        options = [f"--conf {k}={v}" for k, v in conf.items()]
        if self.py_files:
            options.append(f"--py-files {self.py_files}")
        if self.archives:
            options.append(f"--archives {self.archives}")
        return " ".join(options)

    def start_job_run_params(self, context: dg.AssetExecutionContext) -> dict[str, Any]:
        params: dict[str, Any] = {
            "applicationId": self.application_id,
            "executionRoleArn": self.execution_role_arn,
            "name": f"firepipe-spark-features-{context.run.run_id[:8]}",
            "jobDriver": {
                "sparkSubmit": {
                    "entryPoint": self.entry_point,
                    "sparkSubmitParameters": self.spark_submit_parameters(),
                }
            },
        }
        if self.log_uri:
            params["configurationOverrides"] = {
                "monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": self.log_uri}}
            }
        if self.execution_timeout_minutes:
            params["executionTimeoutMinutes"] = self.execution_timeout_minutes
        return params

    def _run(
        self, context: dg.AssetExecutionContext, extras: dict[str, Any]
    ) -> tuple[dg.PipesClientCompletedInvocation, dict[str, Any]]:
        emr, s3 = self._clients()
        client = _emr_serverless_client(
            emr,
            s3,
            bucket=self.pipes_bucket,
            prefix=self.pipes_prefix,
            poll_interval_s=self.poll_interval_s,
            message_interval_s=self.message_interval_s,
        )
        invocation = client.run(
            context=context,
            start_job_run_params=self.start_job_run_params(context),
            extras=extras,
        )
        ran = invocation.metadata
        return invocation, {
            "engine": "spark-emr-serverless",
            "emr_application_id": _text(ran.get("AWS EMR Serverless Application ID")),
            "emr_job_run_id": _text(ran.get("AWS EMR Serverless Job Run ID")),
        }


def _text(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def _emr_serverless_client(
    emr: Any,
    s3: Any,
    *,
    bucket: str,
    prefix: str,
    poll_interval_s: float,
    message_interval_s: float,
) -> dg.PipesClient:
    """dagster-aws's EMR Serverless client with the Pipes context and messages in S3 and
    failures explained.

    The stock client reads messages only from CloudWatch after the job ends (and warns about any
    other reader); the S3 reader polls during the session, so there is nothing to add after it.
    Its failure is a bare "EMR Serverless job failed": this one names the run and EMR's reason.
    """
    from dagster_aws.pipes import PipesEMRServerlessClient

    class PipesEMRServerlessS3Client(PipesEMRServerlessClient):
        def _read_messages(self, context: Any, session: Any, response: Any) -> None:
            return None

        def _wait_for_completion(self, context: Any, start_response: Any) -> Any:
            try:
                return super()._wait_for_completion(context, start_response)
            except RuntimeError as failed:
                ids = {k: start_response[k] for k in ("applicationId", "jobRunId")}
                run = self.client.get_job_run(**ids)["jobRun"]
                raise SparkComputeError(
                    f"EMR Serverless job run {ids['jobRunId']} of application "
                    f"{ids['applicationId']} ended {run['state']}: "
                    f"{run.get('stateDetails') or 'no details given'}"
                ) from failed

    injector, reader = s3_pipes_channels(
        s3, bucket=bucket, prefix=prefix, message_interval_s=message_interval_s
    )
    return PipesEMRServerlessS3Client(
        client=emr, context_injector=injector, message_reader=reader, poll_interval=poll_interval_s
    )
