"""GeneratorCompute: the generator entry point through Dagster Pipes, in a local subprocess and
as an AWS Batch job (Batch stubbed with botocore's Stubber, Pipes context and messages on a moto
S3 server, the job's container simulated by running the entry point with the job's env)."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import polars as pl
import pytest
from botocore.stub import ANY, Stubber
from dagster._core.errors import DagsterPipesExecutionError
from dagster._core.pipes import utils as pipes_utils
from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, decode_param

from firepipe.core.simulation.simulator import GenerationSpec
from firepipe.resources import compute
from firepipe.resources.compute import (
    BatchCompute,
    GenerationError,
    GenerationReport,
    GenerationRequest,
    GeneratorCompute,
    LocalCompute,
)
from firepipe_tests.resources.one_off_asset import call_in_asset

REGION = "eu-west-1"
SPEC = GenerationSpec(devices=3, duration_s=40, seed=5, families=("flaming",))
JOB_ID = "0b2c7a1e-job"


def run_generation(resource: GeneratorCompute, request: GenerationRequest) -> GenerationReport:
    return call_in_asset(resource, lambda context, generator: generator.generate(context, request))


def parquet_rows(files: tuple[str, ...]) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(f) for f in files])


@pytest.mark.slow
def test_local_compute_generates_in_a_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "staged"
    request = GenerationRequest(spec=SPEC, directory=str(out), constant_columns={"batch": "007"})
    report = run_generation(LocalCompute(), request)

    assert report.rows == SPEC.devices * SPEC.duration_s
    assert report.backend == "numpy"
    assert report.seconds > 0
    assert [Path(f).parent for f in report.files] == [out]
    written = parquet_rows(report.files)
    assert written.height == report.rows
    assert written["batch"].unique().to_list() == ["007"]
    assert written["scenario_family"].unique().to_list() == ["flaming"]
    assert written["device_id"].n_unique() == SPEC.devices


@pytest.mark.slow
def test_local_compute_surfaces_a_failing_generator(tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("a file where the output folder should be")
    request = GenerationRequest(spec=SPEC, directory=str(blocked / "out"))
    with pytest.raises(DagsterPipesExecutionError, match="failed with code 1"):
        run_generation(LocalCompute(), request)


def test_a_report_must_come_exactly_once() -> None:
    message = {"kind": "firepipe.generation", "rows": 4, "files": ["a"], "seconds": 1.5}
    report = GenerationReport.from_messages(["noise", {**message, "backend": "numpy"}])
    assert report == GenerationReport(rows=4, files=("a",), seconds=1.5, backend="numpy")
    with pytest.raises(GenerationError, match="reported 0 results"):
        GenerationReport.from_messages([{"kind": "other"}])


def test_gpu_runs_swap_cpu_backends_for_cupy() -> None:
    assert compute.resolve_backend("numpy", use_gpu=True) == "cupy"
    assert compute.resolve_backend("torch", use_gpu=True) == "torch"
    assert compute.resolve_backend("numpy", use_gpu=False) == "numpy"


# --- AWS Batch ---------------------------------------------------------------------------------


@pytest.fixture
def pipes_bucket(moto_endpoint: str, aws_credentials: None, request: pytest.FixtureRequest) -> str:
    bucket = f"pipes-{request.node.name.replace('_', '-')[:40]}"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    return bucket


def batch_compute(bucket: str, **overrides: Any) -> BatchCompute:
    return BatchCompute(
        region=REGION,
        job_definition="firepipe-generate:3",
        cpu_job_queue="firepipe-cpu",
        gpu_job_queue="firepipe-gpu",
        pipes_bucket=bucket,
        pipes_prefix="pipes/",
        poll_interval_s=0.01,
        message_interval_s=0.2,
        **overrides,
    )


@pytest.fixture
def batch(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str, aws_credentials: None) -> Stubber:
    """A stubbed Batch client (and a real S3 client on moto) behind every BatchCompute."""
    client = boto3.client("batch", region_name=REGION)
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    monkeypatch.setattr(BatchCompute, "_clients", lambda self: (client, s3))
    # A failed or terminated job sends no Pipes messages; dagster's reader then waits 10 s for
    # late ones before it gives up, which only slows these tests down.
    monkeypatch.setattr(pipes_utils, "WAIT_FOR_LOGS_AFTER_EXECUTION_INTERVAL", 0)
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def job(status: str, **fields: Any) -> dict[str, Any]:
    return {
        "jobs": [
            {
                "jobName": "firepipe-generate",
                "jobId": JOB_ID,
                "jobQueue": "q",
                "status": status,
                "startedAt": 1,
                "jobDefinition": "firepipe-generate:3",
                **fields,
            }
        ]
    }


def expect_submit(batch: Stubber, queue: str) -> None:
    batch.add_response(
        "submit_job",
        {"jobName": "firepipe-generate", "jobId": JOB_ID},
        {
            "jobName": ANY,
            "jobQueue": queue,
            "jobDefinition": "firepipe-generate:3",
            "containerOverrides": ANY,
            "tags": ANY,
        },
    )


def capture_submit(batch: Stubber) -> list[dict[str, Any]]:
    """The SubmitJob parameters, seen before the stub answers (the job's side runs here)."""
    seen: list[dict[str, Any]] = []
    batch.client.meta.events.register(
        "before-parameter-build.batch.SubmitJob", lambda params, **_: seen.append(params)
    )
    return seen


@pytest.mark.aws
@pytest.mark.slow
def test_batch_job_runs_the_entry_point_with_pipes_through_s3(
    batch: Stubber, pipes_bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    contexts: list[dict[str, Any]] = []

    def run_the_container(params: dict[str, Any], **_: Any) -> None:
        """What AWS Batch would start: the job definition's image with the overrides."""
        overrides = params["containerOverrides"]
        env = {e["name"]: e["value"] for e in overrides["environment"]}
        where = decode_param(env[DAGSTER_PIPES_CONTEXT_ENV_VAR])
        body = s3.get_object(Bucket=where["bucket"], Key=where["key"])["Body"].read()
        contexts.append({"key": where["key"], **json.loads(body)})
        command = [sys.executable, *overrides["command"][1:]]
        container_env = {**os.environ, **env, "AWS_ENDPOINT_URL": moto_endpoint}
        done = subprocess.run(command, env=container_env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]

    batch.client.meta.events.register("before-parameter-build.batch.SubmitJob", run_the_container)
    seen = capture_submit(batch)
    expect_submit(batch, "firepipe-cpu")
    batch.add_response("describe_jobs", job("RUNNING"), {"jobs": [JOB_ID]})
    batch.add_response("describe_jobs", job("SUCCEEDED"), {"jobs": [JOB_ID]})

    request = GenerationRequest(spec=SPEC, directory=str(tmp_path / "out"))
    # The job's vCPUs size the generator's threads (a container sees the host's CPUs).
    report = run_generation(batch_compute(pipes_bucket, workers=2), request)

    assert report.rows == SPEC.devices * SPEC.duration_s
    assert parquet_rows(report.files).height == report.rows
    assert report.backend == "numpy"
    (params,) = seen
    assert params["containerOverrides"]["command"] == ["python", "-m", "firepipe.services.generate"]
    assert "resourceRequirements" not in params["containerOverrides"]
    assert params["tags"]["dagster/job"] == "__ephemeral_asset_job__"
    (context,) = contexts
    assert context["key"].startswith("pipes/")
    assert context["extras"]["spec"] == SPEC.to_json()
    assert context["extras"]["directory"] == str(tmp_path / "out")
    assert context["extras"]["workers"] == 2
    # The session cleaned up its context object; the messages stay under the prefix.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=pipes_bucket)["Contents"]]
    assert context["key"] not in keys
    assert keys
    assert all(k.startswith("pipes/") and k.endswith(".json") for k in keys)


@pytest.mark.aws
def test_gpu_jobs_go_to_the_gpu_queue_with_one_gpu_and_cupy(
    batch: Stubber, pipes_bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    backends: list[str] = []

    def read_context(params: dict[str, Any], **_: Any) -> None:
        env = {e["name"]: e["value"] for e in params["containerOverrides"]["environment"]}
        where = decode_param(env[DAGSTER_PIPES_CONTEXT_ENV_VAR])
        body = s3.get_object(Bucket=where["bucket"], Key=where["key"])["Body"].read()
        backends.append(json.loads(body)["extras"]["backend"])

    batch.client.meta.events.register("before-parameter-build.batch.SubmitJob", read_context)
    seen = capture_submit(batch)
    expect_submit(batch, "firepipe-gpu")
    reason = "Essential container in task exited"
    batch.add_response(
        "describe_jobs",
        job("FAILED", statusReason=reason, container={"exitCode": 1, "reason": "OOM"}),
        {"jobs": [JOB_ID]},
    )
    request = GenerationRequest(spec=SPEC, directory=str(tmp_path), use_gpu=True)
    with pytest.raises(GenerationError, match=f"FAILED: {reason}; container exit code 1 \\(OOM\\)"):
        run_generation(batch_compute(pipes_bucket), request)
    (params,) = seen
    overrides = params["containerOverrides"]
    assert overrides["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    names = {e["name"] for e in overrides["environment"]}
    assert names == {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"}
    assert backends == ["cupy"]


@pytest.mark.aws
def test_an_interrupted_step_terminates_its_batch_job(
    batch: Stubber, pipes_bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    expect_submit(batch, "firepipe-cpu")
    batch.add_response("describe_jobs", job("RUNNABLE"), {"jobs": [JOB_ID]})
    batch.add_response(
        "terminate_job", {}, {"jobId": JOB_ID, "reason": "Dagster step was interrupted"}
    )

    def interrupt(stop: threading.Event, seconds: float) -> None:
        raise dg.DagsterExecutionInterruptedError("SIGTERM while waiting")

    monkeypatch.setattr(compute, "_wait", interrupt)
    request = GenerationRequest(spec=SPEC, directory=str(tmp_path))
    with pytest.raises(dg.DagsterExecutionInterruptedError):
        run_generation(batch_compute(pipes_bucket), request)


@pytest.mark.aws
def test_a_stopped_generation_in_a_worker_thread_terminates_its_batch_job(
    batch: Stubber, pipes_bucket: str, tmp_path: Path
) -> None:
    """Dagster interrupts only the step's main thread: the asset stops its workers' jobs by
    setting their stop event, and each terminates its Batch job."""
    expect_submit(batch, "firepipe-cpu")
    batch.add_response("describe_jobs", job("RUNNABLE"), {"jobs": [JOB_ID]})
    batch.add_response(
        "terminate_job", {}, {"jobId": JOB_ID, "reason": "Dagster step was interrupted"}
    )
    stop = threading.Event()
    outcome: list[BaseException] = []

    @dg.asset
    def generated(
        context: dg.AssetExecutionContext, generator: GeneratorCompute
    ) -> dg.MaterializeResult:
        def work() -> None:
            try:
                generator.generate(
                    context, GenerationRequest(spec=SPEC, directory=str(tmp_path)), stop
                )
            except BaseException as error:  # what the worker's future would hold
                outcome.append(error)

        worker = threading.Thread(target=work)
        worker.start()
        stop.set()  # the step was interrupted
        worker.join(timeout=30)
        assert not worker.is_alive()
        return dg.MaterializeResult()

    dg.materialize([generated], resources={"generator": batch_compute(pipes_bucket)})
    assert [type(e) for e in outcome] == [dg.DagsterExecutionInterruptedError]
    batch.assert_no_pending_responses()
