"""Killed runs do not stall the ingestion sensors: a `dagster job execute` and a launched run,
each SIGKILLed while its step waits on a gate file, against an instance with firepipe's own
config; the sensors wait on each while it lives and ask for the next attempt once it is dead."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType
from dagster._core.storage.tags import GRPC_INFO_TAG

from firepipe import settings
from firepipe.defs.ingestion.sensors import (
    EXTRACTION_AFTER_TAG,
    LANDING_AFTER_TAG,
    field_warehouse_sensor,
    landing_sensor,
)
from firepipe.lib.field_seed import append_field_rows
from firepipe.resources.landing import LocalLandingZone
from firepipe.resources.warehouse import DuckDBWarehouseSource
from firepipe.resources.watermarks import SqliteWatermarkStore
from firepipe_tests.core.ingestion.test_extraction import raw_rows

pytestmark = pytest.mark.slow

# A job whose one step waits until the test drops `release` beside `started`; the deadline
# keeps a step orphaned by a failed test from outliving it by long.
BLOCKING_JOB = """
import os, time
from pathlib import Path
import dagster as dg

@dg.op
def wait_for_release() -> None:
    gate = Path(os.environ["GATE_DIR"])
    (gate / "started").write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not (gate / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)

@dg.job
def blocking():
    wait_for_release()
"""
# `dagster job launch` hands the run to the run coordinator; the default (queued) one leaves it
# for the daemon, whose dequeuer calls the same instance.launch_run that this one calls at once.
LAUNCH_AT_ONCE = """
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
"""
START_TIMEOUT_S = 60
DEATH_TIMEOUT_S = 30


@contextmanager
def blocking_run(
    tmp_path: Path, command: str, tags: dict[str, str]
) -> Iterator[tuple[dg.DagsterInstance, subprocess.Popen[bytes]]]:
    """`dagster job <command>` of the blocking job in its own session, until its step started;
    yields the instance and the CLI process, and kills what is left of the session after."""
    instance_dir = settings.ensure_dagster_home(settings.LocalPaths(home=tmp_path / "home"))
    if command == "launch":
        with (instance_dir / "dagster.yaml").open("a") as config:
            config.write(LAUNCH_AT_ONCE)
    (tmp_path / "blocking.py").write_text(BLOCKING_JOB)
    env = {**os.environ, "DAGSTER_HOME": str(instance_dir), "GATE_DIR": str(tmp_path)}
    dagster = Path(sys.executable).parent / "dagster"
    argv = [dagster, "job", command, "-f", "blocking.py", "-j", "blocking"]
    log = tmp_path / "dagster.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [*argv, "--tags", json.dumps(tags)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (tmp_path / "started").exists():
            # `launch` exits once the run is launched; its code server and run worker go on.
            assert process.poll() in (None, 0), log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        with dg.DagsterInstance.from_config(str(instance_dir)) as instance:
            yield instance, process
    finally:
        (tmp_path / "release").touch()
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def eventually_asks(tick: Callable[[], dg.RunRequest | dg.SkipReason]) -> dg.RunRequest:
    deadline = time.monotonic() + DEATH_TIMEOUT_S
    while not isinstance(answer := tick(), dg.RunRequest):
        assert time.monotonic() < deadline, answer.skip_message
        time.sleep(0.2)
    return answer


def assert_failed_as_gone(instance: dg.DagsterInstance, run_id: str) -> None:
    run = instance.get_run_by_id(run_id)
    assert run.status is dg.DagsterRunStatus.FAILURE
    assert run.tags["dagster/failure_reason"] == "UNEXPECTED_TERMINATION"
    [failure] = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_FAILURE).records
    assert "run worker gone" in failure.event_log_entry.dagster_event.message


def test_a_killed_dagster_job_execute_stops_stalling_the_landing_sensor(tmp_path: Path) -> None:
    zone = LocalLandingZone(root=str(tmp_path / "landing"), settle_s=0.0)
    zone.drop("a.csv", b"device_id,ts\nd1,2026-11-01T08:00:00Z\n")
    with blocking_run(tmp_path, "execute", {LANDING_AFTER_TAG: "start"}) as (instance, cli):

        def tick() -> dg.RunRequest | dg.SkipReason:
            context = dg.build_sensor_context(instance=instance, resources={"landing_zone": zone})
            return landing_sensor(context)

        [run] = instance.get_runs()
        assert tick().skip_message == f"landing already running: {run.run_id}"
        # The run worker (the CLI process itself) dies; its step process goes on waiting.
        cli.kill()
        cli.wait()  # as its shell would
        assert "already running" in tick().skip_message
        assert instance.get_run_by_id(run.run_id).status is dg.DagsterRunStatus.STARTED

        (tmp_path / "release").touch()  # the step ends; no process of the run is left
        assert eventually_asks(tick).run_key == "landing after start attempt 2"
        assert_failed_as_gone(instance, run.run_id)


@pytest.fixture
def warehouse(tmp_path: Path) -> DuckDBWarehouseSource:
    path = str(tmp_path / "field.duckdb")
    append_field_rows(path, "field_readings", raw_rows(5))
    return DuckDBWarehouseSource(path=path, table="field_readings")


def test_a_launched_run_killed_with_its_code_server_stops_stalling_the_warehouse_sensor(
    tmp_path: Path, warehouse: DuckDBWarehouseSource
) -> None:
    watermarks = SqliteWatermarkStore(path=str(tmp_path / "watermarks.db"))
    with blocking_run(tmp_path, "launch", {EXTRACTION_AFTER_TAG: "start"}) as (instance, cli):

        def tick() -> dg.RunRequest | dg.SkipReason:
            resources = {"warehouse_source": warehouse, "extraction_watermarks": watermarks}
            context = dg.build_sensor_context(instance=instance, resources=resources)
            return field_warehouse_sensor(context)

        [run] = instance.get_runs()
        assert GRPC_INFO_TAG in run.tags  # launched through a code server
        assert "already running" in tick().skip_message
        # The CLI, its code server and the run worker the server started, all at once (an OOM
        # kill of the tree, a reboot): no one is left to report the run's end.
        os.killpg(cli.pid, signal.SIGKILL)
        cli.wait()
        assert eventually_asks(tick).run_key == "field_readings after start attempt 2"
        assert_failed_as_gone(instance, run.run_id)
