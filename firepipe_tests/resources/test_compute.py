"""GeneratorCompute: the generator entry point through Dagster Pipes, in local subprocesses side
by side and as AWS Batch jobs submitted together (Batch stubbed with botocore's Stubber, Pipes
context and messages on a moto S3 server, each job's container simulated by running the entry
point with the job's env)."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import boto3
import dagster as dg
import polars as pl
import pytest
from botocore.stub import ANY, Stubber
from dagster._core.pipes import utils as pipes_utils
from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, decode_param

from firepipe.core.simulation.simulator import GenerationSpec
from firepipe.lib import fan_out, pipes_batch, pipes_subprocesses
from firepipe.lib.pipes_batch import BatchJobError
from firepipe.lib.pipes_subprocesses import SubprocessError, available_cores
from firepipe.resources import compute
from firepipe.resources.compute import (
    BatchCompute,
    GenerationError,
    GenerationProgress,
    GenerationReport,
    GenerationRequest,
    GeneratorCompute,
    LocalCompute,
)
from firepipe_tests.resources.one_off_asset import call_in_asset

REGION = "eu-west-1"
SPEC = GenerationSpec(devices=3, duration_s=40, seed=5, families=("flaming",))
JOB_ID = "0b2c7a1e-job"


def run_generations(
    resource: GeneratorCompute,
    requests: Mapping[str, GenerationRequest],
    progress: GenerationProgress[str] | None = None,
) -> dict[str, GenerationReport]:
    return call_in_asset(
        resource, lambda context, generator: generator.generate_all(context, requests, progress)
    )


def run_generation(resource: GeneratorCompute, request: GenerationRequest) -> GenerationReport:
    return run_generations(resource, {"only": request})["only"]


def requests_in(
    folder: Path, seeds: tuple[int, ...], *, devices: int = 3, duration_s: int = 40
) -> dict[str, GenerationRequest]:
    return {
        f"seed-{seed}": GenerationRequest(
            spec=GenerationSpec(
                devices=devices, duration_s=duration_s, seed=seed, families=("flaming",)
            ),
            directory=str(folder / f"seed-{seed}"),
        )
        for seed in seeds
    }


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
    with pytest.raises(
        SubprocessError, match=r"firepipe\.services\.generate .* failed with code 1"
    ):
        run_generation(LocalCompute(), request)


class RecordedProcess(pipes_subprocesses._Process):
    """A generator process whose Pipes extras and Popen are kept for the test to look at."""

    started: ClassVar[list["RecordedProcess"]] = []

    def __init__(self, context: Any, command: Any, extras: Any) -> None:
        super().__init__(context, command, extras)
        self.extras = dict(extras)
        RecordedProcess.started.append(self)


@pytest.fixture
def processes(monkeypatch: pytest.MonkeyPatch) -> list[RecordedProcess]:
    monkeypatch.setattr(RecordedProcess, "started", [])
    monkeypatch.setattr(pipes_subprocesses, "_Process", RecordedProcess)
    return RecordedProcess.started


@pytest.mark.slow
def test_local_partitions_run_side_by_side_within_the_cores(
    tmp_path: Path, processes: list[RecordedProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    started_at_each_poll: list[int] = []

    def poll(seconds: float) -> None:
        started_at_each_poll.append(len(processes))
        time.sleep(seconds)

    monkeypatch.setattr(fan_out, "wait", poll)
    requests = requests_in(tmp_path, (11, 12, 13))
    progress: GenerationProgress[str] = GenerationProgress()
    began = datetime.now(UTC)
    reports = run_generations(LocalCompute(max_concurrent=2), requests, progress)

    assert list(reports) == ["seed-11", "seed-12", "seed-13"]
    # The progress saw what was returned, and when each process started: the third last.
    assert progress.finished == reports
    assert list(progress.started) == list(reports)
    assert began <= progress.started["seed-11"] <= progress.started["seed-13"]
    for key, report in reports.items():
        assert report.rows == 3 * 40
        assert [Path(f).parent.name for f in report.files] == [key]
        assert parquet_rows(report.files)["device_id"][0] == f"syn-{key.removeprefix('seed-')}-0"
    # Two started before the first poll, the third only once one of them had ended.
    assert started_at_each_poll[0] == 2
    assert len(processes) == 3
    # The cores are shared out among the processes as generator threads.
    assert {p.extras["workers"] for p in processes} == {max(available_cores() // 2, 1)}


@pytest.mark.slow
def test_local_compute_runs_one_process_per_core_by_default(
    tmp_path: Path, processes: list[RecordedProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(seconds: float) -> None:
        raise dg.DagsterExecutionInterruptedError("SIGTERM while waiting")

    monkeypatch.setattr(fan_out, "wait", interrupt)
    cores = available_cores()
    # Requests of millions of readings each (generating one takes far longer than the moment
    # before the interrupt), so that none can end by itself before the interrupt reaches it,
    # however slowly this test's own process is scheduled.
    requests = requests_in(tmp_path, tuple(range(cores + 1)), devices=200, duration_s=86_400)
    with pytest.raises(dg.DagsterExecutionInterruptedError):
        run_generations(LocalCompute(), requests)
    assert len(processes) == cores
    assert {p.extras["workers"] for p in processes} == {1}
    # The interrupt ended every process it had started: none outlives the step.
    assert all(p.process.returncode is not None for p in processes)
    assert all(p.process.returncode != 0 for p in processes)


@pytest.mark.slow
def test_the_first_failed_local_partition_stops_the_others(
    tmp_path: Path, processes: list[RecordedProcess]
) -> None:
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("a file where the output folder should be")
    requests = {
        # 20 million readings: many seconds of work, still running when the other fails.
        "long": GenerationRequest(
            spec=GenerationSpec(devices=4_000, duration_s=5_000, seed=1),
            directory=str(tmp_path / "long"),
        ),
        "broken": GenerationRequest(spec=SPEC, directory=str(blocked / "out")),
    }
    began = time.monotonic()
    progress: GenerationProgress[str] = GenerationProgress()
    with pytest.raises(SubprocessError, match="failed with code 1"):
        run_generations(LocalCompute(max_concurrent=2), requests, progress)
    long_run, broken = processes
    assert broken.process.returncode == 1
    assert long_run.process.returncode not in (None, 0)  # interrupted, not finished
    assert time.monotonic() - began < 60
    # Both started, neither finished: what the caller still knows after the failure.
    assert set(progress.started) == {"long", "broken"}
    assert progress.finished == {}


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


def described(status: str, job_id: str = JOB_ID, **fields: Any) -> dict[str, Any]:
    return {
        "jobName": "firepipe-generate",
        "jobId": job_id,
        "jobQueue": "q",
        "status": status,
        "startedAt": 1,
        "jobDefinition": "firepipe-generate:3",
        **fields,
    }


def job(status: str, **fields: Any) -> dict[str, Any]:
    return {"jobs": [described(status, **fields)]}


def expect_submit(
    batch: Stubber, queue: str, job_id: str = JOB_ID, definition: str = "firepipe-generate:3"
) -> None:
    batch.add_response(
        "submit_job",
        {"jobName": "firepipe-generate", "jobId": job_id},
        {
            "jobName": ANY,
            "jobQueue": queue,
            "jobDefinition": definition,
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
    # The CUDA image's job definition: the CPU one's image could not use the GPU.
    expect_submit(batch, "firepipe-gpu", definition="firepipe-generate-cuda:2")
    reason = "Essential container in task exited"
    batch.add_response(
        "describe_jobs",
        job("FAILED", statusReason=reason, container={"exitCode": 1, "reason": "OOM"}),
        {"jobs": [JOB_ID]},
    )
    request = GenerationRequest(spec=SPEC, directory=str(tmp_path), use_gpu=True)
    with pytest.raises(BatchJobError, match=f"FAILED: {reason}; container exit code 1 \\(OOM\\)"):
        run_generation(
            batch_compute(pipes_bucket, gpu_job_definition="firepipe-generate-cuda:2"), request
        )
    (params,) = seen
    assert params["jobDefinition"] == "firepipe-generate-cuda:2"
    overrides = params["containerOverrides"]
    assert overrides["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    names = {e["name"] for e in overrides["environment"]}
    assert names == {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"}
    assert backends == ["cupy"]


def run_the_containers(batch: Stubber, s3: Any, moto_endpoint: str) -> list[str]:
    """What AWS Batch would start for each submitted job: the job definition's image with the
    overrides (the entry point in a subprocess). Returns the order of the Batch calls."""
    calls: list[str] = []

    def run_the_container(params: dict[str, Any], **_: Any) -> None:
        overrides = params["containerOverrides"]
        env = {e["name"]: e["value"] for e in overrides["environment"]}
        command = [sys.executable, *overrides["command"][1:]]
        container_env = {**os.environ, **env, "AWS_ENDPOINT_URL": moto_endpoint}
        done = subprocess.run(command, env=container_env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]

    batch.client.meta.events.register("before-parameter-build.batch.SubmitJob", run_the_container)
    batch.client.meta.events.register(
        "before-parameter-build.batch", lambda model, **_: calls.append(model.name)
    )
    return calls


def assert_generated(reports: dict[str, GenerationReport], s3: Any, bucket: str) -> None:
    assert list(reports) == ["seed-21", "seed-22", "seed-23"]
    for key, report in reports.items():
        assert report.rows == 3 * 40
        assert parquet_rows(report.files)["device_id"][0] == f"syn-{key.removeprefix('seed-')}-0"
    # Each job's Pipes session had its own key prefix: three message streams under pipes/.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert len({k.split("/")[1] for k in keys}) == 3


@pytest.mark.aws
@pytest.mark.slow
def test_all_of_a_runs_jobs_are_submitted_before_the_first_completes(
    batch: Stubber, pipes_bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    calls = run_the_containers(batch, s3, moto_endpoint)
    ids = ["job-1", "job-2", "job-3"]
    for job_id in ids:
        expect_submit(batch, "firepipe-cpu", job_id)
    statuses = [
        described(s, i) for s, i in zip(["RUNNING", "SUCCEEDED", "RUNNABLE"], ids, strict=True)
    ]
    # One DescribeJobs call polls every job in flight.
    batch.add_response("describe_jobs", {"jobs": statuses}, {"jobs": ids})
    done = [described("SUCCEEDED", i) for i in ("job-1", "job-3")]
    batch.add_response("describe_jobs", {"jobs": done}, {"jobs": ["job-1", "job-3"]})

    requests = requests_in(tmp_path, (21, 22, 23))
    reports = run_generations(batch_compute(pipes_bucket), requests)

    assert calls == ["SubmitJob", "SubmitJob", "SubmitJob", "DescribeJobs", "DescribeJobs"]
    assert_generated(reports, s3, pipes_bucket)


@pytest.mark.aws
@pytest.mark.slow
def test_jobs_beyond_max_concurrent_take_the_first_free_slot(
    batch: Stubber, pipes_bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    calls = run_the_containers(batch, s3, moto_endpoint)
    expect_submit(batch, "firepipe-cpu", "job-1")
    expect_submit(batch, "firepipe-cpu", "job-2")
    statuses = [described("SUCCEEDED", "job-1"), described("RUNNING", "job-2")]
    batch.add_response("describe_jobs", {"jobs": statuses}, {"jobs": ["job-1", "job-2"]})
    expect_submit(batch, "firepipe-cpu", "job-3")
    done = [described("SUCCEEDED", i) for i in ("job-2", "job-3")]
    batch.add_response("describe_jobs", {"jobs": done}, {"jobs": ["job-2", "job-3"]})

    requests = requests_in(tmp_path, (21, 22, 23))
    reports = run_generations(batch_compute(pipes_bucket, max_concurrent=2), requests)

    assert calls == ["SubmitJob", "SubmitJob", "DescribeJobs", "SubmitJob", "DescribeJobs"]
    assert_generated(reports, s3, pipes_bucket)


@pytest.mark.aws
def test_the_first_failed_job_terminates_the_others(
    batch: Stubber, pipes_bucket: str, tmp_path: Path
) -> None:
    ids = ["job-1", "job-2", "job-3"]
    for job_id in ids:
        expect_submit(batch, "firepipe-cpu", job_id)
    statuses = [
        described("RUNNING", "job-1"),
        described("FAILED", "job-2", statusReason="Host EC2 instance terminated"),
        described("RUNNABLE", "job-3"),
    ]
    batch.add_response("describe_jobs", {"jobs": statuses}, {"jobs": ids})
    for job_id in ("job-1", "job-3"):
        batch.add_response(
            "terminate_job", {}, {"jobId": job_id, "reason": pipes_batch.SIBLING_FAILED_REASON}
        )
    with pytest.raises(BatchJobError, match=r"\(job-2\) FAILED: Host EC2 instance terminated"):
        run_generations(batch_compute(pipes_bucket), requests_in(tmp_path, (31, 32, 33)))


@pytest.mark.aws
def test_an_interrupted_step_terminates_its_batch_jobs(
    batch: Stubber, pipes_bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ids = ["job-1", "job-2"]
    for job_id in ids:
        expect_submit(batch, "firepipe-cpu", job_id)
    statuses = [described("RUNNABLE", i) for i in ids]
    batch.add_response("describe_jobs", {"jobs": statuses}, {"jobs": ids})
    for job_id in ids:
        batch.add_response(
            "terminate_job", {}, {"jobId": job_id, "reason": "Dagster step was interrupted"}
        )

    def interrupt(seconds: float) -> None:
        raise dg.DagsterExecutionInterruptedError("SIGTERM while waiting")

    monkeypatch.setattr(fan_out, "wait", interrupt)
    with pytest.raises(dg.DagsterExecutionInterruptedError):
        run_generations(batch_compute(pipes_bucket), requests_in(tmp_path, (41, 42)))


@pytest.mark.aws
@pytest.mark.slow
def test_a_failed_job_leaves_the_progress_of_those_that_succeeded_or_never_started(
    batch: Stubber, pipes_bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    run_the_containers(batch, s3, moto_endpoint)
    expect_submit(batch, "firepipe-cpu", "job-1")
    expect_submit(batch, "firepipe-cpu", "job-2")
    running_since_ms = 1_767_225_600_000  # 2026-01-01T00:00:00Z, as Batch reports startedAt
    # The failure is listed first: job-1's success in the same answer still counts.
    ended = [
        described("FAILED", "job-2", statusReason="Host EC2 instance terminated"),
        described("SUCCEEDED", "job-1", startedAt=running_since_ms),
    ]
    batch.add_response("describe_jobs", {"jobs": ended}, {"jobs": ["job-1", "job-2"]})

    progress: GenerationProgress[str] = GenerationProgress()
    requests = requests_in(tmp_path, (51, 52, 53))
    with pytest.raises(BatchJobError, match=r"\(job-2\) FAILED"):
        run_generations(batch_compute(pipes_bucket, max_concurrent=2), requests, progress)

    # seed-53 waited for a slot and never started; seed-51's start is Batch's, not the submit's.
    assert list(progress.started) == ["seed-51", "seed-52"]
    assert progress.started["seed-51"] == datetime(2026, 1, 1, tzinfo=UTC)
    assert list(progress.finished) == ["seed-51"]
    assert progress.finished["seed-51"].rows == 3 * 40
