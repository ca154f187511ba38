"""Spark features as a run of an AWS Glue 5 job (dagster-aws's `PipesGlueClient`), chosen with
`FIREPIPE_SPARK_ENGINE=glue`.

The job is defined outside firepipe (by the CDK app): a `glueetl` job on Glue 5.0 (Spark 3.5,
Python 3.11) whose script is firepipe/services/spark_features.py, with the firepipe package
among its Python modules. A run passes the Pipes parameters as job arguments
(`--dagster-pipes-context`, `--dagster-pipes-messages`), which Glue hands the script on its
command line; the entry point reads them there (PipesCliArgsParamsLoader).
"""

import time
from typing import Any

import dagster as dg
from pydantic import Field

from firepipe.resources.spark import AwsSparkCompute, SparkComputeError, metadata_text

# Glue's job run states after which nothing more happens (Glue API, JobRunState).
_GLUE_ENDED = {"FAILED", "STOPPED", "TIMEOUT", "ERROR", "EXPIRED"}


class GlueSparkCompute(AwsSparkCompute):
    """The entry point as a run of a Glue job; Pipes context and messages through S3. What is
    left unset here comes from the job's definition."""

    job_name: str
    worker_type: str | None = Field(default=None, description="G.1X, G.2X, ... (with a count)")
    number_of_workers: int | None = Field(default=None, ge=1)
    extra_py_files: list[str] = Field(
        default_factory=list, description="s3:// .py/.zip files for --extra-py-files"
    )
    additional_python_modules: list[str] = Field(
        default_factory=list,
        description="pip requirements or s3:// wheels for --additional-python-modules (e.g. "
        "the firepipe wheel, which brings its dependencies)",
    )
    timeout_minutes: int | None = Field(default=None, ge=1)
    glue_endpoint_url: str | None = None

    def _clients(self) -> tuple[Any, Any]:
        import boto3

        glue = boto3.client("glue", region_name=self.region, endpoint_url=self.glue_endpoint_url)
        return glue, self._s3()

    def start_job_run_params(self) -> dict[str, Any]:
        """The StartJobRun request (the Pipes client adds its arguments)."""
        if (self.worker_type is None) != (self.number_of_workers is None):
            raise ValueError(
                f"Glue takes a worker type and a number of workers together; got worker_type="
                f"{self.worker_type!r}, number_of_workers={self.number_of_workers!r}"
            )
        arguments = {}
        # A run's arguments replace the job's default arguments of the same name.
        if self.extra_py_files:
            arguments["--extra-py-files"] = ",".join(self.extra_py_files)
        if self.additional_python_modules:
            arguments["--additional-python-modules"] = ",".join(self.additional_python_modules)
        params: dict[str, Any] = {"JobName": self.job_name, "Arguments": arguments}
        if self.worker_type:
            params["WorkerType"] = self.worker_type
            params["NumberOfWorkers"] = self.number_of_workers
        if self.timeout_minutes:
            params["Timeout"] = self.timeout_minutes
        return params

    def _run(
        self, context: dg.AssetExecutionContext, extras: dict[str, Any]
    ) -> tuple[dg.PipesClientCompletedInvocation, dict[str, Any]]:
        glue, s3 = self._clients()
        client = _glue_client(glue, self._pipes_channels(s3), self.poll_interval_s)
        invocation = client.run(
            context=context, start_job_run_params=self.start_job_run_params(), extras=extras
        )
        run_id = metadata_text(invocation.metadata.get("AWS Glue Job Run ID"))
        return invocation, {
            "engine": "spark-glue",
            "glue_job_name": self.job_name,
            "glue_job_run_id": run_id,
        }


def _glue_client(
    glue: Any,
    channels: tuple[dg.PipesContextInjector, dg.PipesMessageReader],
    poll_interval_s: float,
) -> dg.PipesClient:
    """dagster-aws's Glue client with the Pipes context and messages in S3 and failures
    explained. The stock wait polls every 5 s and does not count EXPIRED as an end (it would
    poll forever); this one polls at `poll_interval_s` and names the job, the run, its state
    and Glue's error message when the run ends other than SUCCEEDED."""
    from dagster_aws.pipes import PipesGlueClient

    class PipesGlueS3Client(PipesGlueClient):
        def _wait_for_job_run_completion(self, job_name: str, run_id: str) -> Any:
            while True:
                response = self._client.get_job_run(JobName=job_name, RunId=run_id)
                run = response["JobRun"]
                if run["JobRunState"] == "SUCCEEDED":
                    return response
                if run["JobRunState"] in _GLUE_ENDED:
                    raise SparkComputeError(
                        f"Glue job {job_name} run {run_id} ended {run['JobRunState']}: "
                        f"{run.get('ErrorMessage') or 'no details given'}"
                    )
                time.sleep(poll_interval_s)

    injector, reader = channels
    return PipesGlueS3Client(context_injector=injector, message_reader=reader, client=glue)
