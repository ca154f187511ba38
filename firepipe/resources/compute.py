"""Generator compute: where the generator entry point runs, always through Dagster Pipes.

A run's partitions reach the compute together (`generate_all`) and run side by side:
`LocalCompute` starts `python -m firepipe.services.generate` in subprocesses, up to one per
core (firepipe.lib.pipes_subprocesses); `BatchCompute` submits it as AWS Batch jobs on a CPU or a
GPU queue, with the Pipes context and messages in S3 (firepipe.lib.pipes_batch). Both wait from
the step's own thread, stop the others on the first failure or an interrupt, and return what
the entry point reported (`GenerationReport`), so the asset does not know where it ran. A
`GenerationProgress` the caller passes in keeps, as it happens, when each request started and
what each finished one reported: the caller reads it also after a failure or an interrupt.
"""

import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from pydantic import Field

from firepipe.core.simulation.simulator import GenerationSpec
from firepipe.lib.fan_out import K, Progress
from firepipe.lib.pipes_batch import BatchJob, PipesBatchClient
from firepipe.lib.pipes_subprocesses import available_cores, run_side_by_side
from firepipe.services import generate as entry

GENERATOR_COMMAND = ("python", "-m", "firepipe.services.generate")
# The array backend a GPU run uses when the request names a CPU one (issue 3: CuPy on a GPU).
GPU_BACKEND = "cupy"
CPU_BACKENDS = frozenset({"numpy", "array_api_strict"})


class GenerationError(RuntimeError):
    """The generator finished without reporting what it wrote."""


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

    @classmethod
    def of(cls, run: dg.PipesSession | dg.PipesClientCompletedInvocation) -> "GenerationReport":
        """What a finished session or invocation of the entry point reported."""
        return cls.from_messages(run.get_custom_messages())


# When each request of a run started (its process or job; UTC) and what each finished one
# reported, by the caller's key.
GenerationProgress = Progress[K, GenerationReport]


def resolve_backend(backend: str, use_gpu: bool) -> str:
    """The array backend to run: a GPU run replaces a CPU-only backend by CuPy."""
    return GPU_BACKEND if use_gpu and backend in CPU_BACKENDS else backend


class GeneratorCompute(dg.ConfigurableResource, ABC):
    """Runs the generator entry point through Dagster Pipes, one run's requests together."""

    use_gpu: bool = False

    @abstractmethod
    def generate_all(
        self,
        context: dg.AssetExecutionContext,
        requests: Mapping[K, GenerationRequest],
        progress: GenerationProgress[K] | None = None,
    ) -> dict[K, GenerationReport]:
        """Run every request, side by side up to the compute's `max_concurrent`, from the
        calling thread (the step's, where Dagster delivers an interrupt); the first failure or
        an interrupt stops the others. What each reported, by key; `progress` gets each start
        and report as it happens."""

    def _backend(self, request: GenerationRequest) -> tuple[bool, str]:
        use_gpu = self.use_gpu if request.use_gpu is None else request.use_gpu
        return use_gpu, resolve_backend(request.backend, use_gpu)


class LocalCompute(GeneratorCompute):
    """The entry point in subprocesses of the step, with this interpreter."""

    max_concurrent: int | None = Field(
        default=None,
        ge=1,
        description="Generator processes at once (default: one per core); the cores are shared "
        "out among them as generator threads.",
    )

    def generate_all(
        self,
        context: dg.AssetExecutionContext,
        requests: Mapping[K, GenerationRequest],
        progress: GenerationProgress[K] | None = None,
    ) -> dict[K, GenerationReport]:
        cores = available_cores()
        slots = max(min(self.max_concurrent or cores, len(requests)), 1)
        # At make run's size a process is mostly its start (interpreter, imports); at scale each
        # one's chunks run on threads, and processes x threads within the cores avoids
        # oversubscribing them (and holding more chunks in memory than threads can use).
        workers = max(cores // slots, 1)
        extras = {
            key: {**request.extras(self._backend(request)[1]), entry.EXTRA_WORKERS: workers}
            for key, request in requests.items()
        }
        command = [sys.executable, *GENERATOR_COMMAND[1:]]
        return run_side_by_side(context, command, extras, slots, GenerationReport.of, progress)


class BatchCompute(GeneratorCompute):
    """The entry point as AWS Batch jobs; Pipes context and messages through S3."""

    # A run's partitions are submitted together; the queue's compute environment caps what
    # really runs at once.
    max_concurrent: int = Field(
        default=16, ge=1, description="Batch jobs of one run in flight at once."
    )

    region: str
    job_definition: str = Field(description="Batch job definition whose image has firepipe")
    gpu_job_definition: str | None = Field(
        default=None,
        description="The job definition of GPU jobs (the CUDA image), when it is not "
        "job_definition's: a definition names one image, and the CPU image has no CUDA.",
    )
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

    def generate_all(
        self,
        context: dg.AssetExecutionContext,
        requests: Mapping[K, GenerationRequest],
        progress: GenerationProgress[K] | None = None,
    ) -> dict[K, GenerationReport]:
        batch, s3 = self._clients()
        client = PipesBatchClient(
            batch,
            s3,
            bucket=self.pipes_bucket,
            prefix=self.pipes_prefix,
            poll_interval_s=self.poll_interval_s,
            message_interval_s=self.message_interval_s,
            max_concurrent=self.max_concurrent,
        )
        jobs = {key: self._job(context, request) for key, request in requests.items()}
        return client.run_all(
            context=context, jobs=jobs, result=GenerationReport.of, progress=progress
        )

    def _job(self, context: dg.AssetExecutionContext, request: GenerationRequest) -> BatchJob:
        use_gpu, backend = self._backend(request)
        overrides: dict[str, Any] = {"command": list(GENERATOR_COMMAND)}
        if use_gpu:
            overrides["resourceRequirements"] = [{"type": "GPU", "value": "1"}]
        return BatchJob(
            submit_job_params={
                "jobName": f"firepipe-generate-{context.run.run_id[:8]}-seed-{request.spec.seed}",
                "jobQueue": self.gpu_job_queue if use_gpu else self.cpu_job_queue,
                "jobDefinition": (
                    self.gpu_job_definition or self.job_definition
                    if use_gpu
                    else self.job_definition
                ),
                "containerOverrides": overrides,
            },
            extras={**request.extras(backend), entry.EXTRA_WORKERS: self.workers},
        )
