"""AWS Batch jobs under Dagster Pipes, with their context and messages in S3.

dagster-aws has no Batch Pipes client; this one follows its ECS one. `run_all` takes a run's
jobs together: it submits them up to `max_concurrent` in flight (more wait for a slot), each in
its own Pipes session under its own S3 key prefix, and polls every job in flight with one
DescribeJobs call per 100 jobs (the API's limit) from the calling thread, where Dagster delivers
an interrupt. The first failed job, or an interrupt, terminates the others before it raises.
What started when (submitted, then as Batch reports it running), and what finished, is kept in a
`Progress` the caller may hold (firepipe.lib.fan_out).
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic

import dagster as dg

from firepipe.lib import fan_out
from firepipe.lib.fan_out import K, Progress, R
from firepipe.lib.pipes_s3 import s3_pipes_channels

# AWS Batch job states after which nothing changes (AWS Batch API, DescribeJobs `status`).
BATCH_DONE = frozenset({"SUCCEEDED", "FAILED"})
# States in which a job's `startedAt` (when it went from STARTING to RUNNING) is real: the API
# model marks the field required, but a job that has not run yet has none.
BATCH_RAN = frozenset({"RUNNING", "SUCCEEDED", "FAILED"})
# DescribeJobs takes at most 100 job ids a call.
DESCRIBE_JOBS_MAX = 100
INTERRUPTED_REASON = "Dagster step was interrupted"
SIBLING_FAILED_REASON = "another job of the Dagster step failed"
STEP_FAILED_REASON = "Dagster step failed"


class BatchJobError(RuntimeError):
    """An AWS Batch job ended FAILED, or AWS Batch lost track of it."""


@dataclass(frozen=True)
class BatchJob:
    """One job to submit: SubmitJob's parameters and the Pipes extras of its session."""

    submit_job_params: Mapping[str, Any]
    extras: Mapping[str, Any] | None = None


@dataclass
class _Submitted(Generic[K]):
    key: K
    job_id: str
    name: str
    session: dg.PipesSession
    closing: ExitStack


def _close_together(sessions: Sequence[ExitStack]) -> None:
    """Close Pipes sessions at once: each S3 reader polls once a second until its job's closing
    message, and without one (a failed or terminated job) waits 10 s more for late messages."""
    if len(sessions) == 1:
        sessions[0].close()
    elif sessions:
        with ThreadPoolExecutor(len(sessions)) as pool:
            for closed in [pool.submit(s.close) for s in sessions]:
                closed.result()


def _failure(job: Mapping[str, Any]) -> BatchJobError:
    container = job.get("container") or {}
    return BatchJobError(
        f"AWS Batch job {job.get('jobName', job['jobId'])} ({job['jobId']}) {job['status']}: "
        f"{job.get('statusReason', 'no reason given')}"
        f"; container exit code {container.get('exitCode')}"
        f" ({container.get('reason', 'no container reason')})"
    )


