"""Generator compute: where the generator entry point runs, always through Dagster Pipes.

`LocalCompute` starts `python -m firepipe.services.generate` in a subprocess; `BatchCompute`
submits it as an AWS Batch job on a CPU or a GPU queue, with the Pipes context and messages in
S3. Both return what the entry point reported (`GenerationReport`), so the asset does not know
where it ran. dagster-aws has no Batch Pipes client; `PipesBatchClient` follows its ECS one.
"""

import copy
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from pydantic import Field

from firepipe.core.simulation.simulator import GenerationSpec
from firepipe.lib.pipes_s3 import s3_pipes_channels
from firepipe.services import generate as entry

GENERATOR_COMMAND = ("python", "-m", "firepipe.services.generate")
# The array backend a GPU run uses when the request names a CPU one (issue 3: CuPy on a GPU).
GPU_BACKEND = "cupy"
CPU_BACKENDS = frozenset({"numpy", "array_api_strict"})
# AWS Batch job states after which nothing changes (AWS Batch API, DescribeJobs `status`).
BATCH_DONE = frozenset({"SUCCEEDED", "FAILED"})


class GenerationError(RuntimeError):
    """The generator did not finish, or finished without reporting what it wrote."""


@dataclass(frozen=True)
class GenerationRequest:
    """One generation: what to simulate, where the Parquet files go, how to compute it."""

    spec: GenerationSpec
    directory: str
    backend: str = "numpy"
    use_gpu: bool | None = None  # None: the resource's own setting
    constant_columns: Mapping[str, str] = field(default_factory=dict)
    storage_options: Mapping[str, str] = field(default_factory=dict)

    def extras(self, backend: str) -> dict[str, Any]:
        return {
            entry.EXTRA_SPEC: self.spec.to_json(),
            entry.EXTRA_DIRECTORY: self.directory,
            entry.EXTRA_BACKEND: backend,
            entry.EXTRA_CONSTANT_COLUMNS: dict(self.constant_columns),
            entry.EXTRA_STORAGE_OPTIONS: dict(self.storage_options),
        }


@dataclass(frozen=True)
class GenerationReport:
    """What the entry point reported: rows and files written, seconds taken, backend used."""

    rows: int
    files: tuple[str, ...]
    seconds: float
    backend: str

    @classmethod
    def from_messages(cls, messages: Sequence[Any]) -> "GenerationReport":
        reports = [
            m for m in messages if isinstance(m, dict) and m.get("kind") == entry.REPORT_KIND
        ]
        if len(reports) != 1:
            raise GenerationError(
                f"the generator reported {len(reports)} results, expected 1: it failed before "
                "writing its report or was not firepipe.services.generate"
            )
        r = reports[0]
        return cls(
            rows=int(r["rows"]),
            files=tuple(str(f) for f in r["files"]),
            seconds=float(r["seconds"]),
            backend=str(r["backend"]),
        )


def resolve_backend(backend: str, use_gpu: bool) -> str:
    """The array backend to run: a GPU run replaces a CPU-only backend by CuPy."""
    return GPU_BACKEND if use_gpu and backend in CPU_BACKENDS else backend


class GeneratorCompute(dg.ConfigurableResource, ABC):
    """Runs the generator entry point for one request through Dagster Pipes."""

    use_gpu: bool = False
    max_concurrent: int = Field(
        default=1,
        ge=1,
        description="Partitions of one run generated at the same time (each its own process or "
        "Batch job).",
    )

    @abstractmethod
    def generate(
        self,
        context: dg.AssetExecutionContext,
        request: GenerationRequest,
        stop: threading.Event | None = None,
    ) -> GenerationReport:
        """Run one generation. A caller that runs several in worker threads sets `stop` to end
        them: Dagster interrupts only the step's main thread."""

    def _backend(self, request: GenerationRequest) -> tuple[bool, str]:
        use_gpu = self.use_gpu if request.use_gpu is None else request.use_gpu
        return use_gpu, resolve_backend(request.backend, use_gpu)


class LocalCompute(GeneratorCompute):
    """The entry point in a subprocess of the step, with this interpreter."""

    def generate(
        self,
        context: dg.AssetExecutionContext,
        request: GenerationRequest,
        stop: threading.Event | None = None,
    ) -> GenerationReport:
        # The subprocess ends with the step: run it on the step's own thread to be interruptible.
        _, backend = self._backend(request)
        client = dg.PipesSubprocessClient()
        invocation = client.run(
            command=[sys.executable, *GENERATOR_COMMAND[1:]],
            context=context,
            extras=request.extras(backend),
        )
        return GenerationReport.from_messages(invocation.get_custom_messages())


