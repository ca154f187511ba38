"""The run-failure sensor, driven by a job that really fails on a real Dagster instance, and the
notification it builds."""

from pathlib import Path

import dagster as dg
import pytest

from firepipe.core.notifications import RUN_FAILURE_SOURCE, run_failure_notification
from firepipe.defs.notifications.sensors import run_failure_notifier
from firepipe.lib.aws_env import DAGSTER_UI_URL_VAR
from firepipe.resources.notifier import LocalNotifier


@dg.op
def read_sensor() -> int:
    raise RuntimeError("sensor reading out of range: 9000 C")


@dg.op
def score(reading: int) -> int:
    return reading


@dg.op
def healthy() -> int:
    return 1


@dg.job
def detector_job() -> None:
    score(read_sensor())
    healthy()


def failed_run_context(
    instance: dg.DagsterInstance, outbox: LocalNotifier
) -> dg.RunStatusSensorContext:
    result = detector_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    return dg.build_run_status_sensor_context(
        sensor_name="run_failure_notifier",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"notifier": outbox},
    )


def test_a_failed_run_is_notified_once_in_the_outbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DAGSTER_UI_URL_VAR, "http://127.0.0.1:3000/")
    outbox = LocalNotifier(path=str(tmp_path / "notifications.db"))
    with dg.instance_for_test() as instance:
        context = failed_run_context(instance, outbox)
        run_id = context.dagster_run.run_id
        run_failure_notifier(context)
        run_failure_notifier(context)  # a retried tick sees the same run again

    [record] = outbox.recent()
    n = record.notification
    assert n.dedup_key == run_id
    assert n.severity == "error"
    assert n.source == RUN_FAILURE_SOURCE
    assert n.subject == f"firepipe: job detector_job failed (run {run_id[:8]})"
    assert n.attributes == {"job": "detector_job", "run_id": run_id}
    assert n.body.splitlines() == [
        "Job detector_job failed.",
        f"Run: {run_id}",
        f"Open: http://127.0.0.1:3000/runs/{run_id}",
        "Failed steps: read_sensor",  # score was skipped, healthy succeeded: neither failed
        "Error: RuntimeError: sensor reading out of range: 9000 C",
    ]


def test_each_failed_run_is_its_own_notification(tmp_path: Path) -> None:
    outbox = LocalNotifier(path=str(tmp_path / "notifications.db"))
    instance = dg.DagsterInstance.ephemeral()
    first, second = failed_run_context(instance, outbox), failed_run_context(instance, outbox)
    run_failure_notifier(first)
    run_failure_notifier(second)

    keys = [r.notification.dedup_key for r in outbox.recent()]
    assert keys == [second.dagster_run.run_id, first.dagster_run.run_id]


def test_the_sensor_runs_by_default_in_the_code_location(firepipe_home: Path) -> None:
    from firepipe.definitions import defs

    sensor = defs().resolve_sensor_def("run_failure_notifier")
    assert sensor.default_status is dg.DefaultSensorStatus.RUNNING
    assert sensor.required_resource_keys == {"notifier"}


def test_notification_of_a_run_that_failed_outside_its_steps() -> None:
    n = run_failure_notification("end_to_end", "abcdef12-3456", None, [], ui_url=None)
    assert n.body.splitlines()[2:] == [
        "Open: /runs/abcdef12-3456",
        "Failed steps: none (the run failed outside its steps)",
        "Error: no error message recorded",
    ]
    long = run_failure_notification("j", "r", "x" * 5000, ["a", "b"]).body.splitlines()
    assert long[3] == "Failed steps: a, b"
    assert long[4] == "Error: " + "x" * 1997 + "..."
