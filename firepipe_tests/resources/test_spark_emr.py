"""SparkCompute on EMR Serverless: dagster-aws's EMR Serverless Pipes client with EMR stubbed by
botocore's Stubber and the Pipes context and messages on a moto S3 server. The job run itself
is simulated by what EMR would do: fetch the entry point from S3 and spark-submit it (a local
Spark, the one Spark start of this module) with the job's driver environment."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import polars as pl
import pytest
from botocore.stub import Stubber
from dagster._core.pipes import utils as pipes_utils
from dagster_aws.pipes.clients import emr_serverless as dagster_emr_serverless
from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, decode_param

from firepipe.core.features.spec import Difference, FeatureSpec, Rolling
from firepipe.resources.spark import SparkCompute, SparkComputeError
from firepipe.resources.spark_emr_serverless import EmrServerlessSparkCompute
from firepipe_tests.conftest import REPO_ROOT
from firepipe_tests.core.features.feature_sample import silver_sample
from firepipe_tests.resources.conftest import REGION, InterruptingClock
from firepipe_tests.resources.one_off_asset import call_in_asset

ACCOUNT = "123456789012"
APPLICATION = "00fm4oe0607u5a1d"
JOB_RUN = "00fm4p1s2a3b4c5d"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/firepipe-emr-job"
RUN_ARN = f"arn:aws:emr-serverless:{REGION}:{ACCOUNT}:/applications/{APPLICATION}/jobruns/{JOB_RUN}"
DRIVER_ENV = "spark.emr-serverless.driverEnv."
SPEC = FeatureSpec(
    (Rolling("co_ppm", "mean", 30), Rolling("temperature_c", "max", 60), Difference("co_ppm", 10))
)


def compute(resource: SparkCompute, **request: Any) -> dict[str, Any]:
    return call_in_asset(
        resource, lambda context, spark: spark.compute_features(context, **request)
    )


@pytest.fixture
def emr(monkeypatch: pytest.MonkeyPatch, s3: Any) -> Any:
    """A stubbed EMR Serverless client (and the moto S3 client) behind every EMR resource."""
    client = boto3.client("emr-serverless", region_name=REGION)
    monkeypatch.setattr(EmrServerlessSparkCompute, "_clients", lambda self: (client, s3))
    # A failed job sends no Pipes messages; dagster's reader then waits 10 s for late ones.
    monkeypatch.setattr(pipes_utils, "WAIT_FOR_LOGS_AFTER_EXECUTION_INTERVAL", 0)
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def emr_compute(bucket: str, **overrides: Any) -> EmrServerlessSparkCompute:
    return EmrServerlessSparkCompute(
        region=REGION,
        application_id=APPLICATION,
        execution_role_arn=ROLE,
        entry_point=f"s3://{bucket}/code/spark_features.py",
        pipes_bucket=bucket,
        pipes_prefix="pipes/",
        poll_interval_s=0.01,
        message_interval_s=0.2,
        **overrides,
    )


def job_run(state: str, details: str = "Job run is in progress.") -> dict[str, Any]:
    return {
        "jobRun": {
            "applicationId": APPLICATION,
            "jobRunId": JOB_RUN,
            "arn": RUN_ARN,
            "createdBy": ROLE,
            "createdAt": 1,
            "updatedAt": 2,
            "executionRole": ROLE,
            "state": state,
            "stateDetails": details,
            "releaseLabel": "emr-7.5.0",
            "jobDriver": {"sparkSubmit": {"entryPoint": "s3://x/spark_features.py"}},
        }
    }


def expect_start(emr: Stubber) -> None:
    emr.add_response(
        "start_job_run",
        {"applicationId": APPLICATION, "jobRunId": JOB_RUN, "arn": RUN_ARN},
    )


def expect_poll(emr: Stubber, state: str, details: str = "Job run is in progress.") -> None:
    ids = {"applicationId": APPLICATION, "jobRunId": JOB_RUN}
    emr.add_response("get_job_run", job_run(state, details), ids)


def expect_dashboard(emr: Stubber) -> None:
    ids = {"applicationId": APPLICATION, "jobRunId": JOB_RUN}
    emr.add_response("get_dashboard_for_job_run", {"url": "https://dashboard"}, ids)


def capture_start(emr: Stubber) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    emr.client.meta.events.register(
        "before-parameter-build.emr-serverless.StartJobRun", lambda params, **_: seen.append(params)
    )
    return seen


def submit_parameters(params: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """The job's driver environment and its other Spark settings, from its submit parameters."""
    tokens = shlex.split(params["jobDriver"]["sparkSubmit"]["sparkSubmitParameters"])
    assert tokens[::2] == ["--conf"] * (len(tokens) // 2), tokens
    settings = dict(t.split("=", 1) for t in tokens[1::2])
    env = {k.removeprefix(DRIVER_ENV): v for k, v in settings.items() if k.startswith(DRIVER_ENV)}
    return env, {k: v for k, v in settings.items() if not k.startswith(DRIVER_ENV)}


@pytest.mark.aws
@pytest.mark.slow
def test_an_emr_serverless_job_run_computes_features_with_pipes_through_s3(
    emr: Stubber, s3: Any, pipes_bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    entry = REPO_ROOT / "firepipe/services/spark_features.py"
    # put/get_object rather than upload/download_file: no transfer thread pool in this test.
    s3.put_object(Bucket=pipes_bucket, Key="code/spark_features.py", Body=entry.read_bytes())
    silver = silver_sample(devices=2, seconds=240)
    silver.write_parquet(tmp_path / "silver.parquet")
    output_dir = (tmp_path / "staged").as_uri()
    contexts: list[dict[str, Any]] = []

    def run_the_job(params: dict[str, Any], **_: Any) -> None:
        """What EMR Serverless would do: fetch the entry point and spark-submit it."""
        env, conf = submit_parameters(params)
        where = decode_param(env[DAGSTER_PIPES_CONTEXT_ENV_VAR])
        body = s3.get_object(Bucket=where["bucket"], Key=where["key"])["Body"].read()
        contexts.append({"key": where["key"], **json.loads(body)})
        script = tmp_path / "spark_features.py"
        url = params["jobDriver"]["sparkSubmit"]["entryPoint"].removeprefix("s3://")
        bucket, key = url.split("/", 1)
        script.write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        local = ["--master", "local[1]", "--conf", "spark.ui.enabled=false"]
        command = [
            str(Path(sys.executable).parent / "spark-submit"),
            *local,
            *(arg for k, v in conf.items() for arg in ("--conf", f"{k}={v}")),
            str(script),
        ]
        job_env = {**os.environ, **env, "AWS_ENDPOINT_URL": moto_endpoint}
        done = subprocess.run(command, env=job_env, capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]

    emr.client.meta.events.register(
        "before-parameter-build.emr-serverless.StartJobRun", run_the_job
    )
    seen = capture_start(emr)
    expect_start(emr)
    expect_poll(emr, "RUNNING")
    expect_dashboard(emr)
    expect_poll(emr, "SUCCESS")

    resource = emr_compute(
        pipes_bucket,
        python=sys.executable,
        spark_conf={"spark.sql.shuffle.partitions": "2"},
    )
    report = compute(
        resource,
        input_files=[str(tmp_path / "silver.parquet")],
        spec=SPEC,
        output_dir=output_dir,
    )

    # The request EMR got: this application, role and entry point, the interpreter and Pipes'
    # bootstrap parameters in the driver's environment, the run's Dagster tags.
    (params,) = seen
    assert params["applicationId"] == APPLICATION
    assert params["executionRoleArn"] == ROLE
    assert params["name"].startswith("firepipe-spark-features-")
    assert params["jobDriver"]["sparkSubmit"]["entryPoint"] == resource.entry_point
    env, conf = submit_parameters(params)
    assert env["AWS_REGION"] == REGION
    assert env["PYSPARK_PYTHON"] == env["PYSPARK_DRIVER_PYTHON"] == sys.executable
    assert set(env) >= {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"}
    assert conf == {
        "spark.executorEnv.PYSPARK_PYTHON": sys.executable,
        "spark.sql.shuffle.partitions": "2",
    }
    assert params["tags"]["dagster/job"] == "__ephemeral_asset_job__"
    (context,) = contexts
    assert context["key"].startswith("pipes/")
    assert context["extras"]["input_files"] == [str(tmp_path / "silver.parquet")]
    assert FeatureSpec.from_json(context["extras"]["spec"]) == SPEC
    assert "spark_master" not in context["extras"]  # the cluster's session, not a local one

    # The report came back through S3 and describes the files the job wrote.
    assert report["engine"] == "spark-emr-serverless"
    assert report["emr_application_id"] == APPLICATION
    assert report["emr_job_run_id"] == JOB_RUN
    assert report["feature_spec_hash"] == SPEC.hash()
    written = pl.concat([pl.read_parquet(f.removeprefix("file://")) for f in report["files"]])
    assert written.height == report["rows"] == silver.filter(~pl.col("is_gap")).height
    assert written.columns[-3:] == list(SPEC.names)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=pipes_bucket)["Contents"]]
    messages = [k for k in keys if k.startswith("pipes/") and k.endswith(".json")]
    assert messages
    assert context["key"] not in keys  # the session removed its context object


@pytest.mark.aws
def test_a_failed_job_run_raises_an_error_with_emrs_reason(
    emr: Stubber, pipes_bucket: str, tmp_path: Path
) -> None:
    reason = "Job failed, please check complete logs in configured logging destination."
    expect_start(emr)
    expect_poll(emr, "FAILED", reason)
    expect_dashboard(emr)
    expect_poll(emr, "FAILED", reason)
    with pytest.raises(
        SparkComputeError,
        match=f"job run {JOB_RUN} of application {APPLICATION} ended FAILED: {reason}",
    ):
        compute(
            emr_compute(pipes_bucket),
            input_files=["s3://lake/silver/a.parquet"],
            spec=SPEC,
            output_dir="s3://lake/gold/staged/run",
        )


@pytest.mark.aws
def test_an_interrupted_job_run_is_cancelled(
    emr: Stubber, pipes_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # firepipe's wait defers to dagster-aws's loop, which sleeps between polls; its run()
    # catches the interrupt and cancels the run (forward_termination on by default).
    monkeypatch.setattr(dagster_emr_serverless, "time", InterruptingClock())
    expect_start(emr)
    expect_poll(emr, "RUNNING")
    expect_dashboard(emr)
    emr.add_response(
        "cancel_job_run",
        {"applicationId": APPLICATION, "jobRunId": JOB_RUN},
        {"applicationId": APPLICATION, "jobRunId": JOB_RUN},
    )
    with pytest.raises(dg.DagsterExecutionInterruptedError):
        compute(
            emr_compute(pipes_bucket),
            input_files=["s3://lake/silver/a.parquet"],
            spec=SPEC,
            output_dir="s3://lake/gold/staged/run",
        )
    # The emr fixture then requires every stubbed call made, CancelJobRun among them.


def test_packaging_and_logging_options_reach_the_job_request() -> None:
    resource = emr_compute(
        "pipes",
        python="./environment/bin/python",
        py_files="s3://code/firepipe.zip",
        archives="s3://code/firepipe-venv.tar.gz#environment",
        spark_conf={"spark.executor.memory": "8g"},
        log_uri="s3://logs/emr/",
        execution_timeout_minutes=90,
    )
    parameters = shlex.split(resource.spark_submit_parameters())
    assert parameters[-4:] == [
        "--py-files",
        "s3://code/firepipe.zip",
        "--archives",
        "s3://code/firepipe-venv.tar.gz#environment",
    ]
    assert "spark.executor.memory=8g" in parameters
    assert "spark.emr-serverless.driverEnv.PYSPARK_PYTHON=./environment/bin/python" in parameters

    class Run:
        run_id = "1234abcd-rest"

    class Context:
        run = Run()

    params = resource.start_job_run_params(Context())  # type: ignore[arg-type]
    assert params["name"] == "firepipe-spark-features-1234abcd"
    assert params["executionTimeoutMinutes"] == 90
    assert params["configurationOverrides"] == {
        "monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": "s3://logs/emr/"}}
    }


def test_a_spark_setting_with_whitespace_is_refused() -> None:
    resource = emr_compute("pipes", spark_conf={"spark.driver.extraJavaOptions": "-Xss4m -Dx=1"})
    with pytest.raises(ValueError, match=r"\['spark.driver.extraJavaOptions'\] hold whitespace"):
        resource.spark_submit_parameters()
