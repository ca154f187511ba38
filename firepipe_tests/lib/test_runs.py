"""firepipe.lib.runs against firepipe's own instance config (SQLite in a temp folder), with the
pids a run records set by hand: a run is failed only when every process it ran in is gone on
this host, and a run it cannot judge is left as it is."""

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.dependency import NodeHandle
from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
from dagster._core.execution.plan.handle import StepHandle
from dagster._core.storage.tags import GRPC_INFO_TAG

from firepipe import settings
from firepipe.lib.runs import fail_if_worker_gone

JOB = "ingest"


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = settings.ensure_dagster_home(settings.LocalPaths(home=tmp_path))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def in_flight(
    instance: dg.DagsterInstance,
    worker: int | None,
    steps: tuple[int, ...] = (),
    tags: dict[str, str] | None = None,
) -> dg.DagsterRun:
    """A STARTED run whose worker (RUN_START) and step processes (STEP_START) had these pids."""
    run = instance.add_run(
        dg.DagsterRun(job_name=JOB, status=dg.DagsterRunStatus.STARTED, tags=tags or {})
    )
    if worker is not None:
        start = DagsterEvent(DagsterEventType.RUN_START.value, JOB, pid=worker)
        instance.report_dagster_event(start, run_id=run.run_id)
    for pid in steps:
        handle = StepHandle(NodeHandle("ingest_op", None))
        step = DagsterEvent(DagsterEventType.STEP_START.value, JOB, handle, pid=pid)
        instance.report_dagster_event(step, run_id=run.run_id)
    return instance.get_run_by_id(run.run_id)


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    [record] = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_FAILURE).records
    return record.event_log_entry.dagster_event.message


def test_a_run_whose_processes_are_gone_is_marked_failed_with_the_reason(
    instance: dg.DagsterInstance,
) -> None:
    worker, step = dead_pid(), dead_pid()
    run = in_flight(instance, worker, steps=(step,))
    reason = fail_if_worker_gone(instance, run)
    assert reason is not None
    assert f"({min(worker, step)}, {max(worker, step)})" in reason
    failed = instance.get_run_by_id(run.run_id)
    assert failed.status is dg.DagsterRunStatus.FAILURE
    assert failed.tags["dagster/failure_reason"] == "UNEXPECTED_TERMINATION"
    assert failure_message(instance, run.run_id) == reason
    assert fail_if_worker_gone(instance, failed) is None  # once


def test_a_live_run_is_left_alone(instance: dg.DagsterInstance) -> None:
    run = in_flight(instance, os.getpid())
    assert fail_if_worker_gone(instance, run) is None
    assert instance.get_run_by_id(run.run_id).status is dg.DagsterRunStatus.STARTED


def test_a_step_process_that_outlived_its_worker_keeps_the_run(
    instance: dg.DagsterInstance,
) -> None:
    # A multiprocess step goes on after its worker was killed; failing the run now would let a
    # sensor start a second attempt beside it.
    run = in_flight(instance, dead_pid(), steps=(dead_pid(), os.getpid()))
    assert fail_if_worker_gone(instance, run) is None
    assert instance.get_run_by_id(run.run_id).status is dg.DagsterRunStatus.STARTED


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states in /proc")
def test_a_killed_process_its_parent_has_not_reaped_counts_as_gone(
    instance: dg.DagsterInstance,
) -> None:
    child = subprocess.Popen(["sleep", "60"])
    try:
        child.kill()
        deadline = time.monotonic() + 10
        while " Z " not in Path(f"/proc/{child.pid}/stat").read_text():
            assert time.monotonic() < deadline, "the killed child never became a zombie"
            time.sleep(0.01)
        run = in_flight(instance, child.pid)
        assert fail_if_worker_gone(instance, run) is not None
    finally:
        child.wait()


def test_runs_it_cannot_judge_are_left_alone(instance: dg.DagsterInstance) -> None:
    no_pid_yet = in_flight(instance, None)
    elsewhere = in_flight(
        instance, dead_pid(), tags={GRPC_INFO_TAG: json.dumps({"host": "10.0.0.7", "port": 4000})}
    )
    ended_meanwhile = in_flight(instance, dead_pid())
    instance.report_run_failed(ended_meanwhile, "ended by its own worker")
    for run in (no_pid_yet, elsewhere, ended_meanwhile):  # the last one as read before it ended
        assert fail_if_worker_gone(instance, run) is None
    assert instance.get_run_by_id(elsewhere.run_id).status is dg.DagsterRunStatus.STARTED
    assert failure_message(instance, ended_meanwhile.run_id) == "ended by its own worker"


def test_a_launched_run_still_starting_is_judged_by_the_worker_its_code_server_started(
    instance: dg.DagsterInstance,
) -> None:
    local_server = {GRPC_INFO_TAG: json.dumps({"host": "localhost", "socket": "/tmp/grpc.sock"})}
    run = instance.add_run(
        dg.DagsterRun(job_name=JOB, status=dg.DagsterRunStatus.STARTING, tags=local_server)
    )
    assert fail_if_worker_gone(instance, run) is None  # no worker yet: the start timeout's job
    worker = dead_pid()
    instance.report_engine_event(
        f"Started process for run (pid: {worker}).", run, EngineEventData.in_process(worker)
    )
    reason = fail_if_worker_gone(instance, run)
    assert reason is not None
    assert str(worker) in reason
    assert "STARTING" in reason
    assert instance.get_run_by_id(run.run_id).status is dg.DagsterRunStatus.FAILURE