class BatchCompute(GeneratorCompute):
    """The entry point as an AWS Batch job; Pipes context and messages through S3."""

    # A run's partitions fan out as parallel Batch jobs; the queue's compute environment caps
    # what really runs at once.
    max_concurrent: int = Field(default=16, ge=1)

    region: str
    job_definition: str = Field(description="Batch job definition whose image has firepipe")
    cpu_job_queue: str
    gpu_job_queue: str
    pipes_bucket: str = Field(description="S3 bucket for the Pipes context and messages")
    pipes_prefix: str = "pipes/"
    batch_endpoint_url: str | None = None
    s3_endpoint_url: str | None = None
    poll_interval_s: float = 10.0
    message_interval_s: float = 10.0
    workers: int | None = Field(
        default=None,
        description="Generator threads in the job: its vCPUs. A container sees the host's CPUs, "
        "so without this the generator sizes itself to the host's cores and their memory.",
    )

    def _clients(self) -> tuple[Any, Any]:
        import boto3

        batch = boto3.client("batch", region_name=self.region, endpoint_url=self.batch_endpoint_url)
        s3 = boto3.client("s3", region_name=self.region, endpoint_url=self.s3_endpoint_url)
        return batch, s3

    def generate(
        self,
        context: dg.AssetExecutionContext,
        request: GenerationRequest,
        stop: threading.Event | None = None,
    ) -> GenerationReport:
        use_gpu, backend = self._backend(request)
        batch, s3 = self._clients()
        overrides: dict[str, Any] = {"command": list(GENERATOR_COMMAND)}
        if use_gpu:
            overrides["resourceRequirements"] = [{"type": "GPU", "value": "1"}]
        name = f"firepipe-generate-{context.run.run_id[:8]}-seed-{request.spec.seed}"
        client = PipesBatchClient(
            batch,
            s3,
            bucket=self.pipes_bucket,
            prefix=self.pipes_prefix,
            poll_interval_s=self.poll_interval_s,
            message_interval_s=self.message_interval_s,
            stop=stop,
        )
        invocation = client.run(
            context=context,
            submit_job_params={
                "jobName": name,
                "jobQueue": self.gpu_job_queue if use_gpu else self.cpu_job_queue,
                "jobDefinition": self.job_definition,
                "containerOverrides": overrides,
            },
            extras={**request.extras(backend), entry.EXTRA_WORKERS: self.workers},
        )
        return GenerationReport.from_messages(invocation.get_custom_messages())


def _wait(stop: threading.Event, seconds: float) -> None:
    """Sleep between polls; a set `stop` ends the wait as an interrupt of the step would."""
    if stop.wait(seconds):
        raise dg.DagsterExecutionInterruptedError("generation stopped by its run")


class PipesBatchClient(dg.PipesClient):
    """Runs one AWS Batch job under a Pipes session whose context and messages live in S3."""

    def __init__(
        self,
        batch: Any,
        s3: Any,
        *,
        bucket: str,
        prefix: str = "",
        poll_interval_s: float = 10.0,
        message_interval_s: float = 10.0,
        stop: threading.Event | None = None,
    ) -> None:
        self._batch = batch
        self._stop = stop or threading.Event()
        self._poll_interval_s = poll_interval_s
        self._injector, self._reader = s3_pipes_channels(
            s3, bucket=bucket, prefix=prefix, message_interval_s=message_interval_s
        )

    def run(  # type: ignore[override]
        self,
        *,
        context: dg.AssetExecutionContext,
        submit_job_params: Mapping[str, Any],
        extras: dict[str, Any] | None = None,
    ) -> dg.PipesClientCompletedInvocation:
        with dg.open_pipes_session(
            context=context,
            context_injector=self._injector,
            message_reader=self._reader,
            extras=extras,
        ) as session:
            params = copy.deepcopy(dict(submit_job_params))
            overrides = params.setdefault("containerOverrides", {})
            environment = overrides.setdefault("environment", [])
            environment.extend(
                {"name": k, "value": v} for k, v in session.get_bootstrap_env_vars().items()
            )
            params["tags"] = {**params.get("tags", {}), **session.default_remote_invocation_info}
            job_id = self._batch.submit_job(**params)["jobId"]
            context.log.info(f"[pipes] AWS Batch job {params['jobName']} submitted: {job_id}")
            try:
                job = self._wait_for_job(job_id)
            except dg.DagsterExecutionInterruptedError:
                context.log.warning(f"[pipes] step interrupted: terminating Batch job {job_id}")
                self._batch.terminate_job(jobId=job_id, reason="Dagster step was interrupted")
                raise
            if job["status"] != "SUCCEEDED":
                container = job.get("container") or {}
                raise GenerationError(
                    f"AWS Batch job {job.get('jobName', job_id)} ({job_id}) {job['status']}: "
                    f"{job.get('statusReason', 'no reason given')}"
                    f"; container exit code {container.get('exitCode')}"
                    f" ({container.get('reason', 'no container reason')})"
                )
        region = self._batch.meta.region_name
        url = f"https://{region}.console.aws.amazon.com/batch/home?region={region}#jobs/detail/{job_id}"
        return dg.PipesClientCompletedInvocation(
            session, metadata={"AWS Batch job": dg.MetadataValue.url(url)}
        )

    def _wait_for_job(self, job_id: str) -> dict[str, Any]:
        while True:
            jobs = self._batch.describe_jobs(jobs=[job_id])["jobs"]
            if not jobs:
                raise GenerationError(f"AWS Batch does not know job {job_id}")
            if jobs[0]["status"] in BATCH_DONE:
                return dict(jobs[0])
            _wait(self._stop, self._poll_interval_s)