class PipesBatchClient:
    """Runs AWS Batch jobs, each under a Pipes session whose context and messages live in S3."""

    def __init__(
        self,
        batch: Any,
        s3: Any,
        *,
        bucket: str,
        prefix: str = "",
        poll_interval_s: float = 10.0,
        message_interval_s: float = 10.0,
        max_concurrent: int = 16,
    ) -> None:
        fan_out.check_max_concurrent(max_concurrent)
        self._batch = batch
        self._s3 = s3
        self._bucket = bucket
        self._prefix = prefix
        self._poll_interval_s = poll_interval_s
        self._message_interval_s = message_interval_s
        self._max_concurrent = max_concurrent

    def run_all(
        self,
        *,
        context: dg.AssetExecutionContext,
        jobs: Mapping[K, BatchJob],
        result: Callable[[dg.PipesClientCompletedInvocation], R],
        progress: Progress[K, R] | None = None,
    ) -> dict[K, R]:
        """Run every job, up to `max_concurrent` at once; `result` of each one's completed
        invocation, in the order of `jobs`. `progress` records each start and result as they
        happen."""
        progress = Progress() if progress is None else progress
        pending = deque(jobs.items())
        in_flight: dict[str, _Submitted[K]] = {}
        try:
            while pending or in_flight:
                while fan_out.slot_free(pending, in_flight, self._max_concurrent):
                    submitted = self._submit(context, *pending.popleft())
                    in_flight[submitted.job_id] = submitted
                    progress.start(submitted.key)
                described = self._describe(list(in_flight))
                for job in described:
                    if job["status"] in BATCH_RAN and job.get("startedAt"):
                        running_since = datetime.fromtimestamp(job["startedAt"] / 1000, UTC)
                        progress.start(in_flight[job["jobId"]].key, running_since)
                ended = [job for job in described if job["status"] in BATCH_DONE]
                finished = [in_flight.pop(job["jobId"]) for job in ended]
                _close_together([s.closing for s in finished])
                # Every job that succeeded counts, also when one that ended with it failed.
                for job, submitted in zip(ended, finished, strict=True):
                    if job["status"] == "SUCCEEDED":
                        progress.finish(submitted.key, result(self._completed(submitted)))
                failed = [job for job in ended if job["status"] != "SUCCEEDED"]
                if failed:
                    raise _failure(failed[0])
                if in_flight and not fan_out.slot_free(pending, in_flight, self._max_concurrent):
                    fan_out.wait(self._poll_interval_s)
        except BaseException as error:
            self._terminate(context, list(in_flight.values()), error)
            raise
        return progress.results(jobs)

    def _submit(self, context: dg.AssetExecutionContext, key: K, job: BatchJob) -> _Submitted[K]:
        # A reader keeps per-session state (the launched and opened payloads): one per job.
        injector, reader = s3_pipes_channels(
            self._s3,
            bucket=self._bucket,
            prefix=self._prefix,
            message_interval_s=self._message_interval_s,
        )
        closing = ExitStack()
        session = closing.enter_context(
            dg.open_pipes_session(
                context=context,
                context_injector=injector,
                message_reader=reader,
                extras=dict(job.extras or {}),
            )
        )
        try:
            params = copy.deepcopy(dict(job.submit_job_params))
            overrides = params.setdefault("containerOverrides", {})
            environment = overrides.setdefault("environment", [])
            environment.extend(
                {"name": k, "value": v} for k, v in session.get_bootstrap_env_vars().items()
            )
            params["tags"] = {**params.get("tags", {}), **session.default_remote_invocation_info}
            job_id = self._batch.submit_job(**params)["jobId"]
        except BaseException:
            closing.close()
            raise
        context.log.info(f"[pipes] AWS Batch job {params['jobName']} submitted: {job_id}")
        return _Submitted(key, job_id, params["jobName"], session, closing)

    def _describe(self, job_ids: list[str]) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        for start in range(0, len(job_ids), DESCRIBE_JOBS_MAX):
            asked = job_ids[start : start + DESCRIBE_JOBS_MAX]
            jobs += self._batch.describe_jobs(jobs=asked)["jobs"]
        unknown = set(job_ids) - {j["jobId"] for j in jobs}
        if unknown:
            raise BatchJobError(f"AWS Batch does not know job(s) {', '.join(sorted(unknown))}")
        return jobs

    def _completed(self, submitted: _Submitted[K]) -> dg.PipesClientCompletedInvocation:
        region = self._batch.meta.region_name
        url = (
            f"https://{region}.console.aws.amazon.com/batch/home?region={region}"
            f"#jobs/detail/{submitted.job_id}"
        )
        return dg.PipesClientCompletedInvocation(
            submitted.session, metadata={"AWS Batch job": dg.MetadataValue.url(url)}
        )

    def _terminate(
        self,
        context: dg.AssetExecutionContext,
        in_flight: Sequence[_Submitted[K]],
        error: BaseException,
    ) -> None:
        """Terminate the jobs still in flight and close their sessions."""
        if isinstance(error, dg.DagsterExecutionInterruptedError | KeyboardInterrupt):
            reason = INTERRUPTED_REASON
        elif isinstance(error, BatchJobError):
            reason = SIBLING_FAILED_REASON
        else:
            reason = STEP_FAILED_REASON
        for submitted in in_flight:
            context.log.warning(
                f"[pipes] {reason}: terminating AWS Batch job {submitted.name} ({submitted.job_id})"
            )
            try:
                self._batch.terminate_job(jobId=submitted.job_id, reason=reason)
            except Exception as failed:  # the others still need terminating
                context.log.error(f"[pipes] could not terminate {submitted.job_id}: {failed}")
        _close_together([s.closing for s in in_flight])
