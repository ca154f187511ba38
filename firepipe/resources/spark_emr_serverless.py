"""Spark features as an EMR Serverless job run (dagster-aws's `PipesEMRServerlessClient`), the
default AWS engine (`FIREPIPE_SPARK_ENGINE=emr-serverless`).

The application's image (or `archives`) holds Python 3.11 with firepipe and its dependencies;
`entry_point` is this repository's firepipe/services/spark_features.py uploaded to S3. The
driver gets the Pipes parameters as environment variables (the client's
`spark.emr-serverless.driverEnv.*` settings).
"""

from typing import Any

import dagster as dg
from pydantic import Field

from firepipe.resources.spark import SparkComputeError, SparkSubmitCompute, metadata_text


class EmrServerlessSparkCompute(SparkSubmitCompute):
    """The entry point as an EMR Serverless job run; Pipes context and messages through S3."""

    application_id: str
    execution_role_arn: str = Field(description="IAM role the job runs as (S3, Glue access)")
    execution_timeout_minutes: int | None = Field(default=None, ge=1)
    emr_endpoint_url: str | None = None

    def _clients(self) -> tuple[Any, Any]:
        import boto3

        emr = boto3.client(
            "emr-serverless", region_name=self.region, endpoint_url=self.emr_endpoint_url
        )
        return emr, self._s3()

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
        options += [f"{option} {value}" for option, value in self.packaging_options()]
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
        client = _emr_serverless_client(emr, self._pipes_channels(s3), self.poll_interval_s)
        invocation = client.run(
            context=context,
            start_job_run_params=self.start_job_run_params(context),
            extras=extras,
        )
        ran = invocation.metadata
        return invocation, {
            "engine": "spark-emr-serverless",
            "emr_application_id": metadata_text(ran.get("AWS EMR Serverless Application ID")),
            "emr_job_run_id": metadata_text(ran.get("AWS EMR Serverless Job Run ID")),
        }


def _emr_serverless_client(
    emr: Any,
    channels: tuple[dg.PipesContextInjector, dg.PipesMessageReader],
    poll_interval_s: float,
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

    injector, reader = channels
    return PipesEMRServerlessS3Client(
        client=emr, context_injector=injector, message_reader=reader, poll_interval=poll_interval_s
    )
